"""The reference backend keeps an omitted optional input absent, whatever unnamed outputs came before.

onnx.reference stores a node's unnamed ("") output under the key "", which is also where it looks
up omitted optional inputs; the real twins hit this (a GQA's omitted key and position_ids received
a norm's inv_std_var)."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper

from harness.backends.base import ModelRef
from harness.backends.reference import Reference, name_unused_outputs


def _model():
    nodes = [
        # TopK's second output (indices) left unnamed: onnx.reference stores it under ""
        helper.make_node("TopK", ["x", "k"], ["top", ""]),
        # Clip's min omitted: must mean "no lower bound", not the indices above
        helper.make_node("Clip", ["top", "", "hi"], ["y"]),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [2])],
                          initializer=[helper.make_tensor("k", T.INT64, [1], [2]),
                                       helper.make_tensor("hi", T.FLOAT, [], [10.0])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_an_omitted_optional_input_stays_absent_after_an_unnamed_output():
    x = np.array([-5.0, -7.0, -6.0, -9.0], np.float32)
    out = Reference().prepare(ModelRef(_model())).run({"x": x})
    np.testing.assert_array_equal(out["y"], np.array([-5.0, -6.0], np.float32))  # no min applied


def test_naming_leaves_the_callers_model_alone():
    m = _model()
    named = name_unused_outputs(m)
    assert m.graph.node[0].output[1] == ""
    assert named.graph.node[0].output[1] and named.graph.node[0].output[1] not in ("top", "y")


def test_gqa_with_zero_new_kv_rows_attends_to_the_past_it_is_given():
    """R18 (KV-shared layers): key/value of length 0, past holding all T rows. Derived here with
    plain numpy from the text's causal rule: query row s sits at position T - S + s."""
    from harness.refops.gqa import gqa

    rng = np.random.default_rng(0)
    b, s, n, nkv, h, t = 1, 3, 2, 1, 8, 5
    q = rng.standard_normal((b, s, n * h)).astype(np.float32)
    empty = np.zeros((b, 0, nkv * h), np.float32)
    pk = rng.standard_normal((b, nkv, t, h)).astype(np.float32)
    pv = rng.standard_normal((b, nkv, t, h)).astype(np.float32)
    out, present_k, _ = gqa(q, empty, empty, pk, pv, np.array([t - 1], np.int32), np.array(t, np.int32), None, None,
                            None, None, None, num_heads=n, kv_num_heads=nkv)[:3]
    want = np.zeros((s, n, h))
    for hq in range(n):
        for i in range(s):
            pos = t - s + i
            sc = pk[0, 0, : pos + 1].astype(np.float64) @ q[0, i, hq * h:(hq + 1) * h] / np.sqrt(h)
            p = np.exp(sc - sc.max())
            want[i, hq] = (p / p.sum()) @ pv[0, 0, : pos + 1]
    np.testing.assert_allclose(out.reshape(s, n, h), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(present_k, pk)  # no row appended


def test_fused_matmul_is_alpha_times_numpy_matmul_of_the_transposed_operands():
    from harness.refops.matmul import FusedMatMul  # noqa: F401 - registered through cases/zoo.py

    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 5, 3)).astype(np.float32)
    b = rng.standard_normal((2, 4, 5)).astype(np.float32)
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain="com.microsoft", alpha=0.5, transA=1, transB=1)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", T.FLOAT, [2, 5, 3]),
                                        helper.make_tensor_value_info("b", T.FLOAT, [2, 4, 5])],
                          [helper.make_tensor_value_info("y", T.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    y = Reference().prepare(ModelRef(m)).run({"a": a, "b": b})["y"]
    want = 0.5 * np.einsum("bkm,bnk->bmn", a.astype(np.float64), b.astype(np.float64))  # (A^T)(B^T), by hand
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
