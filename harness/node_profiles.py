"""Which tolerance profile a single node's output is judged by, for `locate` (and `extract`): its
op class at its dtype, and for nodes that only move values the loosest profile of what fed
them. The same bounds as the matrix (harness/tolerances.py), applied per node."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import onnx

from . import tolerances
from .compare import tensor_metrics
from .subgraph import node_attrs, node_key

#: op type -> op class of harness/tolerances.py; anything not listed is per-element maths
#: ("pointwise"). Matmuls share the blocked-matmul profile: its bound is the float32 dot
#: product's rounding, which is all a plain MatMul/Gemm does too.
OP_CLASS = {
    **dict.fromkeys(["GroupQueryAttention", "Attention", "MultiHeadAttention", "SparseAttention", "Softmax",
                     "LogSoftmax", "PackedMultiHeadAttention"], "attention"),
    **dict.fromkeys(["SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "LayerNormalization",
                     "SkipLayerNormalization", "RMSNormalization", "ReduceMean", "ReduceSum", "ReduceL2",
                     "ReduceSumSquare", "ReduceMax", "ReduceMin", "CumSum"], "reduction"),
    **dict.fromkeys(["Gelu", "FastGelu", "BiasGelu", "QuickGelu", "Erf", "Tanh", "Sigmoid"], "activation"),
    **dict.fromkeys(["MatMul", "Gemm", "MatMulNBits", "MatMulInteger", "FusedMatMul", "MatMulIntegerToFloat",
                     "QMoE"], "blockq-matmul"),
    **dict.fromkeys(["Gather", "GatherElements", "GatherND", "GatherBlockQuantized", "DequantizeLinear", "Reshape",
                     "Transpose", "Concat", "Slice", "Squeeze", "Unsqueeze", "Expand", "Shape", "Size", "Cast",
                     "Identity", "Where", "Split", "ScatterND", "ScatterElements", "Tile", "Range", "Constant",
                     "ConstantOfShape", "Flatten", "Pad", "Trilu", "Equal", "Less", "Greater", "And", "Or", "Not",
                     "ArgMax", "Max", "Min", "Neg", "Relu"], "gather"),
}


def op_profile(op_type: str, dtype: Any, attrs: Mapping[str, Any] | None = None) -> str:
    """The tolerance profile a node's output is judged by: its op class at its dtype. A
    MatMulNBits with accuracy_level 4 may quantise its activations to int8 (the schema says
    so): the int8-activation profile, as the matmulnbits family judges it."""
    cls = OP_CLASS.get(op_type, "pointwise")
    if op_type == "MatMulNBits" and int((attrs or {}).get("accuracy_level", 0)) == 4:
        return "int8act-blockq-matmul"
    d = np.dtype(dtype)
    name = "fp16" if d == np.float16 else "bf16" if d.name == "bfloat16" else "fp32"
    prof = f"{name}-{cls}"
    if prof not in tolerances.PROFILES:
        prof = f"{name}-attention" if f"{name}-attention" in tolerances.PROFILES else f"fp32-{cls}"
    return prof


def agree(actual: np.ndarray, expected: np.ndarray, profile: str) -> tuple[bool, dict[str, Any]]:
    """Within the profile (the matrix's rule: every element and the NMSE), with the metrics."""
    tol = tolerances.get(profile)
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        return False, {"shape": list(a.shape), "expected_shape": list(e.shape)}
    if e.dtype.kind not in "fiub" or e.size == 0:
        return True, {"n": int(e.size)}
    m = tensor_metrics(a, e, tol)
    ok = m["bad"] == 0 and (m.get("integer") or m["nmse"] <= tol.max_nmse)
    return bool(ok), m


def _looser(a: str, b: str) -> str:
    ta, tb = tolerances.get(a), tolerances.get(b)
    # atol_rms, like rtol, is a bound relative to the data (its RMS rather than each element)
    return a if (ta.rtol + ta.atol_rms, ta.atol) >= (tb.rtol + tb.atol_rms, tb.atol) else b


def node_profiles(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> dict[str, str]:
    """The profile each node is judged by, by node name or index. A node that only moves or
    selects values (the "gather" class: Reshape, Transpose, Where, Concat...) computes nothing
    of its own, so it carries the loosest profile of the computing nodes that produced its
    inputs: an exact bound on a reshaped matmul output would charge the Reshape with the
    matmul's rounding."""
    eff: dict[str, str] = {}
    out: dict[str, str] = {}
    for i, node in enumerate(model.graph.node):
        outs = [o for o in node.output if o]
        dt = next((np.asarray(values[o]).dtype for o in outs if o in values), np.dtype(np.float32))
        prof = op_profile(node.op_type, dt, node_attrs(node))
        if OP_CLASS.get(node.op_type) == "gather":
            for inp in node.input:
                if inp in eff:
                    prof = _looser(prof, eff[inp])
        out[node_key(node, i)] = prof
        for o in outs:
            eff[o] = prof
    return out
