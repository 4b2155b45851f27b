"""GPU check of the classifier adapter: providers, CUDA vs CPU scores, node placement, benchmark.

Meant for a machine with a CUDA device and ``onnxruntime-gpu`` installed; on a machine without one
it still runs and reports that the loader chose the CPU. Prints human-readable lines and one JSON
line per section (prefixed ``JSON``).

    python benchmarks/gpu_check.py [--texts 2000] [--profile-dir DIR] [--bench]
    python benchmarks/gpu_check.py --cpu-bench [classifier.py args]   # classifier.py on the CPU
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from safeguards.adapters.classifier.loader import (
    DEFAULT_MODEL_DIR,
    LoadedModel,
    cuda_device_count,
    load_model,
)

HERE = Path(__file__).resolve().parent


def _classifier_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("classifier_bench", HERE / "classifier.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def emit(section: str, data: dict[str, Any]) -> None:
    print("JSON " + json.dumps({"section": section, **data}), flush=True)


def predict_batched(model: LoadedModel, texts: list[str], batch: int) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    parts = [model.predict(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    return np.concatenate(parts), time.perf_counter() - started


def raw_batched(model: LoadedModel, texts: list[str], batch: int) -> np.ndarray:
    return np.concatenate([model.raw(texts[i : i + batch]) for i in range(0, len(texts), batch)])


def placement(texts: list[str], profile_dir: Path) -> dict[str, Any]:
    """Which provider ran each node, read from an ONNX Runtime profile of a CUDA-first session."""
    import onnxruntime as ort

    model_path = DEFAULT_MODEL_DIR / json.loads(
        (DEFAULT_MODEL_DIR / "manifest.json").read_text())["model_file"]
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(profile_dir / "ort_profile")
    options.log_severity_level = 0  # verbose: ORT prints its node placements on stderr
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    ort.set_default_logger_severity(0)
    print("--- ORT verbose session log (stderr) begins ---", flush=True)
    sys.stderr.flush()
    session = ort.InferenceSession(str(model_path), sess_options=options,
                                   providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    ort.set_default_logger_severity(3)
    feed = {session.get_inputs()[0].name: np.asarray(texts[:64], dtype=object)}
    for _ in range(3):
        session.run(None, feed)
    profile = Path(session.end_profiling())
    sys.stderr.flush()
    print("--- ORT verbose session log ends ---", flush=True)
    nodes: dict[str, dict[str, str]] = {}
    for event in json.loads(profile.read_text()):
        if event.get("cat") != "Node":
            continue
        args = event.get("args", {})
        name = str(event.get("name", "")).removesuffix("_kernel_time")
        if "provider" in args and name and not name.endswith(("_fence_before", "_fence_after")):
            nodes[name] = {"op": str(args.get("op_name", "")), "provider": str(args["provider"])}
    return {"session_providers": session.get_providers(), "nodes": nodes,
            "profile_file": profile.name}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--cpu-bench":
        bench = _classifier_bench()
        setattr(bench, "load_model", functools.partial(load_model, allow_gpu=False))  # noqa: B010
        sys.argv = [str(HERE / "classifier.py"), *sys.argv[2:]]
        bench.main()
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--profile-dir", type=Path, default=None)
    parser.add_argument("--bench", action="store_true",
                        help="also run benchmarks/classifier.py, default provider and CPU")
    parser.add_argument("--bench-args", default="", help="extra args for classifier.py")
    args = parser.parse_args()

    import onnxruntime as ort

    emit("env", {"python": sys.version.split()[0], "onnxruntime": ort.__version__,
                 "onnxruntime_file": ort.__file__,
                 "available_providers": ort.get_available_providers(),
                 "cuda_device_count": cuda_device_count()})

    t0 = time.perf_counter()
    default = load_model()
    load_default_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu = load_model(allow_gpu=False)
    load_cpu_s = time.perf_counter() - t0
    emit("load", {"default_provider": default.provider, "default_providers": default.providers,
                  "cpu_provider": cpu.provider, "load_default_s": round(load_default_s, 3),
                  "load_cpu_s": round(load_cpu_s, 3), "model": default.name,
                  "version": default.version})

    texts = _classifier_bench().workload(args.texts)
    default.predict(texts[:64])
    cpu.predict(texts[:64])
    p_default, s_default = predict_batched(default, texts, 64)
    p_cpu, s_cpu = predict_batched(cpu, texts, 64)
    r_default, r_cpu = raw_batched(default, texts, 64), raw_batched(cpu, texts, 64)
    one = texts[:500]
    _, s1_default = predict_batched(default, one, 1)
    _, s1_cpu = predict_batched(cpu, one, 1)
    emit("scores", {
        "n_texts": len(texts), "labels": [lab.category for lab in default.manifest.labels],
        "max_abs_diff_prob": float(np.max(np.abs(p_default - p_cpu))),
        "max_abs_diff_raw": float(np.max(np.abs(r_default - r_cpu))),
        "mean_abs_diff_prob": float(np.mean(np.abs(p_default - p_cpu))),
        "default_batch64_texts_per_s": round(len(texts) / s_default, 1),
        "cpu_batch64_texts_per_s": round(len(texts) / s_cpu, 1),
        "default_batch1_texts_per_s": round(len(one) / s1_default, 1),
        "cpu_batch1_texts_per_s": round(len(one) / s1_cpu, 1),
    })

    profile_dir = args.profile_dir or Path(tempfile.mkdtemp())
    profile_dir.mkdir(parents=True, exist_ok=True)
    try:
        emit("placement", placement(texts, profile_dir))
    except Exception as exc:  # report and go on: placement is informative only
        emit("placement", {"error": f"{type(exc).__name__}: {exc}"})

    if args.bench:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        extra = args.bench_args.split()
        for label, cmd in (
            ("default", [sys.executable, str(HERE / "classifier.py"), *extra]),
            ("cpu", [sys.executable, str(Path(__file__).resolve()), "--cpu-bench", *extra]),
        ):
            print(f"--- benchmarks/classifier.py ({label}) ---", flush=True)
            t0 = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            print(done.stdout, end="", flush=True)
            if done.returncode:
                print(done.stderr[-3000:], flush=True)
            last = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            emit(f"bench_{label}", {"rc": done.returncode,
                                    "wall_s": round(time.perf_counter() - t0, 1),
                                    "json": json.loads(last[-1]) if last else None})


if __name__ == "__main__":
    main()
