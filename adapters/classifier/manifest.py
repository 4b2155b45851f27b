"""The model manifest: what a model file is, what it takes, what it outputs and how to read it.

A manifest is a JSON document next to the model file::

    {
      "format": 1,
      "name": "sg-default", "version": "2026.11.1",
      "model_file": "model.onnx", "sha256": "<hex of model_file>",
      "input": {"kind": "string", "name": "text"}
            |  {"kind": "token_ids", "name": "input_ids", "tokenizer": "tokenizer.json",
                "max_length": 128, "attention_mask": "attention_mask"},
      "output": {"name": "logits", "kind": "logits" | "probabilities"},
      "max_chars": 1024, "max_windows": 128, "fine_chars": 256,
      "normalizer": "sg-norm-1",
      "labels": [{"index": 0, "category": "jailbreak", "threshold": 0.5,
                  "calibration": {"kind": "platt", "a": 1.0, "b": 0.0}}, ...],
      "fragments": {"first": 2, "last": 6, "min_chars": 12, "labels": [...]},
      "unsupported_categories": {"<category>": "why the data cannot support it"},
      "metrics": {...free-form figures from training...}
    }

Labels and their calibration: ``labels.py``. ``fragments`` (optional): a prompt's sentences are
read alone as well, each label's maximum over them calibrated on its own (``fragments.py``).
``normalizer`` (optional) names the text normaliser (see ``normalize.py``) the model was trained
behind; the scoring path applies it to every text before windowing.
Parsing is strict and reports every problem at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from safeguards.adapters.classifier.encoder.source import EncoderSource, parse_source
from safeguards.adapters.classifier.errors import ManifestError
from safeguards.adapters.classifier.fragments import FragmentArm, parse_fragment_arm
from safeguards.adapters.classifier.labels import (
    Calibration,
    LabelSpec,
    Problems,
    labels_json,
    parse_labels,
)
from safeguards.adapters.classifier.normalize import NORMALIZER_VERSIONS

__all__ = ["MANIFEST_FORMAT", "Calibration", "FragmentArm", "InputSpec", "LabelSpec",
           "ModelManifest", "parse_manifest", "read_manifest"]

MANIFEST_FORMAT = 1
InputKind = Literal["string", "token_ids"]
OutputKind = Literal["logits", "probabilities"]


@dataclass(frozen=True, slots=True)
class InputSpec:
    kind: InputKind
    name: str
    tokenizer: str | None = None
    max_length: int | None = None
    attention_mask: str | None = None


@dataclass(frozen=True, slots=True)
class ModelManifest:
    name: str
    version: str
    model_file: str
    sha256: str | None
    input: InputSpec
    output_name: str
    output_kind: OutputKind
    labels: tuple[LabelSpec, ...]
    max_chars: int
    max_windows: int
    fine_chars: int = 0  # a second, finer window size (0: none), against dilution in long text
    unsupported_categories: tuple[tuple[str, str], ...] = ()
    normalizer: str | None = None  # a NORMALIZER_VERSIONS name, applied before windowing
    metrics: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # A pretrained encoder from a pinned package: ``model_file`` then holds the trained tensors
    # (safetensors) and the runnable graph is built from both (see ``encoder/build.py``).
    encoder: EncoderSource | None = None
    # Heads trained on model responses: how completions are read (prompts use ``labels``).
    completion_labels: tuple[LabelSpec, ...] = ()
    # A prompt's sentences read alone too, at operating points of their own (``fragments.py``).
    fragments: FragmentArm | None = None

    @property
    def window_normalizer(self) -> str | None:
        """The normaliser ``prepare_text`` applies before windowing: a string model's. A token
        model's is applied by the loader itself (``LoadedModel.raw``), once, on every path."""
        return self.normalizer if self.input.kind == "string" else None

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(label.category for label in self.labels)

    def labels_for(self, kind: str) -> tuple[LabelSpec, ...]:
        """The label set that reads ``kind`` ("prompt" or "completion") content."""
        if kind == "completion" and self.completion_labels:
            return self.completion_labels
        return self.labels

    def to_json(self) -> dict[str, Any]:
        inp: dict[str, Any] = {"kind": self.input.kind, "name": self.input.name}
        if self.input.kind == "token_ids":
            inp.update(tokenizer=self.input.tokenizer, max_length=self.input.max_length,
                       attention_mask=self.input.attention_mask)
        return {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "version": self.version,
            "model_file": self.model_file,
            "sha256": self.sha256,
            "input": inp,
            "output": {"name": self.output_name, "kind": self.output_kind},
            "max_chars": self.max_chars,
            "max_windows": self.max_windows,
            "fine_chars": self.fine_chars,
            **({"normalizer": self.normalizer} if self.normalizer else {}),
            "labels": labels_json(self.labels),
            **({"completion_labels": labels_json(self.completion_labels)}
               if self.completion_labels else {}),
            **({"fragments": self.fragments.to_json()} if self.fragments else {}),
            **({"encoder": self.encoder.to_json()} if self.encoder else {}),
            "unsupported_categories": dict(self.unsupported_categories),
            "metrics": self.metrics,
        }




