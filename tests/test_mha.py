"""MultiHeadAttention: the reference reads the text's masks as documented (checked with a zero
query, where attention is the mean of the visible values), and agrees with the Attention-23
oracle on every quick case."""

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from cases import mha
from harness.refops.mha import multi_head_attention
from harness.tolerances import get


def _zero_query(b, s, kv, n, h, rng):
    q = np.zeros((b, s, n * h))
    k = rng.standard_normal((b, kv, n * h))
    v = rng.standard_normal((b, kv, n * h))
    return q, k, v


def test_unidirectional_with_a_past_sees_the_past_and_itself():
    rng = np.random.default_rng(0)
    q, k, v = _zero_query(1, 2, 2, 1, 4, rng)
    pk = rng.standard_normal((1, 1, 3, 4))
    pv = rng.standard_normal((1, 1, 3, 4))
    out, pres_k, pres_v = multi_head_attention(q, k, v, past_key=pk, past_value=pv, num_heads=1, unidirectional=1)
    allv = np.concatenate([pv[0, 0], v[0]], axis=0)  # 5 rows: 3 past, 2 new
    np.testing.assert_allclose(out[0, 0], allv[:4].mean(0))  # query 0 is at position 3
    np.testing.assert_allclose(out[0, 1], allv.mean(0))
    np.testing.assert_allclose(pres_v[0, 0], allv)
    assert pres_k.shape == (1, 1, 5, 4)


@pytest.mark.parametrize("form", ["lens", "pad2d"])
def test_key_padding_mask_forms(form):
    rng = np.random.default_rng(1)
    q, k, v = _zero_query(2, 1, 4, 1, 4, rng)
    mask = np.array([4, 2], np.int32) if form == "lens" else np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int32)
    out, _, _ = multi_head_attention(q, k, v, key_padding_mask=mask, num_heads=1)
    np.testing.assert_allclose(out[0, 0], v[0].mean(0))
    np.testing.assert_allclose(out[1, 0], v[1, :2].mean(0), atol=1e-12)  # exp(-10000) is 0 in float64


def test_bias_and_scale():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((1, 1, 2))
    k = rng.standard_normal((1, 3, 2))
    v = rng.standard_normal((1, 3, 2))
    bias = rng.standard_normal(6)
    out, _, _ = multi_head_attention(q, k, v, bias=bias, num_heads=1, scale=0.3)
    qq, kk, vv = q[0, 0] + bias[:2], k[0] + bias[2:4], v[0] + bias[4:]
    s = kk @ qq * 0.3
    w = np.exp(s) / np.exp(s).sum()
    np.testing.assert_allclose(out[0, 0], w @ vv)


@pytest.mark.parametrize("case", mha.cases("quick"), ids=lambda c: c.id)
def test_reference_agrees_with_the_oracle(case):
    from harness.refops import all_ops

    built = case.build()
    tol = get(case.tolerance)
    got = ReferenceEvaluator(built.model, new_ops=all_ops()).run(None, built.feeds[0])
    names = [o.name for o in built.model.graph.output]
    for name, value in zip(names, got):
        np.testing.assert_allclose(value.astype(np.float64), built.expected[0][name], atol=tol.atol, rtol=tol.rtol)


def test_every_input_form_is_wired():
    nodes = [c.build().model.graph.node[0] for c in mha.cases("quick")]
    wired = {i for n in nodes for i, name in enumerate(n.input) if name}
    assert wired == {0, 1, 2, 3, 4, 5, 6, 7}
    assert {c.features["key_padding_mask"] for c in mha.cases("quick")} == {"none", "pad2d", "lens"}


def test_mask_filter_value_readings_differ_and_replace_is_exact():
    """M2: with mask_filter_value -2 the padded keys stay in play, so adding and replacing differ;
    under the replace reading a padded key's weight is exp(-2) relative to exp(score) of the others."""
    from harness import readings

    case = next(c for c in mha.cases("quick") if c.features.get("mask_filter_value"))
    built = case.build()
    alt = built.alternates[readings.MASK_FILTER_REPLACES][0]["output"]
    exp = built.expected[0]["output"]
    tol = get(case.tolerance)
    assert not np.allclose(alt, exp, atol=tol.atol, rtol=tol.rtol)
    f = built.feeds[0]
    q, k, v, m = (f[n].astype(np.float64) for n in ("query", "key", "value", "key_padding_mask"))
    b, h = 1, 16  # batch entry 1 has its last key padded; head 0
    s = q[b, :, :h] @ k[b, :, :h].T / 4.0
    s[:, m[b] == 0] = -2.0
    w = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    np.testing.assert_allclose(alt[b, :, :h], w @ v[b, :, :h], rtol=1e-9)
