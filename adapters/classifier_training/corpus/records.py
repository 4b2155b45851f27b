"""One labelled text of the corpus, its vocabularies, and the text heuristics the extractors share.

The heuristics come from the exploratory extractors this package replaces (harmful, benign and
request collections): a keyword rule for the harm category of rows whose dataset gives none, a
mapping from dataset category names to ours, a script + stop-word language guesser, and the keys
used to find duplicates (exact after normalisation, and "near": the same alphanumeric tokens).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import wraps
from typing import Final, TypeVar

from safeguards.adapters.classifier_training.corpus import filters

LABELS: Final = ("harmful", "jailbreak", "benign", "response_harmful", "response_benign")
CATEGORIES: Final = ("jailbreak", "cyber", "weapons", "violence", "self_harm", "hate", "sexual",
                     "illicit", "disinformation")
BENIGN_KINDS: Final = ("code_tech", "system_prompt", "medical", "dark_fiction", "history",
                       "security", "policy_opinion", "customer_support", "small_talk",
                       "roleplay_creative", "multilingual", "general_request",
                       "general_knowledge", "hard_negative")
# the kind a non-benign label always has
LABEL_KIND: Final = {"harmful": "harmful", "jailbreak": "jailbreak",
                     "response_harmful": "response", "response_benign": "response"}
GUESS: Final = "?"  # category argument meaning "use the keyword heuristic"


@dataclass(frozen=True, slots=True)
class Record:
    text: str
    label: str  # one of LABELS
    category: str | None  # harmful / jailbreak / response_harmful only; None when unknown
    kind: str  # a BENIGN_KINDS entry for benign rows, else LABEL_KIND[label]
    lang: str  # ISO 639-1, or the source's own tag ("zh-tw", "mul", "hi-latn")
    source: str  # "<package>:<short source name>"
    group: str  # near-duplicates and rows that belong together (conversation, objective)
    prompt: str | None = None  # for responses: the request answered
    # further categories of a multi-label row (a harmful request inside a jailbreak frame)
    extra_categories: tuple[str, ...] = ()
    # categories this row says nothing about: training neither rewards nor penalises them (a
    # harmful request in a jailbreak frame is no evidence that the frame is benign)
    unlabelled_categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # a wrong label or kind would silently poison training: fail at the extractor instead
        if not self.text:
            raise ValueError(f"empty text from {self.source}")
        if self.label not in LABELS:
            raise ValueError(f"unknown label {self.label!r} from {self.source}")
        if self.label == "benign":
            ok_kind = self.kind in BENIGN_KINDS
        else:
            ok_kind = self.kind == LABEL_KIND[self.label]
        if not ok_kind:
            raise ValueError(f"kind {self.kind!r} does not fit label {self.label!r}")
        if self.category is not None and (
            self.category not in CATEGORIES
            or self.label not in ("harmful", "jailbreak", "response_harmful")
        ):
            raise ValueError(f"category {self.category!r} on a {self.label} row")
        object.__setattr__(self, "extra_categories", tuple(self.extra_categories))
        if any(c not in CATEGORIES for c in self.extra_categories) or (
                self.extra_categories and self.category is None):
            raise ValueError(f"extra categories {self.extra_categories!r} on a {self.label} row")
        object.__setattr__(self, "unlabelled_categories", tuple(self.unlabelled_categories))
        if any(c not in CATEGORIES for c in self.unlabelled_categories) or (
                self.label == "benign" and self.unlabelled_categories) or (
                {self.category, *self.extra_categories} & set(self.unlabelled_categories)):
            raise ValueError(
                f"unlabelled categories {self.unlabelled_categories!r} on a {self.label} row")

    def as_dict(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {
            "text": self.text, "label": self.label, "category": self.category,
            "kind": self.kind, "lang": self.lang, "source": self.source, "group": self.group,
            "prompt": self.prompt}
        if self.extra_categories:
            out["extra_categories"] = list(self.extra_categories)  # type: ignore[assignment]
        if self.unlabelled_categories:
            out["unlabelled_categories"] = list(  # type: ignore[assignment]
                self.unlabelled_categories)
        return out


# --- duplicate keys ---------------------------------------------------------------------------

PLACEHOLDER: Final = "{HARMFUL_REQUEST}"  # where a jailbreak template takes the request
_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def norm_text(text: str) -> str:
    """Case-folded, NFKC, whitespace collapsed: equal for texts that differ only in layout."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def near_text(text: str) -> str:
    """The alphanumeric tokens only (punctuation, markup and the placeholder dropped)."""
    t = unicodedata.normalize("NFKC", text).lower().replace(PLACEHOLDER.lower(), " ")
    return " ".join(_WORD.findall(t))


