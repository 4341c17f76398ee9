"""Cutting an ONNX graph for `locate` (and `extract`): every node output exposed as a graph
output, the prefix ending at node k, one node alone fed recorded values. Polygraphy's
intermediates and bisection need exactly these three cuts."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper


def node_key(node: onnx.NodeProto, i: int) -> str:
    return f"{i}:{node.name}"


def node_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, onnx.TensorProto):
            v = f"tensor{list(v.dims)}"
        elif isinstance(v, (list, tuple)):
            v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v][:16]
        elif isinstance(v, onnx.GraphProto):
            v = f"graph {v.name}"
        out[a.name] = v
    return out


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _typed(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Value infos from shape inference (com.microsoft ops may stay untyped)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - untyped outputs are still outputs
        return {}
    return {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def _float_output(node: onnx.NodeProto, name: str, typed: Mapping[str, onnx.ValueInfoProto]) -> bool:
    """Typed as a float by shape inference, or (untyped) the first output of a com.microsoft
    compute op, which onnx's shape inference does not know (MatMulNBits, GroupQueryAttention...)."""
    if name in typed and typed[name].type.tensor_type.elem_type:
        return typed[name].type.tensor_type.elem_type in _FLOAT_TYPES
    return node.domain == "com.microsoft" and bool(node.output) and name == node.output[0]


def expose_all(model: onnx.ModelProto, floats_only: bool = False) -> onnx.ModelProto:
    """A copy whose every (named) top-level node output is also a graph output; `floats_only`:
    only those shape inference types as floating point (a runtime that computes shapes in its
    own dimension type, as tract does, refuses them as outputs)."""
    m = _copy(model)
    have = {o.name for o in m.graph.output}
    typed = _typed(model)
    for node in m.graph.node:
        for o in node.output:
            if floats_only and not _float_output(node, o, typed):
                continue
            if o and o not in have:
                vi = onnx.ValueInfoProto()
                if o in typed and typed[o].type.tensor_type.elem_type:
                    vi.CopyFrom(typed[o])
                    vi.type.tensor_type.ClearField("shape")  # the backend's own shapes, not inference's guess
                else:
                    vi.name = o
                m.graph.output.append(vi)
                have.add(o)
    return m


def _used_initializers(model: onnx.ModelProto, nodes) -> list[onnx.TensorProto]:
    used = {i for n in nodes for i in n.input}
    return [t for t in model.graph.initializer if t.name in used]


def prefix(model: onnx.ModelProto, k: int) -> onnx.ModelProto:
    """Nodes 0..k, outputs = node k's (named) outputs; the graph's inputs kept as they are."""
    nodes = list(model.graph.node[: k + 1])
    typed = _typed(model)
    outs = []
    for o in nodes[-1].output:
        if o:
            vi = onnx.ValueInfoProto()
            if o in typed and typed[o].type.tensor_type.elem_type:
                vi.CopyFrom(typed[o])
                vi.type.tensor_type.ClearField("shape")
            else:
                vi.name = o
            outs.append(vi)
    g = helper.make_graph(nodes, f"prefix_{k}", list(model.graph.input), outs,
                          initializer=_used_initializers(model, nodes))
    m = helper.make_model(g, opset_imports=list(model.opset_import), producer_name="onnx-compat locate")
    m.ir_version = model.ir_version
    return m


def single_node(model: onnx.ModelProto, node: onnx.NodeProto, values: Mapping[str, np.ndarray],
                produced: Mapping[str, onnx.NodeProto]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The node alone: inputs that were initialisers or Constant outputs stay constants; every
    other input becomes a graph input fed the reference's recorded value."""
    inits = {t.name: t for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    g_inputs, g_inits = [], []
    for name in node.input:
        if not name or name in feeds or any(t.name == name for t in g_inits):
            continue
        if name in inits:
            g_inits.append(inits[name])
        elif name in produced and produced[name].op_type == "Constant":
            g_inits.append(numpy_helper.from_array(np.asarray(values[name]), name))
        else:
            a = np.asarray(values[name])
            feeds[name] = a
            g_inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)))
    outs = []
    for o in node.output:
        if o:
            a = np.asarray(values[o]) if o in values else None
            outs.append(helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
                        if a is not None else helper.make_empty_tensor_value_info(o))
    g = helper.make_graph([node], f"node_{node.name or node.op_type}", g_inputs, outs, initializer=g_inits)
    m = helper.make_model(g, opset_imports=list(model.opset_import), producer_name="onnx-compat locate")
    m.ir_version = model.ir_version
    return m, feeds
