"""The check a trained model passes before it replaces the one it was meant to replace."""

from __future__ import annotations

from safeguards.adapters.classifier.manifest import ModelManifest


class TrainingCollapsed(RuntimeError):
    """A trained model that does not separate its own calibration split: not written."""


# The calibration split is in distribution: a shipped model separates it almost perfectly (ROC
# AUC 0.95-1.0 per category). A run below this in any category has collapsed (2026-12-06: a
# fine-tune whose tuned tower answered nearly the same for every text, AUC 0.41-0.57).
MIN_CALIBRATION_AUC = 0.8


def check_trained(manifest: ModelManifest) -> None:
    """Raises TrainingCollapsed when a prompt category's calibration ROC AUC is below
    ``MIN_CALIBRATION_AUC``."""
    aucs = {c: v["auc"] for c, v in manifest.metrics["calibration"]["prompt"].items()}
    low = {c: a for c, a in aucs.items() if not a >= MIN_CALIBRATION_AUC}
    if low:
        raise TrainingCollapsed(f"calibration ROC AUC below {MIN_CALIBRATION_AUC} in {low}")