def parse_manifest(data: Any, *, known_categories: frozenset[str] | None = None) -> ModelManifest:
    """Validate a decoded manifest document; raise :class:`ManifestError` listing all problems."""
    p = Problems()
    if not isinstance(data, dict):
        raise ManifestError(f"manifest must be a JSON object, got {type(data).__name__}")
    fmt = p.get(data, "format", int, "manifest")
    if fmt is not None and fmt != MANIFEST_FORMAT:
        p.add(f"manifest.format: {fmt} is not supported (this build reads {MANIFEST_FORMAT})")
    name = p.get(data, "name", str, "manifest")
    version = p.get(data, "version", str, "manifest")
    for key, val in (("name", name), ("version", version)):
        if isinstance(val, str) and not (0 < len(val) <= 64 and val.isprintable()):
            p.add(f"manifest.{key}: must be 1 to 64 printable characters")
    model_file = p.get(data, "model_file", str, "manifest")
    if isinstance(model_file, str) and (
        not model_file or "/" in model_file or "\\" in model_file or model_file.startswith(".")
    ):
        p.add("manifest.model_file: must be a plain file name beside the manifest")
    sha = p.get(data, "sha256", str, "manifest", optional=True)
    if isinstance(sha, str) and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        p.add("manifest.sha256: must be 64 lowercase hex digits")

    inp = _parse_input(p, data.get("input"))
    out = p.get(data, "output", dict, "manifest")
    out_name, out_kind = "", "logits"
    if isinstance(out, dict):
        out_name = p.get(out, "name", str, "manifest.output") or ""
        out_kind = p.get(out, "kind", str, "manifest.output") or "logits"
        if out_kind not in ("logits", "probabilities"):
            p.add("manifest.output.kind: must be 'logits' or 'probabilities'")
    max_chars = p.get(data, "max_chars", int, "manifest")
    if isinstance(max_chars, int) and not 16 <= max_chars <= 1_000_000:
        p.add("manifest.max_chars: must be between 16 and 1000000")
    max_windows = p.get(data, "max_windows", int, "manifest")
    if isinstance(max_windows, int) and not 1 <= max_windows <= 4096:
        p.add("manifest.max_windows: must be between 1 and 4096")

    fine_chars = p.get(data, "fine_chars", int, "manifest", optional=True) or 0
    if isinstance(max_chars, int) and not (fine_chars == 0 or 16 <= fine_chars < max_chars):
        p.add("manifest.fine_chars: must be 0 or between 16 and max_chars")
    normalizer = p.get(data, "normalizer", str, "manifest", optional=True)
    if isinstance(normalizer, str) and normalizer not in NORMALIZER_VERSIONS:
        p.add(f"manifest.normalizer: {normalizer[:40]!r} is not one of "
              f"{', '.join(NORMALIZER_VERSIONS)}")
    labels = parse_labels(p, data.get("labels"), known_categories)
    completion_labels: tuple[LabelSpec, ...] = ()
    if data.get("completion_labels") is not None:
        completion_labels = parse_labels(p, data.get("completion_labels"), known_categories,
                                         path="manifest.completion_labels", contiguous=False)
    fragments = None
    if data.get("fragments") is not None:
        fragments = parse_fragment_arm(p, data["fragments"], labels, known_categories)
    encoder: EncoderSource | None = None
    if data.get("encoder") is not None:
        try:
            encoder = parse_source(data["encoder"])
        except ManifestError as exc:
            p.add(str(exc).removeprefix("invalid model manifest: "))
        if inp is not None and inp.kind != "token_ids":
            p.add("manifest.input.kind: an encoder model takes token_ids")
    elif inp is not None and inp.kind == "token_ids" and inp.tokenizer is None:
        p.add("manifest.input.tokenizer: missing (required unless an encoder names it)")
    unsupported_raw = p.get(data, "unsupported_categories", dict, "manifest", optional=True) or {}
    unsupported: list[tuple[str, str]] = []
    for cat, why in unsupported_raw.items():
        if not isinstance(why, str):
            p.add(f"manifest.unsupported_categories.{cat}: reason must be a string")
        else:
            unsupported.append((str(cat), why))
    metrics = p.get(data, "metrics", dict, "manifest", optional=True) or {}
    known = {"format", "name", "version", "model_file", "sha256", "input", "output", "max_chars",
             "max_windows", "fine_chars", "normalizer", "labels", "unsupported_categories",
             "metrics", "encoder", "completion_labels", "fragments"}
    extra = sorted(k for k in data if k not in known)
    if extra:
        p.add(f"manifest: unexpected field(s) {', '.join(repr(k)[:40] for k in extra[:5])}")
    if p.items or inp is None:
        raise ManifestError("invalid model manifest: " + "; ".join(p.items or ["bad input"]))
    return ModelManifest(
        name=name, version=version, model_file=model_file, sha256=sha, input=inp,
        output_name=out_name, output_kind=out_kind, labels=labels,  # type: ignore[arg-type]
        max_chars=max_chars, max_windows=max_windows, fine_chars=fine_chars,
        unsupported_categories=tuple(unsupported), normalizer=normalizer, metrics=metrics,
        encoder=encoder, completion_labels=completion_labels, fragments=fragments,
    )