def exact_key(text: str) -> str:
    return hashlib.sha1(norm_text(text).encode()).hexdigest()[:16]


def near_key(text: str) -> str:
    """Group id shared by copies of one text across packages (e.g. AdvBench in three wheels)."""
    return "t:" + hashlib.sha1(near_text(text).encode()).hexdigest()[:16]


# --- language ---------------------------------------------------------------------------------

_SCRIPTS: Final = tuple((re.compile(rx), lang) for rx, lang in (
    (r"[\u0980-\u09FF]", "bn"), (r"[\u0900-\u097F]", "hi"), (r"[\u3040-\u30FF]", "ja"),
    (r"[\uAC00-\uD7AF]", "ko"), (r"[\u4E00-\u9FFF]", "zh"), (r"[\u0600-\u06FF]", "ar"),
    (r"[\u0400-\u04FF]", "ru"), (r"[\u0590-\u05FF]", "he"), (r"[\u0E00-\u0E7F]", "th"),
    (r"[\u0370-\u03FF]", "el"),
))
_STOP: Final = tuple((lang, re.compile(rx)) for lang, rx in (
    ("de", r"\b(und|der|die|das|nicht|ist|ich|wie|ein|eine|mit|für|sie)\b"),
    ("fr", r"\b(le|la|les|et|est|une|des|pour|vous|comment|pas|avec|je)\b"),
    ("es", r"\b(el|los|las|y|es|una|para|cómo|como|que|con|por|del)\b"),
    ("pt", r"\b(o|os|as|e|é|uma|para|como|que|com|não|você|do|da)\b"),
    ("it", r"\b(il|gli|e|è|una|per|come|che|con|non|sono|della)\b"),
    ("tr", r"\b(ve|bir|bu|için|ile|değil|nasıl|sen|ben|olarak)\b|[ğış]"),
    ("nl", r"\b(de|het|een|en|niet|is|ik|hoe|met|voor|van)\b"),
))
_EN = re.compile(r"\b(the|and|is|to|of|how|you|for|a|in|what|with|that)\b")
_LATIN = re.compile(r"[A-Za-z]")


def guess_lang(text: str) -> str:
    """ISO 639-1 guess from the script, else from stop-words; "en" when unsure."""
    t = text[:2000]
    counts = {lang: len(rx.findall(t)) for rx, lang in _SCRIPTS}
    lang, n = max(counts.items(), key=lambda kv: kv[1])
    latin = len(_LATIN.findall(t))
    # a few Cyrillic or Greek homoglyphs inside English (obfuscation) must stay "en"
    if n >= 3 and n / max(1, n + latin) > 0.4:
        if lang == "zh" and counts["ja"] > 0:
            return "ja"
        if lang == "ar" and re.search(r"[پچژگ]", t):
            return "fa"
        return lang
    low = t.lower()
    best, best_n = "en", len(_EN.findall(low))
    for cand, rx in _STOP:
        k = len(rx.findall(low))
        if k > best_n * 1.5 and k >= 3:
            best, best_n = cand, k
    return best


# --- harm category ----------------------------------------------------------------------------

