"""Records as JSON holds them: every cell's record, a case's features and `locate`'s findings pass
here on their way to results.jsonl."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def clean_for_json(obj: Any) -> Any:
    """Floats that JSON cannot hold (NaN/Inf) become strings; numpy scalars become Python ones.
    Every record of every cell passes here: a dict's plain leaves (str, int, bool, None, finite
    float: nearly all of a record) are kept without a call each."""
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:  # most of a record: nothing to convert
        return obj
    if t is float:
        return obj if math.isfinite(obj) else str(obj)
    if t is dict:
        return {k if type(k) is str else str(k):
                v if ((tv := type(v)) is str or tv is int or tv is bool or v is None
                      or (tv is float and math.isfinite(v))) else clean_for_json(v)
                for k, v in obj.items()}
    if isinstance(obj, dict):
        return {str(k): clean_for_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_for_json(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else str(f)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj

