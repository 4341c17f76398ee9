"""The reference keeps a MatMulNBits node's dequantised weight between runs of one session (a
zoo twin feeds the same initializer objects to every step); new weight bytes must never see the
kept one."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from harness.backends.base import ModelRef
from harness.backends.reference import Reference

K, N, BLOCK = 32, 4, 32


def _model():
    node = helper.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft",
                            K=K, N=N, bits=4, block_size=BLOCK)
    g = helper.make_graph([node], "mnb", [
        helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, K]),
        helper.make_tensor_value_info("B", TensorProto.UINT8, [N, 1, BLOCK // 2]),
        helper.make_tensor_value_info("scales", TensorProto.FLOAT, [N])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, N])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])


def _by_hand(a, packed, scales):
    """(q - 8) * scale, low nibble first, written out without the refops helpers."""
    q = np.empty((N, K))
    for n in range(N):
        for j in range(BLOCK // 2):
            byte = int(packed[n, 0, j])
            q[n, 2 * j], q[n, 2 * j + 1] = byte & 15, byte >> 4
    return (a.astype(np.float64) @ ((q - 8) * scales[:, None].astype(np.float64)).T).astype(np.float32)


def test_new_weight_bytes_in_one_session_give_new_outputs():
    rng = np.random.default_rng(0)
    session = Reference().prepare(ModelRef(_model()))
    a = rng.standard_normal((1, K)).astype(np.float32)
    scales = np.full(N, 0.5, np.float32)
    for _ in range(3):  # each run brings a fresh B: a kept weight would give the first run's Y
        packed = rng.integers(0, 256, (N, 1, BLOCK // 2)).astype(np.uint8)
        y = session.run({"A": a, "B": packed, "scales": scales})["Y"]
        np.testing.assert_allclose(y, _by_hand(a, packed, scales), rtol=1e-6)
    packed[0, 0, 0] ^= 0xFF  # the same array object, changed in place, is a new weight too
    y = session.run({"A": a, "B": packed, "scales": scales})["Y"]
    np.testing.assert_allclose(y, _by_hand(a, packed, scales), rtol=1e-6)
