"""com.microsoft.Attention: mask_index forms read as the text describes (checked with zero
weights on Q, where attention is the mean of the visible values), and the reference agrees with
the projection + Attention-23 oracle on every quick case."""

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from cases import attention_ms
from harness.refops.attention_ms import attention
from harness.tolerances import get


def _setup(b=2, s=3, n=1, h=2):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((b, s, 4))
    w = rng.standard_normal((4, 3 * n * h))
    w[:, : n * h] = 0.0  # Q = 0: uniform attention over the visible keys
    v = x @ w[:, 2 * n * h:]
    return x, w, v


@pytest.mark.parametrize("form,visible", [
    ("right", [[0, 1, 2], [0]]),  # lengths 3 and 1
    ("left", [[1, 2], [0, 1]]),  # ends 3, 2 (exclusive) then starts 1, 0 (inclusive)
    ("raw2d", [[0, 2], [1]]),
])
def test_mask_index_forms(form, visible):
    x, w, v = _setup()
    mask = {"right": np.array([3, 1]), "left": np.array([3, 2, 1, 0]),
            "raw2d": np.array([[1, 0, 1], [0, 1, 0]])}[form]
    out, present = attention(x, w, mask_index=mask, num_heads=1)
    for b in range(2):
        for i in range(3):
            np.testing.assert_allclose(out[b, i], v[b, visible[b]].mean(0), atol=1e-12)
    assert present.shape == (2, 2, 1, 3, 2)


def test_raw3d_mask_is_per_query_row():
    x, w, v = _setup(b=1)
    mask = np.array([[[1, 0, 0], [1, 1, 0], [0, 0, 1]]])
    out, _ = attention(x, w, mask_index=mask, num_heads=1)
    for i, vis in enumerate([[0], [0, 1], [2]]):
        np.testing.assert_allclose(out[0, i], v[0, vis].mean(0), atol=1e-12)


def test_past_is_read_and_present_appends():
    x, w, v = _setup(b=1, s=1)
    past = np.random.default_rng(4).standard_normal((2, 1, 1, 2, 2))
    out, present = attention(x, w, past=past, num_heads=1, unidirectional=1)
    allv = np.concatenate([past[1, 0, 0], v[0]], axis=0)
    np.testing.assert_allclose(out[0, 0], allv.mean(0))
    np.testing.assert_allclose(present[1, 0, 0], allv)


@pytest.mark.parametrize("case", attention_ms.cases("quick"), ids=lambda c: c.id)
def test_reference_agrees_with_the_oracle(case):
    from harness.refops import all_ops

    built = case.build()
    tol = get(case.tolerance)
    got = ReferenceEvaluator(built.model, new_ops=all_ops()).run(None, built.feeds[0])
    names = [o.name for o in built.model.graph.output]
    for name, value in zip(names, got):
        np.testing.assert_allclose(value.astype(np.float64), built.expected[0][name], atol=tol.atol, rtol=tol.rtol)


def test_mask_filter_value_case_tells_the_readings_apart():
    from harness import readings

    case = next(c for c in attention_ms.cases("quick") if c.features.get("mask_filter_value"))
    built = case.build()
    f = built.feeds[0]
    alt = built.alternates[readings.MASK_FILTER_REPLACES][0]["output"]
    tol = get(case.tolerance)
    assert not np.allclose(alt, built.expected[0]["output"], atol=tol.atol, rtol=tol.rtol)
    # the replace reading by hand, head 0 of batch entry 1 (its last key masked)
    proj = f["input"].astype(np.float64) @ f["weights"].astype(np.float64) + f["bias"].astype(np.float64)
    h, n = 16, 2
    q, k, v = proj[1, :, :h], proj[1, :, n * h:n * h + h], proj[1, :, 2 * n * h:2 * n * h + h]
    s = q @ k.T / 4.0
    s[:, f["mask_index"][1] == 0] = -2.0
    w = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    np.testing.assert_allclose(alt[1, :, :h], w @ v, rtol=1e-9)
