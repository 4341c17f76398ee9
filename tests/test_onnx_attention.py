"""ONNX Attention-24/25 attribute cases: the numpy oracle agrees with onnx.reference, and each
attribute changes the answer by more than the tolerance (so a backend ignoring it fails)."""

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from cases import onnx_attention as oa
from harness.tolerances import get


@pytest.mark.parametrize("case", oa.cases("quick"), ids=lambda c: c.id)
def test_oracle_agrees_with_onnx_reference(case):
    built = case.build()
    tol = get(case.tolerance)
    (y,) = ReferenceEvaluator(built.model).run(None, built.feeds[0])
    np.testing.assert_allclose(y.astype(np.float64), built.expected[0]["Y"], atol=tol.atol, rtol=tol.rtol)


@pytest.mark.parametrize("option", [o for o in oa.OPTIONS if o != "plain"])
def test_each_option_is_visible(option):
    case = next(c for c in oa.cases("quick") if c.features["option"] == option and c.features["layout"] == "gqa"
                and c.features["dtype"] == "fp32")
    built = case.build()
    f = built.feeds[0]
    plain = oa.oracle(f["Q"], f["K"], f["V"], 4, 2, None, 0.0, False)
    tol = get(case.tolerance)
    assert not np.allclose(plain, built.expected[0]["Y"], atol=tol.atol, rtol=tol.rtol)


def test_gqa_head_grouping_by_hand():
    """Query head i reads KV head i // (q_num_heads / kv_num_heads): with one key per batch the
    output of query head i is that KV head's value row."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 1, 4 * oa.HEAD))
    k = rng.standard_normal((1, 1, 2 * oa.HEAD))
    v = rng.standard_normal((1, 1, 2 * oa.HEAD))
    y = oa.oracle(q, k, v, 4, 2, None, 0.0, False).reshape(4, oa.HEAD)
    vh = v.reshape(2, oa.HEAD)
    for i, kv in enumerate([0, 0, 1, 1]):
        np.testing.assert_allclose(y[i], vh[kv])
