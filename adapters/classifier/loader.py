"""Load a manifest and its ONNX model into an ONNX Runtime session, CUDA first, then CPU.

``onnxruntime-gpu`` lists ``CUDAExecutionProvider`` as available even on a machine with no GPU;
asking for it there makes ONNX Runtime print library errors and fall back to the CPU. So CUDA is
requested only when the provider is built in *and* the CUDA driver reports a device, and the
provider actually in use is read back from the session afterwards (``LoadedModel.provider``).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from safeguards.adapters.classifier.encoder.build import Variant, built_graphs
from safeguards.adapters.classifier.encoder.cascade import Blend, CascadeRunner
from safeguards.adapters.classifier.encoder.source import sha256_file
from safeguards.adapters.classifier.encoder.tensors import read_tensors
from safeguards.adapters.classifier.encoder.windows import TokenWindows, tokenizer_from_json
from safeguards.adapters.classifier.errors import ModelLoadError
from safeguards.adapters.classifier.manifest import ModelManifest, read_manifest
from safeguards.adapters.classifier.normalize import normalize
from safeguards.core.policy import default_policy

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).parent / "models" / "default"
LEXICAL_MODEL_DIR = Path(__file__).parent / "models" / "lexical"
PROVIDER_PREFERENCE = ("CUDAExecutionProvider", "CPUExecutionProvider")


def policy_categories() -> frozenset[str]:
    return frozenset(c.name for c in default_policy().categories)


def cuda_device_count() -> int:
    """Devices the CUDA driver reports; 0 when there is no driver or no device."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if lib.cuInit(0) != 0:
                return 0
            count = ctypes.c_int(0)
            if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return 0
            return int(count.value)
        except (AttributeError, OSError):
            return 0
    return 0


def choose_providers(available: Sequence[str], *, allow_gpu: bool = True) -> list[str]:
    """The providers to request, in preference order, given what the runtime offers."""
    chosen: list[str] = []
    for name in PROVIDER_PREFERENCE:
        if name not in available:
            continue
        if name == "CUDAExecutionProvider" and (not allow_gpu or cuda_device_count() == 0):
            log.debug("CUDAExecutionProvider is built in but no CUDA device is present")
            continue
        chosen.append(name)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


