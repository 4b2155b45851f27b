"""Out-of-distribution quality of the shipped classifier, through the runtime loader.

The evaluation rows come from packages no training row comes from (``train/recipe.py``: the
same split the training run reports, cut per benign kind to ``--per-kind`` rows for time); each
is scored by the shipped model as the service scores it (int8 graph on the CPU, token windows,
maximum over windows) at the manifest's thresholds. Prints the report per benign kind and per
harm category, then one JSON line::

    {"ood_auc", "ood_harmful_recall", "ood_benign_fpr_mean", "ood_benign_fpr_max_kind",
     "kinds", "jailbreak_recall", "refuse_harmful_recall", "refuse_benign_fpr", ...,
     "completion_auc", ...}

    python benchmarks/classifier_quality.py [--per-kind 400] [--wheels var/classifier-wheels]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from safeguards.adapters.classifier.loader import DEFAULT_MODEL_DIR, load_model
from safeguards.adapters.classifier_training import ood


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--wheels", type=Path, default=Path("var/classifier-wheels"))
    ap.add_argument("--per-kind", type=int, default=400,
                    help="benign rows per kind (0: all the evaluation split has)")
    args = ap.parse_args()
    model = load_model(args.model, allow_gpu=False)
    seed = int(model.manifest.metrics.get("seed", 0))
    rows = ood.evaluation_rows(args.wheels, args.per_kind, seed)
    started = time.perf_counter()
    report = ood.evaluate_model(model, rows)
    elapsed = time.perf_counter() - started
    prompt, completion, refuse = report["prompt"], report["completion"], report["prompt_refuse"]
    print(f"{model.name} {model.version} ({model.variant} on {model.provider}): "
          f"{len(rows)} rows scored in {elapsed:.0f} s")
    for kind, v in prompt["kinds"].items():
        print(f"  benign {kind:<18} n={v['n']:<5} FPR {v['fpr']:.4f}")
    for cat, v in prompt["recall_by_category"].items():
        print(f"  harmful {cat:<16} n={v['n']:<5} recall {v['any']:.3f} (own {v['own']})")
    for source, v in prompt["recall_by_source"].items():
        print(f"  source {source:<40} n={v['n']:<5} recall {v['recall']:.3f}")
    print(json.dumps({
        "ood_auc": prompt["auc"],
        "ood_harmful_recall": prompt["harmful_recall"],
        "ood_benign_fpr_mean": prompt["benign_fpr_mean_kind"],
        "ood_benign_fpr_max_kind": prompt["benign_fpr_max_kind"],
        "kinds": {k: v["fpr"] for k, v in prompt["kinds"].items()},
        "ood_auc_harmful_only": prompt["auc_harmful_vs_benign"],
        "jailbreak_recall": prompt["jailbreak_recall"],
        "benign_fpr_all": prompt["benign_fpr"],
        # at the policy's refuse thresholds: what one request alone is refused on inline
        "refuse_harmful_recall": refuse["harmful_recall"],
        "refuse_jailbreak_recall": refuse["jailbreak_recall"],
        "refuse_benign_fpr": refuse["benign_fpr"],
        "refuse_benign_fpr_max_kind": refuse["benign_fpr_max_kind"],
        "completion_auc": completion.get("auc"),
        "completion_harmful_recall": completion.get("harmful_recall"),
        "completion_benign_fpr": completion.get("benign_fpr"),
        "rows": len(rows),
    }))


if __name__ == "__main__":
    main()
