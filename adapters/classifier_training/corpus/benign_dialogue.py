"""Benign conversational and multilingual text: chit-chat, service dialogue, UI messages.

Sources and licences:

* chitchat-dataset 0.9.0 (MIT, BYU PCC lab): crowd-worker chat, one text per speaker turn
  (consecutive messages joined); a conversation is one group (small_talk).
* chatterbot-corpus 1.3.3 (BSD-3-Clause classifier, no licence file): YAML dialogue snippets in
  28 languages; every utterance of at least 8 characters, the kind from the file's category
  (mostly small_talk). Its forks (landa-, sugaroid-, chatterbot-corpus-py) hold the same text.
* africanjokes 1.2.1 (MIT): the proverbs only; the jokes read as machine-written (small_talk).
* convlab 3.0.1 sdist (Apache-2.0; MultiWOZ MIT, CrossWOZ Apache-2.0): real user and system
  utterances of booking dialogues, shipped as NLG templates; only those without slot
  placeholders (customer_support, en and zh).
* django-helpdesk 2.6.1 (BSD-3-Clause): ticket notification e-mails in 10 languages, template
  variables rendered as ``[field]``; a template's translations are one group.
* zaragoza-construction-faq 1.2.1 (CC-BY-4.0): a firm's customer FAQ in Swedish and English; an
  entry's question and answer in both languages are one group.
* django 5.2.19 (BSD-3-Clause): human translations of UI and validation messages in 96 locales
  (multilingual); the translations of one message are one group.
* spacy 3.8.18 (MIT): example sentences of 67 languages (multilingual; ``mul`` for ``xx``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator

from safeguards.adapters.classifier_training.corpus.records import (
    Record,
    benign,
    extractor,
    near_key,
)
from safeguards.adapters.classifier_training.corpus.textutil import Seen, ws
from safeguards.adapters.classifier_training.corpus.wheels import Archive


@extractor
def chitchat(a: Archive) -> Iterable[Record | None]:
    data, seen = a.json("chitchat_dataset/dataset.json"), Seen()
    for cid in sorted(data):
        conv, group = data[cid], f"chitchat:{cid}"
        p = conv.get("prompt")
        if isinstance(p, str) and len(p) >= 20 and seen.new(p):
            yield benign(ws(p), "small_talk", "chitchat-dataset:chitchat", lang="en", group=group)
        for turn in conv.get("messages") or []:
            t = ws(" ".join(m.get("text", "") for m in turn if isinstance(m, dict)))
            if len(t) >= 20 and seen.new(t):
                yield benign(t, "small_talk", "chitchat-dataset:chitchat", lang="en", group=group)


_CHATTERBOT_LANG = {
    "english": "en", "italian": "it", "japanese": "ja", "korean": "ko", "ukrainian": "uk",
    "chinese": "zh", "persian": "fa", "traditionalchinese": "zh-tw", "dutch": "nl",
    "portuguese": "pt", "spanish": "es", "german": "de", "turkish": "tr", "bengali": "bn",
    "french": "fr", "swedish": "sv", "indonesian": "id", "hebrew": "he", "hindi": "hi",
    "oriya": "or", "russian": "ru", "marathi": "mr", "tamil": "ta", "hinglish": "hi-latn",
    "telugu": "te", "thai": "th", "urdu": "ur", "yoruba": "yo",
}
_CHATTERBOT_KIND = tuple((kind, re.compile(rx)) for kind, rx in (
    ("customer_support", r"tech.?support|soporte|支持"),
    ("code_tech", r"coding|computer|komputer|computador|ordinateur|computadora|컴퓨터|コンピュータ|"
     r"计算机|電腦|компьютер|комп'ютер|bilgisayar|rechner|कंप्यूटर"),
    ("medical", r"health|salud|saúde|salute|gesundheit|santé|sağlık|健康|건강|здоров|بهداشت|सेहत|"
     r"स्वास्थ्य|kesehatan|gezondheid|hälsa"),
    ("history", r"histor|storia|geschichte|tarih|历史|歷史|歴史|역사|істор|истор|تاریخ|इतिहास|"
     r"sejarah|geschiedenis"),
    ("policy_opinion", r"politic|política|politik|politique|siyaset|政治|정치|політик|политик|"
     r"سیاست|राजनीति|politiek"),
))


@extractor
def chatterbot(a: Archive) -> Iterable[Record | None]:
    import yaml

    for name in a.names(r"chatterbot_corpus/data/[^/]+/[^/]+\.ya?ml$"):
        folder, stem = name.split("/")[-2], name.split("/")[-1].rsplit(".", 1)[0]
        try:
            data = a.yaml(name) or {}
        except yaml.YAMLError:
            continue
        label = (stem + " " + " ".join(str(c) for c in data.get("categories") or [])).lower()
        kind = next((k for k, rx in _CHATTERBOT_KIND if rx.search(label)), "small_talk")
        seen = Seen()
        for i, conv in enumerate(data.get("conversations") or []):
            for t in conv if isinstance(conv, list) else [conv]:
                if not isinstance(t, str):
                    continue
                t = ws(t.replace("\n", " "))
                if len(t) >= 8 and seen.new(t):
                    yield benign(t, kind, "chatterbot-corpus:corpus",
                                 lang=_CHATTERBOT_LANG.get(folder, folder), group=f"{name}:{i}")


@extractor
def african_proverbs(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for p in a.json("africanjokes/data/proverbs.json").get("proverbs", []):
        t = ws(p.get("text", ""))
        if len(t) >= 15 and seen.new(t):
            yield benign(t, "small_talk", "africanjokes:proverbs", lang="en")


def _detok(s: str) -> str:
    s = re.sub(r"\s+([.,!?;:%)])", r"\1", s)
    s = re.sub(r"([(])\s+", r"\1", s)
    s = re.sub(r"\s+'\s*(m|s|re|ve|ll|d|t)\b", r"'\1", s)
    s = re.sub(r"\b(ca|wo|do|does|did|is|are|was|were|have|has|had|could|would|should|need)"
               r"\s+n't", r"\1n't", s)
    return ws(s)


def _strings(x: object) -> Iterator[str]:
    """Every string in a JSON value, depth first, keys in sorted order."""
    stack = [x]
    while stack:
        y = stack.pop()
        if isinstance(y, dict):
            stack.extend(y[k] for k in sorted(y, reverse=True))
        elif isinstance(y, list):
            stack.extend(reversed(y))
        elif isinstance(y, str):
            yield y


@extractor
def convlab_utterances(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for ds, lang in (("multiwoz", "en"), ("camrest", "en"), ("crosswoz", "zh")):
        for side in ("user", "system"):
            for name in a.names(rf"convlab/nlg/template/{ds}/auto_{side}_template_nlg\.json$"):
                for s in _strings(a.json(name)):
                    if re.search(r"#\S+#|[\[\]{}$]|\bvalue_", s):  # slot placeholders
                        continue
                    s = _detok(s) if lang == "en" else ws(s)
                    if len(s) >= (25 if lang == "en" else 10) and seen.new(s):
                        yield benign(s, "customer_support", "convlab:nlg_templates", lang=lang)


def _render_django_template(t: str) -> str:
    t = re.sub(r"\{%.*?%\}", "", t, flags=re.S)
    t = re.sub(r"\{\{\s*([\w.]+)(\|[^}]*)?\s*\}\}",
               lambda m: "[" + m.group(1).split(".")[-1] + "]", t)
    t = re.sub(r"[ \t]+\n", "\n", t.replace("\r\n", "\n"))
    return re.sub(r"\n{3,}", "\n\n", t).strip()


@extractor
def helpdesk_emails(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for rec in a.json("helpdesk/fixtures/emailtemplate.json"):
        f = rec.get("fields", {})
        t = _render_django_template(f.get("plain_text") or "")
        if len(t) >= 60 and seen.new(t):
            yield benign(t, "customer_support", "django-helpdesk:email_templates",
                         lang=(f.get("locale") or "en").lower(),
                         group=f"helpdesk:{f.get('template_name')}")


@extractor
def zaragoza_faq(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for name, lang in (("zaragoza_construction_faq/data/faq.json", "sv"),
                       ("zaragoza_construction_faq/data/faq-en.json", "en")):
        for q in a.json(name).get("questions", []):
            for field in ("q", "a"):
                t = ws(q.get(field) or "")
                if len(t) >= 15 and seen.new(t):
                    yield benign(t, "customer_support", "zaragoza-construction-faq:faq",
                                 lang=lang, group=f"zaragoza:{q.get('id')}")


def po_messages(text: str) -> Iterator[tuple[str, str]]:
    """(msgid, msgstr) of a .po file, plural forms included, the header entry skipped."""
    msgid, cur, key = "", "", None
    for line in [*text.splitlines(), ""]:
        line = line.strip()
        if line.startswith("msgid") and not line.startswith("msgid_plural"):
            if key == "msgstr" and msgid and cur:
                yield msgid, cur
            key, cur = "msgid", ""
            m = re.match(r'msgid\s+"(.*)"$', line)
            msgid = m.group(1) if m else ""
        elif line.startswith("msgid_plural"):
            key = "msgid_plural"
        elif line.startswith("msgstr"):
            if key == "msgstr" and msgid and cur:
                yield msgid, cur
            key = "msgstr"
            m = re.match(r'msgstr(\[\d+\])?\s+"(.*)"$', line)
            cur = m.group(2) if m else ""
        elif line.startswith('"'):
            if key == "msgid":
                msgid += line[1:-1]
            elif key == "msgstr":
                cur += line[1:-1]
        else:
            if key == "msgstr" and msgid and cur:
                yield msgid, cur
            key, cur = None, ""


def _po_unescape(s: str) -> str:
    return s.replace('\\"', '"').replace("\\n", "\n").replace("\\t", " ").replace("\\\\", "\\")


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


@extractor
def django_locale(a: Archive) -> Iterable[Record | None]:
    for name in a.names(r"/locale/[^/]+/LC_MESSAGES/django\.po$"):
        loc = name.split("/locale/")[1].split("/")[0]
        if loc.startswith("en"):
            continue
        seen = Seen()
        for msgid, msgstr in po_messages(a.text(name)):
            s = ws(_po_unescape(msgstr))
            if not s:
                continue
            # at least 5 words (12 characters for CJK): single UI labels teach nothing
            cjk = _CJK.search(s) is not None
            long_enough = len(s) >= 12 if cjk else len(s.split()) >= 5 and len(s) >= 25
            if long_enough and seen.new(s):
                yield benign(s, "multilingual", "django:locale",
                             lang=loc.lower().replace("_", "-"),
                             group=near_key(_po_unescape(msgid)))


def django_translation_pairs(a: Archive, *, per_locale: int = 300) -> Iterator[tuple[str, str]]:
    """(English, translation) pairs of Django's UI messages: parallel text that keeps the
    fine-tuned encoder's languages aligned (a request means the same in every language)."""
    for name in a.names(r"/locale/[^/]+/LC_MESSAGES/django\.po$"):
        if name.split("/locale/")[1].startswith("en"):
            continue
        n = 0
        for msgid, msgstr in po_messages(a.text(name)):
            en, other = ws(_po_unescape(msgid)), ws(_po_unescape(msgstr))
            if len(en.split()) >= 4 and other and other != en and n < per_locale:
                n += 1
                yield en, other


@extractor
def spacy_examples(a: Archive) -> Iterable[Record | None]:
    for name in a.names(r"^spacy/lang/[^/]+/examples\.py$"):
        lang = name.split("/")[2]
        for node in ast.walk(ast.parse(a.text(name))):
            if not (isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "sentences" for t in node.targets)):
                continue
            if isinstance(node.value, ast.List | ast.Tuple):
                for el in node.value.elts:
                    if (isinstance(el, ast.Constant) and isinstance(el.value, str)
                            and len(el.value.strip()) >= 8):
                        yield benign(ws(el.value), "multilingual", "spacy:examples",
                                     lang="mul" if lang == "xx" else lang)