def _parse_input(p: Problems, raw: Any) -> InputSpec | None:
    if not isinstance(raw, dict):
        p.add("manifest.input: missing or not an object")
        return None
    kind = p.get(raw, "kind", str, "manifest.input")
    name = p.get(raw, "name", str, "manifest.input")
    if kind == "string":
        return InputSpec("string", name or "")
    if kind == "token_ids":
        # optional: an encoder model's tokenizer comes with the encoder's package
        tok = p.get(raw, "tokenizer", str, "manifest.input", optional=True)
        max_len = p.get(raw, "max_length", int, "manifest.input")
        mask = p.get(raw, "attention_mask", str, "manifest.input", optional=True)
        if isinstance(max_len, int) and not 1 <= max_len <= 8192:
            p.add("manifest.input.max_length: must be between 1 and 8192")
        return InputSpec("token_ids", name or "", tokenizer=tok, max_length=max_len,
                         attention_mask=mask)
    if kind is not None:
        p.add("manifest.input.kind: must be 'string' or 'token_ids'")
    return None



def read_manifest(path: Path, *, known_categories: frozenset[str] | None = None) -> ModelManifest:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest unreadable: {path} ({type(exc).__name__})") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest is not JSON: {path} (line {exc.lineno})") from None
    return parse_manifest(data, known_categories=known_categories)