# First match wins, so the order is one of specificity: "school shooting" is violence before the
# weapons rule sees "shoot"; self-harm and sexual before the broad weapons and cyber stems.
# English, plus a few Russian stems for llamator's HarmBench translation. Word boundaries were
# added where a stem sat inside common words: something, method (meth), whatever (hate),
# forget (forge), inspiration (pirat), orthodox (dox), troubleshoot (shoot).
_KEYWORDS: Final = tuple((cat, re.compile(rx, re.I)) for cat, rx in (
    ("violence", r"school shooting|mass shooting|shoot up"),
    ("self_harm", r"самоуб|суицид|suicid|self[- ]?harm|kill (myself|yourself)|cut(ting)? "
     r"(myself|yourself)|anorexi|bulimi|eating disorder|overdose on|end my life|hurt myself|"
     r"starv(e|ing) (myself|yourself)"),
    ("sexual", r"порн|секс|\bsex(?!is)|porn|nude|naked|erotic|explicit (story|content|scene)|"
     r"child sexual|csam|molest|grooming|fetish|prostitut|escort"),
    ("weapons", r"бомб|взрыв|оружи|химическ|биологическ|bomb|explosiv|detonat|grenade|\bied\b|"
     r"napalm|molotov|firearm|\bgun|rifle|ammunition|ammo|3d[- ]print(ed)? (gun|weapon)|"
     r"silencer|suppressor|chemical (weapon|warfare|agent)|warfare agent|nerve agent|sarin|vx\b|"
     r"mustard gas|ricin|anthrax|bioweapon|biological (weapon|warfare|agent)|pathogen|toxin|"
     r"nuclear (weapon|bomb|device)|dirty bomb|radiolog|uranium|plutonium|weapon|tabun|"
     r"dimethylmercury|botulinum|smallpox|cbrn"),
    ("cyber", r"вредонос|взлом|хакер|фишинг|webcam|keystroke|spy on|surveil|malware|ransomware|"
     r"virus|trojan|keylogger|botnet|rootkit|worm\b|exploit|hack|ddos|phish|sql injection|xss|"
     r"backdoor|reverse shell|password (crack|hash)|crack(ing)? password|brute[- ]force|spyware|"
     r"zero[- ]day|privilege escalation|firewall|antivirus|cyber|unauthori[sz]ed access|"
     r"credential|exfiltrat|payload|shellcode|vulnerabilit"),
    ("hate", r"расов|расист|ненавист|burden on|disabilit|racis|racial|sexis|homophob|transphob|"
     r"antisemit|islamophob|\bslur|\bhate|inferior|white supremac|nazi|harass|bully|bullying|"
     r"discriminat|stereotyp|insult|demean|degrad|xenophob|ethnic|misogyn|derogatory|"
     r"offensive joke|troll|\bdoxx?"),
    ("violence", r"убий|убить|насили|терро|radicali[sz]|extremis|jihad|\bkill|murder|assassinat|"
     r"torture|assault|attack (a|the|people|someone)|\bstab\b|stabbing|\bshoot|terroris|"
     r"mass shooting|massacre|genocide|kidnap|hostage|abuse|violen|beat (up|someone)|"
     r"hurt (someone|people|others)|poison(ing)? (someone|a person|my)|strangl|maim|"
     r"animal cruelty|fight"),
    ("disinformation", r"дезинформ|фейк|earth (is|was) flat|holocaust (never|did not|didn)|"
     r"never happened|fake review|ratings|vaccin|misinformation|disinformation|fake news|"
     r"conspiracy|propaganda|hoax|false (claim|information|story|article)|mislead|deceiv|"
     r"deepfake|fabricat|election fraud|vaccines? cause|flat earth|rumou?r|"
     r"manipulat(e|ing) (public|voters|opinion)|defamat|smear|impersonat"),
    ("illicit", r"наркот|кража|украсть|мошен|without getting caught|"
     r"without (being )?(caught|detected|detection)|betting|debit card|credit card|drug|cocaine|"
     r"heroin|\bmeth(?!od|yl|an|ion)|fentanyl|mdma|lsd|opioid|narcotic|steal|theft|shoplift|"
     r"rob\b|robbery|burglar|fraud|scam|launder|counterfeit|\bforg(e|ery|ed)\b|tax evasion|"
     r"evade tax|smuggl|traffick|bribe|"
     r"embezzl|insider trading|identity theft|illegal|black market|piracy|\bpirat|blackmail|extort|"
     r"ponzi|pyramid scheme|cheat|plagiar|evade (police|law)|poach|arson|vandal|crime|criminal|"
     r"darknet|dark web|gambling"),
))


def guess_category(text: str) -> str | None:
    """Keyword heuristic for rows whose dataset has no usable category; rough (see module doc)."""
    for cat, rx in _KEYWORDS:
        if rx.search(text):
            return cat
    return None


