"""The CPU graph's int8 matrix products, quantised per row: a window's score is its own.

ONNX Runtime's dynamic quantisation (``quantize_dynamic``) picks one activation scale per input
tensor, i.e. per batch: the largest value of any window in the batch, padding included, sets
every window's rounding. The same text then scored 0.59 alone and 0.30 to 0.75 beside others
(``benchmarks/classifier_batch_invariance.py``: 19 strike decisions flipped over 382 texts), so
strikes flapped and the score cache and exact replay held scores a rerun would not give.

Here each weight product ``x @ W + b`` is rewritten as: ``W`` quantised symmetrically per output
column, each row of ``x`` (one token of one window) quantised symmetrically with its own scale
(its largest |value| / 127), the product in int32, scaled back by the column's and the row's
scales. A row's result then depends on that row alone; attention products and everything else
stay fp32. Per-row scales are also finer than one per batch: closer to fp32.

The row is stored as uint8 around a zero point of 128 and the weights in 7 bits (+-63), as ONNX
Runtime's ``reduce_range``: its fast u8 x s8 kernel on AVX2 without VNNI adds pairs of products in
16 bits (VPMADDUBSW), which saturate past 2 x 255 x 63 (a one-product graph with 8-bit weights:
|error| 3.9 against the exact quantised product). The s8 x s8 kernel is exact but 4 times slower
there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ZERO_POINT = 128  # the row's int8 values stored as uint8: q + 128
WEIGHT_MAX = 63  # 7-bit weights: no 16-bit saturation in the u8 x s8 kernel


def per_row_int8(fp32: bytes) -> bytes:
    """The graph with every MatMul by a 2-D weight replaced by a per-row int8 product."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(fp32)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    shared = {
        "qmax": numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), "i8.inv127"),
        "tiny": numpy_helper.from_array(np.array(1e-30, np.float32), "i8.tiny"),
        "one": numpy_helper.from_array(np.array(1.0, np.float32), "i8.one"),
        "ax1": numpy_helper.from_array(np.array([1], np.int64), "i8.ax1"),
        "zp": numpy_helper.from_array(np.array(ZERO_POINT, np.uint8), "i8.zp"),
    }
    new_inits: list[Any] = list(shared.values())

    def shape_const(*dims: int) -> str:
        name = "i8.shape." + "_".join(str(d) for d in dims)
        if all(i.name != name for i in new_inits):
            new_inits.append(numpy_helper.from_array(np.array(dims, np.int64), name))
        return name

    nodes: list[Any] = []
    dropped: set[str] = set()
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight).astype(np.float32)
        col = np.maximum(np.abs(w).max(axis=0), 1e-30) / WEIGHT_MAX
        wq = np.clip(np.rint(w / col), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
        stem = node.output[0]
        new_inits += [numpy_helper.from_array(wq, f"{stem}.wq"),
                      numpy_helper.from_array(col.astype(np.float32), f"{stem}.ws")]
        if consumers.get(weight.name, 0) == 1:
            dropped.add(weight.name)
        x = node.input[0]

        def op(kind: str, inputs: list[str], suffix: str, stem: str = stem,
               **attrs: Any) -> str:
            out = f"{stem}.{suffix}"
            nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
            return out

        # rows: every token of every window, [rows, in]; one scale each
        flat = op("Reshape", [x, shape_const(-1, w.shape[0])], "flat")
        amax = op("ReduceMax", [op("Abs", [flat], "abs")], "amax", axes=[1], keepdims=0)
        scale = op("Max", [op("Mul", [amax, "i8.inv127"], "s0"), "i8.tiny"], "scale")
        zero = op("Expand", ["i8.zp", op("Shape", [scale], "rows")], "zps")
        q = op("QuantizeLinear", [flat, scale, zero], "xq", axis=0)  # within +-127, + 128
        # the product scaled by the columns' scales (one kernel), then by the rows'
        y = op("MatMulIntegerToFloat", [q, f"{stem}.wq", "i8.one", f"{stem}.ws", "i8.zp"],
               "cols", domain="com.microsoft")
        y = op("Mul", [y, op("Unsqueeze", [scale, "i8.ax1"], "scale2")], "y")
        out_shape = op("Concat", [op("Shape", [x], "lead", end=-1), shape_const(w.shape[1])],
                       "shape", axis=0)
        nodes.append(helper.make_node("Reshape", [y, out_shape], [stem], name=stem))
    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return bytes(model.SerializeToString())