@dataclass
class LoadedModel:
    """A ready ONNX Runtime session plus the manifest that says how to read its output."""

    manifest: ModelManifest
    session: Any
    provider: str  # the provider the session actually runs on
    providers: tuple[str, ...]
    _tokenizer: Any = None
    variant: str = "fp32"  # the graph's precision (encoder models: int8 on CPU, fp16 on CUDA)
    _windows: TokenWindows | None = None
    cascade: CascadeRunner | None = None  # a two-tower model served as a cascade

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def width(self) -> int:
        """Output columns the manifest reads (prompt labels, then completion labels)."""
        return max((lab.index for lab in (*self.manifest.labels,
                                          *self.manifest.completion_labels)), default=-1) + 1

    def raw(self, texts: Sequence[str], fragments: bool | Sequence[bool] = True) -> np.ndarray:
        """The model's output columns for a batch of texts, shape (n, columns). A text longer
        than the encoder's window is scored in overlapping token windows, each column's maximum
        kept: nothing is cut off. A token model's normaliser (the manifest's) is applied here
        and only here, so that every caller (the service, calibration, evaluation, distillation)
        scores what the model was calibrated on. (A string model's graph takes its text as its
        trainer wrote it: ``prepare_text`` normalises for it, ``window_normalizer``.)

        With a fragment arm (``manifest.fragments``) the rows are twice as wide: each text's
        columns, then each column's maximum over the text's fragments read alone (-inf for a
        text with none); ``calibrate`` reads both. ``fragments`` (one flag, or one per text)
        says which texts the arm reads: only a prompt's score uses it, so a completion's
        fragments (about a third of its cost) are not computed and stay -inf."""
        inp = self.manifest.input
        if self.manifest.normalizer is not None and inp.kind != "string":
            texts = [normalize(t, self.manifest.normalizer) for t in texts]
        if inp.kind == "string":
            out = self._run({inp.name: np.asarray(list(texts), dtype=object)})
        elif self._windows is not None:
            out = self._windows.run(texts, self._run_tokens)
        else:
            out = self._run(self._token_feed(texts))
        width = self.width
        if out.ndim != 2 or out.shape[1] < width:
            raise ModelLoadError(
                f"model output {self.manifest.output_name!r} has shape {out.shape}; "
                f"expected (n, {width})"
            )
        arm = self.manifest.fragments
        if arm is None or inp.kind == "string":
            return out
        # A cascade's semantic tower reads a fragment only where the tuned tower puts it near
        # the arm's own points (``arm.gate``): at the cascade's gate it would read over half of
        # benign fragments, and the fragments would cost three times the text itself.
        wanted = ([fragments] * len(texts) if isinstance(fragments, bool) else list(fragments))
        if len(wanted) != len(texts):
            raise ValueError(f"{len(wanted)} fragment flags for {len(texts)} texts")
        pieces = [arm.split(t) if want else [] for t, want in zip(texts, wanted, strict=True)]
        owners = np.asarray([i for i, ps in enumerate(pieces) for _ in ps], dtype=np.int64)
        by_fragment = np.full((len(texts), out.shape[1]), -np.inf)
        if owners.size:
            flat = [f for ps in pieces for f in ps]
            read = (self._windows.run(flat, partial(self._run_tokens, gate=arm.gate))
                    if self._windows is not None else self._run(self._token_feed(flat)))
            np.maximum.at(by_fragment, owners, read)
        return np.concatenate([out, by_fragment], axis=1)

    def calibrate(self, raw: np.ndarray, kind: str = "prompt") -> np.ndarray:
        """Calibrated probabilities from raw output rows, columns in the kind's label order. A
        prompt's score in a category is the larger of its whole reading and, where the model
        has a fragment arm, its fragments' reading through the arm's own calibration."""
        labels = self.manifest.labels_for(kind)
        out = np.empty((raw.shape[0], len(labels)))
        for j, lab in enumerate(labels):
            out[:, j] = lab.calibration.apply_array(raw[:, lab.index])
        arm = self.manifest.fragments
        if kind == "prompt" and arm is not None and raw.shape[1] >= 2 * self.width:
            offset = raw.shape[1] // 2
            column = {lab.category: j for j, lab in enumerate(labels)}
            for lab in arm.labels:
                j = column[lab.category]
                np.maximum(out[:, j], lab.calibration.apply_array(raw[:, offset + lab.index]),
                           out=out[:, j])
        return out

    def predict(self, texts: Sequence[str], kind: str = "prompt") -> np.ndarray:
        """Calibrated probabilities, shape (n, labels), columns in the kind's label order."""
        if not texts:
            return np.zeros((0, len(self.manifest.labels_for(kind))))
        return self.calibrate(self.raw(texts, fragments=kind == "prompt"), kind)

    def _run(self, feed: dict[str, Any]) -> np.ndarray:
        out = self.session.run([self.manifest.output_name], feed)[0]
        return np.asarray(out, dtype=np.float64)

    def _run_tokens(self, ids: np.ndarray, mask: np.ndarray,
                    gate: float | None = None) -> np.ndarray:
        inp = self.manifest.input
        feed: dict[str, Any] = {inp.name: ids}
        if inp.attention_mask:
            feed[inp.attention_mask] = mask
        if self.cascade is not None:
            return self.cascade.run(feed, mask, gate)
        return self._run(feed)

    def _token_feed(self, texts: Sequence[str]) -> dict[str, Any]:
        inp = self.manifest.input
        assert self._tokenizer is not None and inp.max_length is not None
        encodings = self._tokenizer.encode_batch(list(texts))
        n, width = len(texts), min(inp.max_length, max(len(e.ids) for e in encodings) or 1)
        ids = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, enc in enumerate(encodings):
            row = enc.ids[:width]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feed: dict[str, Any] = {inp.name: ids}
        if inp.attention_mask:
            feed[inp.attention_mask] = mask
        return feed


