"""The QDQ int4 pattern case is the two-node graph onnxruntime's quantizer writes, and its oracle
agrees with a second computation (onnx.reference's own DequantizeLinear-21, then a float64
matmul) on every quick case."""

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from cases import qdq_matmul


@pytest.mark.parametrize("case", qdq_matmul.cases("quick"), ids=lambda c: c.id)
def test_pattern_and_oracle(case):
    built = case.build()
    m = built.model
    types = [n.op_type for n in m.graph.node]
    assert types in (["DequantizeLinear", "MatMul"], ["DequantizeLinear", "Transpose", "MatMul"]), types
    dq = m.graph.node[0]
    w_init = next(i for i in m.graph.initializer if i.name == dq.input[0])
    want_type = onnx.TensorProto.INT4 if case.features["symmetric"] else onnx.TensorProto.UINT4
    assert w_init.data_type == want_type
    assert (len(dq.input) == 3) == (not case.features["symmetric"])  # zero points only when asymmetric
    g = onnx.helper.make_graph([dq], "g", [], [onnx.helper.make_tensor_value_info(dq.output[0], 0, None)],
                               initializer=m.graph.initializer)
    w = ReferenceEvaluator(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 21)])).run(None, {})[0]
    w = w.astype(np.float64).T if "Transpose" in types else w.astype(np.float64)
    y2 = built.feeds[0]["A"].astype(np.float64) @ w
    # onnx.reference rounds each dequantised weight to float32 (q * scale needs up to 4 more bits than
    # the scale's 24): 0.5 ulp per weight, ~sqrt(K) * 6e-8 on these O(1) outputs; with float16 scales
    # the weights are rounded to float16 (4.9e-4 relative each): ~5e-4 on the outputs
    tol = 1e-6 if case.features["dtype"] == "fp32" else 3e-3
    np.testing.assert_allclose(built.expected[0]["Y"], y2, rtol=tol, atol=tol)
