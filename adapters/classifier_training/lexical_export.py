"""The lexical model's export: the fitted vectoriser and linear layer as one ONNX graph (a string
tensor in, one logit per category out), the manifest file beside it, and the check that the
ONNX graph scores as scikit-learn does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from safeguards.adapters.classifier.manifest import ModelManifest
from safeguards.adapters.classifier_training.sources import Example


def write_manifest(out_dir: Path, manifest: ModelManifest) -> None:
    (out_dir / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2) + "\n")


def onnx_parity(vec: Any, weights: np.ndarray, bias: np.ndarray, model: Any,
                examples: list[Example]) -> float:
    """The largest difference between scikit-learn's and the exported model's logits."""
    texts = [e.text for e in examples[:2000]]
    ref = vec.transform(texts) @ weights + bias
    got = model.raw(texts)
    return float(np.max(np.abs(np.asarray(ref) - got)))


def export_onnx(vec: Any, weights: np.ndarray, bias: np.ndarray, *,
                token_pattern: str) -> bytes:
    """The serialised ONNX graph: ``vec`` (tokenising with ``token_pattern``, the regex it was
    fitted with) followed by the linear layer ``weights`` and ``bias``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType

    onx = convert_sklearn(
        vec, initial_types=[("text", StringTensorType([None]))],
        options={id(vec): {"tokenexp": token_pattern}},
        target_opset=17,
    )
    graph = onx.graph
    for node in graph.node:
        if node.op_type == "StringNormalizer":
            # ONNX Runtime builds the named C++ locale; en_US.UTF-8 is missing on slim
            # images, C.UTF-8 is always there and lowercases ASCII the same way.
            kept = [a for a in node.attribute if a.name != "locale"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("locale", "C.UTF-8")])
    # The ai.onnx.ml Normalizer over the dense 60k-wide TF-IDF row is most of the run time.
    # L2 normalisation commutes with the linear layer: (x/|x|) W = (x W)/|x|, so drop the
    # Normalizer, multiply the raw TF-IDF row, and divide the 8 logits by the row's norm.
    norm_nodes = [n for n in graph.node if n.op_type == "Normalizer"]
    if len(norm_nodes) != 1:
        raise ValueError("expected one Normalizer in the exported vectoriser")
    norm = norm_nodes[0]
    raw_tfidf = norm.input[0]
    graph.node.remove(norm)
    for n in [n for n in graph.node if n.op_type == "Identity" and n.input[0] == norm.output[0]]:
        graph.node.remove(n)
    graph.initializer.extend([
        numpy_helper.from_array(weights, "sg_weights"),
        numpy_helper.from_array(bias, "sg_bias"),
        numpy_helper.from_array(np.array([1e-12], dtype=np.float32), "sg_eps"),
    ])
    graph.node.extend([
        helper.make_node("MatMul", [raw_tfidf, "sg_weights"], ["sg_matmul"]),
        helper.make_node("ReduceL2", [raw_tfidf], ["sg_norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["sg_norm", "sg_eps"], ["sg_norm_safe"]),
        helper.make_node("Div", ["sg_matmul", "sg_norm_safe"], ["sg_scaled"]),
        helper.make_node("Add", ["sg_scaled", "sg_bias"], ["logits"]),
    ])
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                       [None, weights.shape[1]])])
    onx.producer_name = "safeguards-classifier-train"
    graph.name = "safeguards_classifier"  # skl2onnx names graphs with a random uuid
    # and lists opset imports in set order, which string hash randomisation changes per process
    imports = sorted(onx.opset_import, key=lambda o: o.domain)
    del onx.opset_import[:]
    onx.opset_import.extend(imports)
    onnx.checker.check_model(onx)
    data: bytes = onx.SerializeToString()
    return data