def load_model(directory: Path = DEFAULT_MODEL_DIR, *, manifest_name: str = "manifest.json",
               allow_gpu: bool = True, intra_op_threads: int = 0,
               variant: Variant | None = None, cache_dir: Path | None = None) -> LoadedModel:
    """Read the manifest in ``directory``, verify and open its model; typed errors throughout.

    An encoder model's graph is built once from its pinned package and the trained tensors, in
    the precision of the device that runs it (``variant`` overrides), and cached."""
    manifest = read_manifest(directory / manifest_name, known_categories=policy_categories())
    model_path = directory / manifest.model_file
    if not model_path.is_file():
        raise ModelLoadError(f"model file not found: {model_path}")
    model_sha = sha256_file(model_path)
    if manifest.sha256 is not None and model_sha != manifest.sha256:
        raise ModelLoadError(f"model file {model_path.name} does not match the manifest sha256")

    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only: no provider-fallback chatter
    requested = choose_providers(ort.get_available_providers(), allow_gpu=allow_gpu)
    tokenizer: Any = None
    windows: TokenWindows | None = None
    graphs: tuple[Path, ...] = (model_path,)
    chosen = "fp32"
    if manifest.encoder is not None:
        chosen = variant or ("fp16" if requested[0] == "CUDAExecutionProvider" else "int8")
        graphs, tokenizer_json = built_graphs(manifest.encoder, model_path, model_sha, chosen,
                                              cache_dir)
        tokenizer = tokenizer_from_json(tokenizer_json)
        windows = TokenWindows(tokenizer, manifest.encoder.max_length, manifest.encoder.stride,
                               manifest.encoder.prefix, manifest.encoder.fine_length)
    elif manifest.input.kind == "token_ids":
        tokenizer = _load_tokenizer(directory, manifest)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = intra_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if requested[0] == "CPUExecutionProvider":
        # Idle intra-op threads sleep instead of spinning: the gates' inline scoring and the
        # background scoring share the cores with each other and the rest of the stack, and a
        # spinning pool steals them (a 300-character text alone: p99 45 -> 25 ms on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sessions = [ort.InferenceSession(str(path), sess_options=options, providers=requested)
                    for path in graphs]
    except Exception as exc:  # onnxruntime raises its own pybind types: map at the boundary
        raise ModelLoadError(
            f"ONNX Runtime cannot load {model_path.name}: {type(exc).__name__}"
        ) from None
    session = sessions[0]
    cascade = None
    if len(sessions) == 2:
        blend = Blend.from_trained(read_tensors(model_path))
        assert blend is not None  # built_graphs splits a model in two only when it has one
        cascade = CascadeRunner(sessions[0], sessions[1], blend)
    in_use = tuple(session.get_providers())
    _check_signature(session, manifest)
    provider = in_use[0] if in_use else "unknown"
    if requested[0] != provider:
        log.warning("classifier %s asked for %s, runs on %s", manifest.name, requested[0], provider)
    log.info("classifier %s %s loaded on %s (%s)", manifest.name, manifest.version, provider,
             chosen)
    return LoadedModel(manifest, session, provider, in_use, tokenizer, chosen, windows,
                       cascade)


def _load_tokenizer(directory: Path, manifest: ModelManifest) -> Any:
    try:
        from tokenizers import Tokenizer  # type: ignore[import-not-found]
    except ImportError:
        raise ModelLoadError(
            "token_ids models need the 'tokenizers' package (pip install tokenizers)"
        ) from None
    assert manifest.input.tokenizer is not None
    path = directory / manifest.input.tokenizer
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ModelLoadError(f"tokenizer {path.name} unusable: {type(exc).__name__}") from None


def _check_signature(session: Any, manifest: ModelManifest) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    problems = []
    if manifest.input.name not in inputs:
        problems.append(f"input {manifest.input.name!r} not in model (has {sorted(inputs)})")
    elif manifest.input.kind == "string" and inputs[manifest.input.name].type != "tensor(string)":
        problems.append(f"input {manifest.input.name!r} is {inputs[manifest.input.name].type}, "
                        "the manifest says string")
    if manifest.output_name not in outputs:
        problems.append(f"output {manifest.output_name!r} not in model (has {sorted(outputs)})")
    else:
        shape = outputs[manifest.output_name].shape
        width = shape[-1] if shape else None
        if isinstance(width, int) and width < len(manifest.labels):
            problems.append(f"output has {width} columns; the manifest names "
                            f"{len(manifest.labels)} labels")
    if problems:
        raise ModelLoadError("model does not match its manifest: " + "; ".join(problems))
