"""Output labels of a model: which column reads which category, and how its raw value becomes
a probability (``Calibration``); with the strict parsing every part of a manifest shares
(``Problems`` collects every problem, so a bad manifest reports them all at once).

Calibration turns an output column into a probability: ``platt`` is ``sigmoid(a*z + b)``,
``temperature`` is ``sigmoid(z / t)``, ``identity`` takes the column as already a probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

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

    def raw_for(self, probability: float) -> float:
        """The raw score this calibration maps to ``probability`` (the inverse of ``apply``;
        every calibration the manifest accepts is increasing)."""
        if self.kind == "identity":
            return probability
        logit = math.log(probability / (1.0 - probability))
        return (logit - self.b) / self.a if self.kind == "platt" else logit * self.t


@dataclass(frozen=True, slots=True)
class LabelSpec:
    index: int
    category: str
    threshold: float
    calibration: Calibration


def labels_json(labels: tuple[LabelSpec, ...]) -> list[dict[str, Any]]:
    return [{"index": lab.index, "category": lab.category, "threshold": lab.threshold,
             "calibration": {"kind": lab.calibration.kind, "a": lab.calibration.a,
                             "b": lab.calibration.b, "t": lab.calibration.t}}
            for lab in labels]


class Problems:
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
            self.add(f"{path}.{key}: expected {kind_name(kind)}, got bool")
            return None
        if not isinstance(value, kind):
            self.add(f"{path}.{key}: expected {kind_name(kind)}, got {type(value).__name__}")
            return None
        return value


def kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def parse_labels(p: Problems, raw: Any, known: frozenset[str] | None, *,
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
        cal = parse_calibration(p, lab.get("calibration"), f"{path}.calibration")
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


def parse_calibration(p: Problems, raw: Any, path: str) -> Calibration | None:
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
