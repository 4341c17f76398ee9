"""A small builder for the ONNX graphs cases and oracles are made of, and a runner for
onnx.reference. Keeps case modules to the node, its inputs and its expected outputs."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS = "com.microsoft"


def np_to_tensor_type(dtype: Any) -> int:
    d = np.dtype(dtype)
    if d.name == "bfloat16":
        return onnx.TensorProto.BFLOAT16
    if d.name == "int4":
        return onnx.TensorProto.INT4
    if d.name == "uint4":
        return onnx.TensorProto.UINT4
    return helper.np_dtype_to_tensor_dtype(d)


def value_info(name: str, dtype: Any, shape: Sequence[int | str | None] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, np_to_tensor_type(dtype), None if shape is None else list(shape))


def make_model(nodes: Iterable[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
               outputs: Sequence[onnx.ValueInfoProto], opset: int = 21, ms_opset: int | None = 1,
               initializers: Sequence[onnx.TensorProto] = (), name: str = "case") -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)]
    if ms_opset is not None:
        opsets.append(helper.make_opsetid(MS, ms_opset))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="onnx-compat")
    model.ir_version = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    return model


def single_node_model(node: onnx.NodeProto, feeds: Mapping[str, np.ndarray],
                      outputs: Mapping[str, tuple[Any, Sequence[int | None] | None]], opset: int = 21,
                      initializers: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """One node; graph inputs typed from the feed arrays; outputs given as name -> (dtype, shape)."""
    inits = [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()]
    ins = [value_info(n, a.dtype, a.shape) for n, a in feeds.items()]
    outs = [value_info(n, dt, shp) for n, (dt, shp) in outputs.items()]
    return make_model([node], ins, outs, opset=opset, ms_opset=1 if node.domain == MS else None, initializers=inits)


class GraphBuilder:
    """g = GraphBuilder(); x = g.input('x', np.float64, [2, 3]); y = g.op('Relu', x); g.output(y, ...)."""

    def __init__(self, opset: int = 23):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def input(self, name: str, dtype: Any, shape: Sequence[int | str | None] | None = None) -> str:
        self.inputs.append(value_info(name, dtype, shape))
        return name

    def const(self, value: Any, dtype: Any = None) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self._name("c")
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, *inputs: str | None, outputs: int = 1, domain: str = "", **attrs: Any):
        outs = [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, [i or "" for i in inputs], outs, domain=domain or None, **attrs))
        return outs[0] if outputs == 1 else tuple(outs)

    def output(self, name: str, dtype: Any = np.float64, shape: Sequence[int | None] | None = None, rename: str | None = None) -> str:
        if rename:
            self.nodes.append(helper.make_node("Identity", [name], [rename]))
            name = rename
        self.outputs.append(value_info(name, dtype, shape))
        return name

    def model(self) -> onnx.ModelProto:
        return make_model(self.nodes, self.inputs, self.outputs, opset=self.opset, ms_opset=None,
                          initializers=self.inits, name="oracle")


def run_reference(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], new_ops: list | None = None) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    ev = ReferenceEvaluator(model, new_ops=new_ops or None)
    names = [i.name for i in model.graph.input]
    values = ev.run(None, {k: v for k, v in feeds.items() if k in names})
    return dict(zip([o.name for o in model.graph.output], values))
