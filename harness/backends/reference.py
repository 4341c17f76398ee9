"""The reference runtime, the spec: onnx.reference plus this project's com.microsoft ops."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx

from .base import Backend, ModelRef, Session


class ReferenceSession(Session):
    def __init__(self, evaluator):
        self._ev = evaluator
        self._outputs = list(evaluator.output_names)
        self._inputs = set(evaluator.input_names)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self._inputs}
        values = self._ev.run(None, feeds)
        return dict(zip(self._outputs, values))


class Reference(Backend):
    name = "reference"
    description = "onnx.reference + onnx-compat's numpy com.microsoft ops (the spec)"
    native = False  # numpy and onnx.reference only: pytest runs it in its own process, at full speed

    def available(self) -> tuple[bool, str]:
        return True, ""

    def version(self) -> str:
        import onnx

        from .. import __version__

        return f"onnx.reference {onnx.__version__}; onnx-compat refops {__version__}"

    def prepare(self, model: ModelRef) -> Session:
        from onnx.reference import ReferenceEvaluator

        from ..refops import all_ops

        return ReferenceSession(ReferenceEvaluator(name_unused_outputs(model.proto), new_ops=all_ops()))


def name_unused_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy where every optional output a node leaves unnamed ("") gets a unique name.

    onnx.reference stores each node output under its name, "" included, and reads an omitted
    optional input as results[""]: after a node with an unnamed output (SkipSimplifiedLayer-
    Normalization's mean, say), every later omitted input receives that tensor instead of None
    (a GQA's omitted key got a norm's inv_std_var). Naming the outputs keeps "" meaning absent."""
    if not any(o == "" for n in model.graph.node for o in n.output):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, node in enumerate(out.graph.node):
        for j, name in enumerate(node.output):
            if name == "":
                node.output[j] = f"onnx_compat_unused_{i}_{j}"
    return out