_DATASET_CATEGORY: Final = tuple((re.compile(rx, re.I), cat) for rx, cat in (
    (r"jailbreak|prompt.?injection|injection|system.?prompt|leak|extraction|exfil", "jailbreak"),
    (r"self.?harm|suicid|eating", "self_harm"),
    (r"sexual|adult|porn|csam|child.?(sexual|exploit)|sexualis", "sexual"),
    (r"chemical|biolog|cbrn|weapon|explos|firearm|nuclear|radiolog|bioweapon", "weapons"),
    (r"cyber|malware|hack|intrusion|exploit|phishing|security", "cyber"),
    (r"hate|harass|bully|discriminat|toxic|slur|insult|identity.?attack|offensive|"
     r"representational|stereotyp|profan|severe_toxicity|bias", "hate"),
    (r"violen|threat|terror|physical.?harm|murder", "violence"),
    (r"misinfo|disinfo|deception|info(rmation)?.?integrity|propaganda|manipulation|fake|"
     r"election", "disinformation"),
    (r"illegal|illicit|drug|fraud|theft|crime|criminal|scam|financial|piracy|gambling|evasion|"
     r"smuggl|academic|counterfeit|substance", "illicit"),
))


def map_category(dataset_category: object) -> str | None:
    """A dataset's own category name (HarmBench, PyRIT, ...) mapped to ours, or None."""
    if dataset_category is None:
        return None
    s = str(dataset_category)
    for rx, cat in _DATASET_CATEGORY:
        if rx.search(s):
            return cat
    return None


def dataset_or_guess(text: str, dataset_category: object) -> str | None:
    """The mapped dataset category; the keyword heuristic when it maps to nothing (or to
    "jailbreak", which is no harm category for a request)."""
    mapped = map_category(dataset_category)
    return guess_category(text) if mapped in (None, "jailbreak") else mapped


# --- constructors used by every extractor -----------------------------------------------------

_PH: Final = re.compile(
    r"\{\{\s*prompt\s*\}\}|\{prompt\}|\{\{\s*[A-Za-z_]+\s*\}\}|\[INSERT PROMPT HERE\]|"
    r"<INSTRUCTION>|\{TARGET\}|\{query\}|\{Z\}|\$prompt\b|\[PROMPT\]|\{QUESTION\}", re.I)


def harmful(text: str, source: str, *, category: str | None = GUESS, lang: str | None = None,
            group: str | None = None) -> Record | None:
    t = text.strip()
    if not t:
        return None
    cat = guess_category(t) if category == GUESS else category
    return Record(t, "harmful", cat, "harmful", lang or guess_lang(t), source,
                  group or near_key(t))


def jailbreak(text: str, source: str, *, risk_key: str, lang: str | None = None,
              group: str | None = None) -> Record | None:
    """A jailbreak / injection prompt, its placeholder unified as ``{HARMFUL_REQUEST}``.

    None when it is (or derives from) a prompt that the reserved in-the-wild corpus probably
    holds: ``risk_key`` names its file, upstream and dataset category (see ``filters``)."""
    t = _PH.sub(PLACEHOLDER, text).strip()
    if not t or filters.itw_overlap_risk(risk_key, t):
        return None
    return Record(t, "jailbreak", "jailbreak", "jailbreak", lang or guess_lang(t), source,
                  group or near_key(t))


def response(text: str, label: str, source: str, *, prompt: str | None,
             category: str | None = GUESS, group: str | None = None) -> Record | None:
    """A model response. Harmful ones get the category of the request (the keyword heuristic on
    the prompt when ``category`` is None); refusals and other benign responses get none."""
    t = text.strip()
    if not t:
        return None
    cat: str | None = None
    if label == "response_harmful":
        cat = category
        if cat in (None, GUESS, "jailbreak"):
            cat = guess_category(prompt or "")
    p = prompt.strip() if prompt else None
    return Record(t, label, cat, "response", guess_lang(t), source,
                  group or near_key(p or t), p or None)


def benign(text: str, kind: str, source: str, *, lang: str | None = None,
           group: str | None = None) -> Record | None:
    t = text.strip()
    if not t:
        return None
    return Record(t, "benign", None, kind, lang or guess_lang(t), source, group or near_key(t))


_A = TypeVar("_A")


def extractor(fn: Callable[[_A], Iterable[Record | None]]) -> Callable[[_A], Iterator[Record]]:
    """Wrap a source's generator, which may yield None for a row the constructors rejected
    (empty text, jailbreak overlap risk), into one that yields only records."""

    @wraps(fn)
    def records(archive: _A) -> Iterator[Record]:
        return (r for r in fn(archive) if r is not None)

    return records
