"""GPU check of the classifier: the encoder model on CUDA (fp16, IO binding) against the CPU.

Meant for a machine with a CUDA device and ``onnxruntime-gpu`` installed (``../shared/gpu``);
without one it reports that the loader chose the CPU and measures that. Sections, each one JSON
line prefixed ``JSON``:

- ``env`` and ``load``: providers, the graph variant chosen (fp16 on CUDA, int8 on the CPU);
- ``agreement``: scores of the fp16 CUDA graph against the int8 CPU graph on the same texts;
- ``throughput``: texts/s and per-batch p50/p99 latency at batch 1 to 512, sequence 128 and
  512 tokens, the graph fed through IO binding (inputs copied once, output left on the device);
- ``cascade_all_escalated`` (a cascade model): both towers on every window, the worst case
  (``throughput`` measures the screening graph, what every window pays);
- ``pytorch`` (when torch with CUDA is present): the same encoder in PyTorch eager fp16, the
  reference the issue names.

    python benchmarks/gpu_check.py [--batches 1,8,32,128,512] [--seqs 128,512] [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from safeguards.adapters.classifier.loader import LoadedModel, cuda_device_count, load_model


def emit(section: str, data: dict[str, Any]) -> None:
    print("JSON " + json.dumps({"section": section, **data}), flush=True)


_WORDS = ("the", "model", "answers", "questions", "about", "weather", "code", "history",
          "medicine", "travel", "and", "cooking", "while", "the", "proxy", "checks", "every",
          "request", "before", "it", "reaches", "the", "model")


def _texts(n: int) -> list[str]:
    rng = np.random.default_rng(7)
    return [" ".join(rng.choice(_WORDS, int(rng.integers(8, 200)))) for _ in range(n)]


def throughput(model: LoadedModel, batch: int, seq: int, rounds: int) -> dict[str, Any]:
    session = model.session
    rng = np.random.default_rng(batch * 1000 + seq)
    ids = rng.integers(1000, 20000, (batch, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    on_gpu = model.provider == "CUDAExecutionProvider"
    if on_gpu:
        import onnxruntime as ort

        binding = session.io_binding()
        binding.bind_ortvalue_input("input_ids", ort.OrtValue.ortvalue_from_numpy(ids, "cuda", 0))
        binding.bind_ortvalue_input("attention_mask",
                                    ort.OrtValue.ortvalue_from_numpy(mask, "cuda", 0))
        for output in session.get_outputs():  # a cascade's screening graph has two
            binding.bind_output(output.name, "cuda", 0)

        def run() -> None:
            session.run_with_iobinding(binding)
    else:
        def run() -> None:
            session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
    for _ in range(3):
        run()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return {"batch": batch, "seq": seq, "p50_ms": round(float(np.median(ms)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "texts_per_s": round(batch / float(np.median(ms)) * 1000, 1)}


def escalated(model: LoadedModel, batch: int, seq: int, rounds: int) -> dict[str, Any]:
    """Both towers of a cascade model on every window (host-fed, as the scorer feeds them):
    the cost when all traffic looks doubtful. ``throughput`` measures the screening graph."""
    assert model.cascade is not None
    rng = np.random.default_rng(batch * 1000 + seq)
    ids = rng.integers(1000, 20000, (batch, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    for _ in range(3):
        model.cascade.towers(ids, mask)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        model.cascade.towers(ids, mask)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return {"batch": batch, "seq": seq, "p50_ms": round(float(np.median(ms)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "texts_per_s": round(batch / float(np.median(ms)) * 1000, 1)}


def pytorch_reference(model: LoadedModel, batch: int, seq: int, rounds: int) -> dict[str, Any]:
    import torch

    from safeguards.adapters.classifier.encoder.build import encoder_weights
    from safeguards.adapters.classifier.encoder.source import read_files
    from safeguards.adapters.classifier_training.finetune import Encoder, FinetuneConfig

    assert model.manifest.encoder is not None
    cfg, weights = encoder_weights(model.manifest.encoder, read_files(model.manifest.encoder))
    encoder = Encoder(cfg, weights, FinetuneConfig(rank=0)).half().cuda().eval()
    ids = torch.randint(1000, 20000, (batch, seq), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for _ in range(3):
            encoder.top(encoder.bottom(ids, mask), mask)
        torch.cuda.synchronize()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            encoder.top(encoder.bottom(ids, mask), mask)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return {"batch": batch, "seq": seq, "p50_ms": round(float(np.median(ms)), 3),
            "texts_per_s": round(batch / float(np.median(ms)) * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8,32,128,512")
    ap.add_argument("--seqs", default="128,512")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--texts", type=int, default=500)
    args = ap.parse_args()
    import onnxruntime as ort

    emit("env", {"python": sys.version.split()[0], "onnxruntime": ort.__version__,
                 "available_providers": ort.get_available_providers(),
                 "cuda_device_count": cuda_device_count()})
    t0 = time.perf_counter()
    default = load_model()
    emit("load", {"provider": default.provider, "variant": default.variant,
                  "load_s": round(time.perf_counter() - t0, 2), "model": default.name,
                  "version": default.version})
    cpu = load_model(allow_gpu=False)
    texts = _texts(args.texts)
    p_default, p_cpu = default.predict(texts), cpu.predict(texts)
    emit("agreement", {"n_texts": len(texts), "default": default.variant, "cpu": cpu.variant,
                       "max_abs_diff_prob": round(float(np.max(np.abs(p_default - p_cpu))), 5),
                       "mean_abs_diff_prob": round(float(np.mean(np.abs(p_default - p_cpu))), 6)})
    seqs = [int(s) for s in args.seqs.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    for seq in seqs:
        for batch in batches:
            if default.provider != "CUDAExecutionProvider" and batch * seq > 32 * 512:
                continue  # the CPU would take minutes: the GPU figures are what this is for
            emit("throughput", {"provider": default.provider, "variant": default.variant,
                                **throughput(default, batch, seq, args.rounds)})
            if default.cascade is not None:  # the worst case: every window escalated
                emit("cascade_all_escalated", {"provider": default.provider,
                                               **escalated(default, batch, seq, args.rounds)})
    try:
        import torch

        if torch.cuda.is_available():
            for batch in batches:
                emit("pytorch", {"precision": "fp16",
                                 **pytorch_reference(default, batch, 128, args.rounds)})
    except ImportError:
        emit("pytorch", {"skipped": "torch is not installed"})


if __name__ == "__main__":
    main()
