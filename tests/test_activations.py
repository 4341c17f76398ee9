"""GELU-family activations and SkipLayerNormalization: the references match values derived by
hand from the operator text, the oracles agree with them, and the readings differ where they
are carried (an alternate that no tolerance can tell apart would name nothing)."""

import math

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from cases import activations, skip_layernorm
from harness import readings
from harness.refops import activations as ref_act
from harness.refops import layernorm as ref_ln
from harness.tolerances import get


def test_gelu_is_x_times_the_normal_cdf():
    # Phi(1) = 0.8413447460685429, Phi(-2) = 0.022750131948179195 (standard normal table values)
    got = ref_act.gelu_erf(np.array([1.0, -2.0]))
    np.testing.assert_allclose(got, [0.8413447460685429, -2 * 0.022750131948179195], rtol=1e-15)


def test_fastgelu_uses_the_texts_formula():
    x = 1.5
    want = 0.5 * x * (1 + math.tanh(0.797885 * x + 0.035677 * x ** 3))
    out = ref_act.fast_gelu(np.array([x]), np.array([0.25]))
    assert out[0] == pytest.approx(0.5 * 1.75 * (1 + math.tanh(0.797885 * 1.75 + 0.035677 * 1.75 ** 3)), rel=1e-15)
    assert ref_act.gelu_tanh(np.array([x]))[0] == pytest.approx(want, rel=1e-15)


def test_quickgelu_default_alpha_is_the_schemas():
    x = np.array([0.7, -3.0])
    got = ref_act.quick_gelu(x)
    np.testing.assert_allclose(got, x / (1 + np.exp(-1.702 * x)), rtol=1e-15)
    got2 = ref_act.quick_gelu(x, alpha=1.0)
    np.testing.assert_allclose(got2, x / (1 + np.exp(-x)), rtol=1e-15)


def test_skip_layernorm_by_hand():
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    skip = np.array([[0.0, 0.0, 0.0, 1.0]])  # (S, H) form, broadcast over the batch
    bias = np.array([0.0, 0.0, 0.0, -1.0])
    gamma = np.array([2.0, 2.0, 2.0, 2.0])
    beta = np.array([1.0, 1.0, 1.0, 1.0])
    y, mean, inv, s = ref_ln.skip_layer_norm(x, skip, gamma, beta, bias, epsilon=0.0)
    # s = [1, 2, 3, 4]: mean 2.5, population variance 1.25
    np.testing.assert_allclose(s, x)
    assert mean.shape == (1, 1, 1) and mean.item() == pytest.approx(2.5)
    assert inv.item() == pytest.approx(1 / math.sqrt(1.25), rel=1e-6)
    np.testing.assert_allclose(y, (x - 2.5) / math.sqrt(1.25) * 2 + 1, rtol=1e-6)


@pytest.mark.parametrize("family", [activations, skip_layernorm])
def test_reference_agrees_with_the_oracle_on_every_quick_case(family):
    from harness.refops import all_ops

    for case in family.cases("quick"):
        built = case.build()
        tol = get(case.tolerance)
        ev = ReferenceEvaluator(built.model, new_ops=all_ops())
        names = [o.name for o in built.model.graph.output]
        got = dict(zip(names, ev.run(None, built.feeds[0])))
        for name, want in built.expected[0].items():
            np.testing.assert_allclose(got[name].astype(np.float64), want, atol=tol.atol, rtol=tol.rtol,
                                       err_msg=case.id)


def test_gelu_tanh_reading_is_distinguishable():
    """The quick grid's float32 Gelu cases can tell erf from tanh (in float16 they cannot, so
    those carry none): the tanh form, ruled out by the text (A1), is carried as excluded, never
    as an alternate a backend could pass (`ambiguous`) with."""
    for case in activations.cases("quick"):
        if case.features["op"] not in ("gelu", "biasgelu"):
            continue
        built = case.build()
        assert not built.alternates, case.id
        if case.features["dtype"] != "fp32":
            assert not built.excluded, case.id
            continue
        (name, exp), = built.expected[0].items()
        alt = built.excluded[readings.GELU_TANH][0][name]
        tol = get(case.tolerance)
        assert np.any(np.abs(alt - exp) > tol.atol + tol.rtol * np.abs(exp)), case.id


def test_skip_layernorm_grid_wires_every_optional_input_and_output_and_skip_form():
    cs = skip_layernorm.cases("quick")
    nodes = [c.build().model.graph.node[0] for c in cs]
    assert any(len(n.input) == 5 and n.input[3] == "" and n.input[4] for n in nodes)  # bias without beta
    assert {c.features["skip"] for c in cs} == set(skip_layernorm.SKIP_FORMS)
    assert any(list(n.output) == ["output", "mean", "inv_std_var", "input_skip_bias_sum"] for n in nodes)


def test_readings_are_catalogued():
    assert readings.find_reading(readings.GELU_TANH)[0].id == "A1" and readings.is_excluded(readings.GELU_TANH)
    assert readings.find_reading(readings.SKIP_SUM_IN_T)[0].id == "A2"


def test_layernorm_profile_still_flags_a_dropped_mean():
    """fp32-layernorm's atol (1e-4, for the float32 mean's absolute error) stays far below what an
    RMS norm (no mean subtracted) gets wrong on the grid's large-mean inputs."""
    case = next(c for c in skip_layernorm.cases("quick") if c.features["dtype"] == "fp32")
    built = case.build()
    f = built.feeds[0]
    s = f["input"].astype(np.float64) + f["skip"].astype(np.float64)
    for name in ("bias",):
        if name in f:
            s = s + f[name].astype(np.float64)
    rms = s / np.sqrt((s * s).mean(-1, keepdims=True) + skip_layernorm.EPS) * f["gamma"].astype(np.float64)
    if "beta" in f:
        rms = rms + f["beta"].astype(np.float64)
    tol = get(case.tolerance)
    assert case.tolerance == "fp32-layernorm"
    assert not np.allclose(rms, built.expected[0]["output"], atol=tol.atol, rtol=tol.rtol)
