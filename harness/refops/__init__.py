"""numpy implementations of the ops onnx.reference lacks (ORT contrib ops), written from the
operator schema text that ORT ships (`get_all_operator_schema()`), never from ORT's kernels.
Each module documents the schema sentences it relies on and the readings it chose where the
text is ambiguous. Maths runs in float64; outputs are rounded once to the declared type."""

from __future__ import annotations


def all_ops() -> list[type]:
    from . import gqa, norms, quant, rotary

    return [*norms.OPS, *rotary.OPS, *gqa.OPS, *quant.OPS]
