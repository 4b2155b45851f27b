"""A training run whose model does not separate its own calibration split is not written over
the model it was meant to replace (``encoder_model.check_trained``)."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from safeguards.adapters.classifier.loader import DEFAULT_MODEL_DIR
from safeguards.adapters.classifier.manifest import read_manifest
from safeguards.adapters.classifier_training.collapse import (
    MIN_CALIBRATION_AUC,
    TrainingCollapsed,
    check_trained,
)


def test_the_shipped_model_passes_and_a_collapsed_one_is_refused() -> None:
    shipped = read_manifest(DEFAULT_MODEL_DIR / "manifest.json")
    check_trained(shipped)  # the shipped model separates its calibration split
    metrics = copy.deepcopy(shipped.metrics)
    metrics["calibration"]["prompt"]["weapons"]["auc"] = 0.41  # as the 2026-12-06 run
    collapsed = dataclasses.replace(shipped, metrics=metrics)
    with pytest.raises(TrainingCollapsed, match="weapons"):
        check_trained(collapsed)
    metrics["calibration"]["prompt"]["weapons"]["auc"] = float("nan")
    with pytest.raises(TrainingCollapsed):
        check_trained(dataclasses.replace(shipped, metrics=metrics))
    lowest = min(v["auc"] for v in shipped.metrics["calibration"]["prompt"].values())
    assert lowest > MIN_CALIBRATION_AUC
