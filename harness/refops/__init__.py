"""numpy implementations of the ops onnx.reference lacks (ORT contrib ops), written from the
operator schema text that ORT ships (`get_all_operator_schema()`), never from ORT's kernels.
Each module documents the schema sentences it relies on and the readings it chose where the
text is ambiguous. Maths runs in float64; outputs are rounded once to the declared type."""

from __future__ import annotations


def all_ops() -> list[type]:
    """Every op some family declares it needs (cases/<family>.py's FAMILY.reference_ops)."""
    from ..families import reference_ops

    return reference_ops()
