"""The pattern onnxruntime's QDQ int4 weight quantisation emits: a blocked int4/uint4
DequantizeLinear (opset 21, axis 0, weights as initializers) feeding a MatMul — two standard
nodes, no contrib op. It is what `MatMulNBitsQuantizer(quant_format=QDQ)` writes, and what a
runtime may fuse into its own 4-bit kernel: the `ort-cpu` and `ort-cpu-noopt` columns differ
exactly when a graph fusion changes the numbers.

Models come from onnxruntime's own quantizer (symmetric int4, asymmetric uint4 with zero
points, blocks of 32/128, channel-wise, and the transposed form it writes for symmetric
channel-wise weights); a float16 variant converts A and the scales. Oracle: the block formula
in numpy on the stored nibbles, then the matmul, in float64 (no DequantizeLinear involved).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from cases.dequantize import blockwise
from harness.case import Built, Case, dtype_name
from harness.data import normal, up
from harness.families import Family, Row
from harness.graph import make_model, value_info
from harness.quantize import ort_quantize

FAMILY = Family(
    marks={"qdq_matmul": "the QDQ int4 pattern: blocked DequantizeLinear feeding MatMul"},
    rows=[Row("QDQ int4 DequantizeLinear -> MatMul", "onnxruntime QDQ int4 weight quantisation (issue 16)",
              m="qdq_matmul")],
)

SHAPES = {"qwen2-q": (896, 128), "phi3-qkv": (3072, 96), "edge-64": (64, 48), "gemma3-q": (1152, 128)}


def ort_qdq(model: onnx.ModelProto, block: int, symmetric: bool, channelwise: bool) -> onnx.ModelProto:
    """onnxruntime's MatMulNBitsQuantizer with quant_format=QDQ (RTN), as an exporter runs it."""
    return ort_quantize(model, 4, block, symmetric, None, qdq=True, channelwise=channelwise)


def _case(shape: str, block: int, symmetric: bool, channelwise: bool, dtype) -> Case:
    k, n = SHAPES[shape]
    dt = dtype_name(dtype)
    blk = "cw" if channelwise else f"bs{block}"
    cid = f"qdq_matmul/ortqdq-{shape}-k{k}n{n}-int4-{blk}-{'sym' if symmetric else 'asym'}-{dt}"

    def make(rng: np.random.Generator) -> Built:
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        a_shape = (2, 5, k)
        a = normal(rng, a_shape, dtype)
        node = helper.make_node("MatMul", ["A", "W"], ["Y"])
        f = make_model([node], [value_info("A", np.float32, a_shape)], [value_info("Y", np.float32, [2, 5, n])],
                       ms_opset=None, initializers=[numpy_helper.from_array(w, "W")])
        qm = ort_qdq(f, k if channelwise else block, symmetric, channelwise)
        types = [x.op_type for x in qm.graph.node]
        inits = {i.name: numpy_helper.to_array(i) for i in qm.graph.initializer}
        dq = next(x for x in qm.graph.node if x.op_type == "DequantizeLinear")
        attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute}
        q = inits[dq.input[0]]
        scale = inits[dq.input[1]]
        zp = inits[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else None
        if np.dtype(dtype) != np.float32:  # an fp16 export: activations and scales in float16
            scale = scale.astype(dtype)
            for init in qm.graph.initializer:
                if init.name == dq.input[1]:
                    init.CopyFrom(numpy_helper.from_array(scale, init.name))
            for vi in list(qm.graph.input) + list(qm.graph.output):
                vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
        wq = blockwise(q, scale, zp, attrs.get("axis", 1), attrs["block_size"])
        if "Transpose" in types:  # the quantizer's (N, K) form for symmetric channel-wise weights
            wq = wq.T
        expected = up(a) @ wq
        return Built(qm, [{"A": a}], [{"Y": expected}],
                     oracle="block formula on the stored nibbles + MatMul, numpy float64")

    feats = {"source": "ort-quantizer-qdq", "shape": shape, "K": k, "N": n, "bits": 4,
             "block_size": "channel" if channelwise else block, "symmetric": int(symmetric), "dtype": dt}
    marks = ("quant", "qdq_matmul") + (("fp16",) if dt == "fp16" else ())
    return Case(cid, "qdq_matmul", feats, marks, f"{dt}-blockq-matmul", make)


def cases(grid_name: str = "quick") -> list[Case]:
    full = grid_name == "full"
    out: list[Case] = []
    for shape in (list(SHAPES) if full else ["qwen2-q", "edge-64"]):
        for block in ((32, 128) if full else (32,)):
            for sym in (True, False):
                for dtype in ((np.float32, np.float16) if full else (np.float32,)):
                    out.append(_case(shape, block, sym, False, dtype))
        for sym in (True, False):
            out.append(_case(shape, 0, sym, True, np.float32))
    if not full:
        out.append(_case("qwen2-q", 32, False, False, np.float16))
    return out
