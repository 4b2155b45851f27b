"""Build, cache and verify the runnable graph of an encoder model, once per machine.

Inputs are the pinned encoder files (``source.read_files``, sha256-checked) and the trained
tensors committed beside the manifest (sha256-checked by the loader). The graph is written in
fp32, then quantised for the device that runs it: ``int8`` (the matrix products quantised per
row, ``int8.py``: a window's score is the same in any batch) on the CPU, ``fp16`` on CUDA. The
result is cached under a key derived from every input and the builder version, with a sidecar
holding its own sha256: a damaged or half-written cache file is rebuilt, never loaded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np

from safeguards.adapters.classifier.encoder.cascade import GATE
from safeguards.adapters.classifier.encoder.e5s1 import read_e5s1
from safeguards.adapters.classifier.encoder.graph import EncoderConfig, build_cascade, build_graph
from safeguards.adapters.classifier.encoder.int8 import per_row_int8
from safeguards.adapters.classifier.encoder.source import (
    EncoderSource,
    default_cache_dir,
    read_files,
    sha256_bytes,
)
from safeguards.adapters.classifier.encoder.tensors import read_tensors
from safeguards.adapters.classifier.errors import ModelLoadError

log = logging.getLogger(__name__)

GRAPH_VERSION = "sg-bert-graph-3"  # 3: int8 products quantised per row
Variant = Literal["fp32", "int8", "fp16"]


def cache_key(source: EncoderSource, trained_sha256: str, variant: Variant) -> str:
    parts = [GRAPH_VERSION, variant, trained_sha256, source.weights_format,
             f"layers={source.layers}",
             *([f"semantic={source.semantic_layers}"] if source.semantic_layers else []),
             *(f"{role}={f.sha256}" for role, f in source.files)]
    return sha256_bytes("\n".join(parts).encode())[:32]


def encoder_weights(source: EncoderSource, files: Mapping[str, bytes], *,
                    layers: int | None = None) -> tuple[EncoderConfig, dict[str, np.ndarray]]:
    """The encoder's configuration (cut to ``layers``, by default ``source.layers``: the tuned
    tower) and its fp32 weights (all of them)."""
    if source.weights_format == "e5s1-q4":
        cfg, weights = read_e5s1(files["weights"])
    else:
        try:
            config = json.loads(files["config"])
        except (KeyError, ValueError):
            raise ModelLoadError("encoder config.json is missing or not JSON") from None
        cfg = EncoderConfig.from_hf(config)
        with tempfile.TemporaryDirectory() as tmp:
            weights_path = Path(tmp) / "weights.safetensors"
            weights_path.write_bytes(files["weights"])
            weights = read_tensors(weights_path)
    for depth in (source.layers, source.semantic_layers):
        if depth is not None and depth > cfg.num_layers:
            raise ModelLoadError(f"encoder depth {depth} exceeds the model's {cfg.num_layers} "
                                 "layers")
    layers = layers or source.layers
    if layers is not None:
        cfg = dataclasses.replace(cfg, num_layers=layers)
    if source.max_length > cfg.max_positions:
        raise ModelLoadError(f"encoder.max_length {source.max_length} exceeds the model's "
                             f"{cfg.max_positions} positions")
    return cfg, weights


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encoder_graph(source: EncoderSource, files: Mapping[str, bytes],
                  trained: Mapping[str, np.ndarray], *, with_embedding: bool = False) -> bytes:
    """The fp32 graph from the encoder's files and the trained tensors."""
    cfg, weights = encoder_weights(source, files)
    return build_graph(cfg, weights, trained, with_embedding=with_embedding,
                       semantic_layers=source.semantic_layers)


def quantize(fp32: bytes, variant: Variant) -> bytes:
    """The graph for ``variant``: int8 matrix products (CPU) or fp16 throughout (CUDA)."""
    if variant == "fp32":
        return fp32
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "out.onnx"
        src.write_bytes(fp32)
        if variant == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Matrix products quantised per row (``int8.py``: a window's score does not depend
            # on its batch) and the embedding table, weights only (a 250k-token vocabulary is
            # 384 MB in fp32, 96 MB in int8, for no measurable change in the scores).
            src.write_bytes(per_row_int8(fp32))
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["Gather"])
        else:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
            onnx.save(model, str(dst))
        return dst.read_bytes()


def built_graphs(source: EncoderSource, trained_path: Path, trained_sha256: str,
                 variant: Variant, cache_dir: Path | None = None,
                 ) -> tuple[tuple[Path, ...], bytes]:
    """The cached graphs for ``variant`` (built now if missing or damaged) and the tokenizer:
    one graph, or for a cascade model (``cascade.GATE`` among its trained tensors) the
    screening graph and the semantic graph."""
    cache = (cache_dir or default_cache_dir()) / "built"
    trained = read_tensors(trained_path)
    cascade = bool(source.semantic_layers) and GATE in trained
    key = cache_key(source, trained_sha256, variant) + ("-cascade" if cascade else "")
    names = (f"{key}-screen", f"{key}-semantic") if cascade else (key,)
    paths = tuple(cache / f"{name}.onnx" for name in names)
    files = read_files(source, cache_dir)
    if all(_intact(path) for path in paths):
        return paths, files["tokenizer"]
    log.info("building the classifier graph (%s%s) from %s", variant,
             ", cascade" if cascade else "",
             ", ".join(f"{p.name}=={p.version}" for p in source.packages))
    if cascade:
        assert source.semantic_layers is not None
        cfg, weights = encoder_weights(source, files)
        graphs: tuple[bytes, ...] = build_cascade(cfg, weights, trained, source.semantic_layers)
    else:
        graphs = (encoder_graph(source, files, trained),)
    for path, graph in zip(paths, graphs, strict=True):
        graph = quantize(graph, variant)
        _atomic_write(path, graph)
        _atomic_write(path.with_suffix(".sha256"), sha256_bytes(graph).encode())
    return paths, files["tokenizer"]


def _intact(graph_path: Path) -> bool:
    sidecar = graph_path.with_suffix(".sha256")
    if not (graph_path.is_file() and sidecar.is_file()):
        return False
    if sha256_bytes(graph_path.read_bytes()) == sidecar.read_text().strip():
        return True
    log.warning("cached classifier graph %s is damaged; rebuilding", graph_path.name)
    return False
