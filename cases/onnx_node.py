"""ONNX's own node test cases for the standard ops LLM exports lean on — Attention,
RotaryEmbedding, RMSNormalization, blocked/4-bit DequantizeLinear — collected from the
installed `onnx.backend.test.case.node` modules. Their expected outputs are the oracle, and
their own tolerance rule (rtol 1e-3, atol 1e-7) is the profile.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np

from harness.case import Built, Case
from harness.families import Family

FAMILY = Family(marks={"onnx_node": "ONNX's own node test cases for the LLM-relevant standard ops"})

MODULES = {
    "attention": ("test_attention", ("attention", "onnx_node")),
    "rotaryembedding": ("test_rotary_embedding", ("rotary", "onnx_node")),
    "rmsnormalization": ("test_rms_normalization", ("norm", "onnx_node")),
    "dequantizelinear": ("test_dequantizelinear", ("dequantize", "quant", "onnx_node")),
}
DEQUANT_KEEP = ("blocked", "int4", "uint4")


def _collect() -> list:
    """The node cases of the four modules above. onnx's public `collect_testcases()` imports all
    ~1 900 node cases (about 10 s per process, and per pytest-xdist worker); importing the four
    modules registers theirs in the same list it returns, so that list is read directly, with the
    public function as the fallback should onnx rename it."""
    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mod in MODULES:
            importlib.import_module(f"onnx.backend.test.case.node.{mod}")
        registered = getattr(node_cases, "_NodeTestCases", None)
        return list(registered if registered is not None else node_cases.collect_testcases())


def _array(v) -> np.ndarray:
    """Node cases keep 4-bit and other non-numpy tensors as TensorProto; numpy_helper maps them
    to ml_dtypes arrays, which the backends take."""
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(v) if isinstance(v, TensorProto) else np.asarray(v)


def _make(tc):
    def make(_rng: np.random.Generator) -> Built:
        graph = tc.model.graph
        init_names = {i.name for i in graph.initializer}
        names = [i.name for i in graph.input if i.name not in init_names]
        inputs, outputs = tc.data_sets[0]
        feeds = {n: _array(v) for n, v in zip(names, inputs) if n}
        expected = {o.name: _array(v) for o, v in zip(graph.output, outputs)}
        return Built(tc.model, [feeds], [expected], oracle="ONNX node test expected outputs")

    return make


def _low_precision(tc) -> bool:
    outs = tc.data_sets[0][1]
    return any(_array(o).dtype.name in ("float16", "bfloat16") for o in outs)


def cases(grid_name: str = "quick") -> list[Case]:
    out: list[Case] = []
    for tc in _collect():
        for prefix, marks in MODULES.values():
            if tc.name.startswith(prefix):
                break
        else:
            continue
        if prefix == "test_dequantizelinear" and not any(k in tc.name for k in DEQUANT_KEEP):
            continue
        if tc.name.startswith("test_attention") and not tc.data_sets:
            continue
        name = tc.name[len("test_"):]
        op = tc.model.graph.node[0].op_type if len(tc.model.graph.node) == 1 else "expanded"
        opset = next((o.version for o in tc.model.opset_import if o.domain in ("", "ai.onnx")), None)
        feats = {"op": prefix[len("test_"):], "variant": name, "expanded": int(name.endswith("_expanded")),
                 "node": op, "opset": opset}
        low = _low_precision(tc)
        if low:
            marks = marks + ("fp16",)
        out.append(Case(f"onnx_node/{name}", "onnx_node", feats, marks,
                        "onnx-node-fp16" if low else "onnx-node", _make(tc)))
    return out
