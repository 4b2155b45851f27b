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
      "unsupported_categories": {"<category>": "why the data cannot support it"},
      "metrics": {...free-form figures from training...}
    }

Calibration turns an output column into a probability: ``platt`` is ``sigmoid(a*z + b)``,
``temperature`` is ``sigmoid(z / t)``, ``identity`` takes the column as already a probability.
``normalizer`` (optional) names the text normaliser (see ``normalize.py``) the model was trained
behind; the scoring path applies it to every text before windowing.
Parsing is strict and reports every problem at once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from safeguards.adapters.classifier.encoder.source import EncoderSource, parse_source
from safeguards.adapters.classifier.errors import ManifestError
from safeguards.adapters.classifier.normalize import NORMALIZER_VERSIONS

MANIFEST_FORMAT = 1
InputKind = Literal["string", "token_ids"]
OutputKind = Literal["logits", "probabilities"]
CalibrationKind = Literal["platt", "temperature", "identity"]


@dataclass(frozen=True, slots=True)
class Calibration:
    kind: CalibrationKind
    a: float = 1.0  # platt slope
    b: float = 0.0  # platt intercept
    t: float = 1.0  # temperature

    def apply_array(self, z: np.ndarray) -> np.ndarray:
        if self.kind == "identity":
            out: np.ndarray = np.clip(z, 0.0, 1.0)
            return out
        x = self.a * z + self.b if self.kind == "platt" else z / self.t
        result: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))
        return result

    def apply(self, z: float) -> float:
        if self.kind == "identity":
            return min(1.0, max(0.0, z))
        x = self.a * z + self.b if self.kind == "platt" else z / self.t
        if x >= 0:
            return 1.0 / (1.0 + math.exp(-x))
        e = math.exp(x)
        return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class LabelSpec:
    index: int
    category: str
    threshold: float
    calibration: Calibration


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
            "labels": _labels_json(self.labels),
            **({"completion_labels": _labels_json(self.completion_labels)}
               if self.completion_labels else {}),
            **({"encoder": self.encoder.to_json()} if self.encoder else {}),
            "unsupported_categories": dict(self.unsupported_categories),
            "metrics": self.metrics,
        }


def _labels_json(labels: tuple[LabelSpec, ...]) -> list[dict[str, Any]]:
    return [{"index": lab.index, "category": lab.category, "threshold": lab.threshold,
             "calibration": {"kind": lab.calibration.kind, "a": lab.calibration.a,
                             "b": lab.calibration.b, "t": lab.calibration.t}}
            for lab in labels]


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def get(self, obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str,
            *, optional: bool = False) -> Any:
        if key not in obj:
            if not optional:
                self.add(f"{path}.{key}: missing")
            return None
        value = obj[key]
        if value is None and optional:
            return None
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            self.add(f"{path}.{key}: expected {_kind_name(kind)}, got bool")
            return None
        if not isinstance(value, kind):
            self.add(f"{path}.{key}: expected {_kind_name(kind)}, got {type(value).__name__}")
            return None
        return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def parse_manifest(data: Any, *, known_categories: frozenset[str] | None = None) -> ModelManifest:
    """Validate a decoded manifest document; raise :class:`ManifestError` listing all problems."""
    p = _Problems()
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
    labels = _parse_labels(p, data.get("labels"), known_categories)
    completion_labels: tuple[LabelSpec, ...] = ()
    if data.get("completion_labels") is not None:
        completion_labels = _parse_labels(p, data.get("completion_labels"), known_categories,
                                          path="manifest.completion_labels", contiguous=False)
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
             "metrics", "encoder", "completion_labels"}
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
        encoder=encoder, completion_labels=completion_labels,
    )


def _parse_input(p: _Problems, raw: Any) -> InputSpec | None:
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


def _parse_labels(p: _Problems, raw: Any, known: frozenset[str] | None, *,
                  path: str = "manifest.labels", contiguous: bool = True) -> tuple[LabelSpec, ...]:
    """A label set; ``contiguous`` sets must use indices 0..n-1 (others index further columns
    of the same output)."""
    where = path
    if not isinstance(raw, list) or not raw:
        p.add(f"{where}: must be a non-empty array")
        return ()
    out: list[LabelSpec] = []
    for i, lab in enumerate(raw):
        path = f"{where}[{i}]"
        if not isinstance(lab, dict):
            p.add(f"{path}: must be an object")
            continue
        index = p.get(lab, "index", int, path)
        cat = p.get(lab, "category", str, path)
        thr = p.get(lab, "threshold", (int, float), path)
        if isinstance(thr, int | float) and not 0.0 <= thr <= 1.0:
            p.add(f"{path}.threshold: must be within [0, 1]")
        if isinstance(cat, str) and known is not None and cat not in known:
            p.add(f"{path}.category: {cat[:40]!r} is not a policy category")
        cal = _parse_calibration(p, lab.get("calibration"), f"{path}.calibration")
        if index is not None and cat is not None and thr is not None and cal is not None:
            out.append(LabelSpec(index, cat, float(thr), cal))
    indices = [lab.index for lab in out]
    if len(out) == len(raw) and (
            (contiguous and sorted(indices) != list(range(len(raw))))
            or len(set(indices)) != len(indices) or any(i < 0 for i in indices)):
        p.add(f"{where}: indices must be " + ("0..n-1, each once" if contiguous
                                              else "distinct and non-negative"))
    cats = [lab.category for lab in out]
    if len(set(cats)) != len(cats):
        p.add(f"{where}: a category appears twice")
    return tuple(sorted(out, key=lambda lab: lab.index))


def _parse_calibration(p: _Problems, raw: Any, path: str) -> Calibration | None:
    if not isinstance(raw, dict):
        p.add(f"{path}: missing or not an object")
        return None
    kind = p.get(raw, "kind", str, path)
    vals: dict[str, float] = {}
    for key in ("a", "b", "t"):
        v = p.get(raw, key, (int, float), path, optional=True)
        if v is not None:
            if not math.isfinite(v):
                p.add(f"{path}.{key}: must be finite")
            vals[key] = float(v)
    if kind == "temperature" and vals.get("t", 1.0) <= 0:
        p.add(f"{path}.t: must be positive")
    if kind == "platt" and vals.get("a", 1.0) <= 0:
        # a score is the maximum over windows: only an increasing calibration keeps that right
        p.add(f"{path}.a: must be positive")
    if kind not in ("platt", "temperature", "identity"):
        p.add(f"{path}.kind: must be 'platt', 'temperature' or 'identity'")
        return None
    return Calibration(kind, **vals)  # type: ignore[arg-type]


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
