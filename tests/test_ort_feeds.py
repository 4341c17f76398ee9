"""The ORT columns feed and read back every dtype a case uses, bfloat16 included (ORT's Python
binding takes no ml_dtypes array: "Numpy_type 256 can't be converted to MLDataType"), and a GPU
session says when nodes ran on the CPU. Runs on the CPU provider: no GPU needed."""

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper

from harness.backends import get
from harness.backends.base import ModelRef
from harness.backends.ort import OrtCuda, OrtCudaStrict, fallback_note


def _bf16_model():
    g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=T.FLOAT), helper.make_node("Cast", ["y"], ["z"], to=T.BFLOAT16),
         helper.make_node("Identity", ["x"], ["w"])], "g",
        [helper.make_tensor_value_info("x", T.BFLOAT16, [2, 3])],
        [helper.make_tensor_value_info("y", T.FLOAT, [2, 3]), helper.make_tensor_value_info("z", T.BFLOAT16, [2, 3]),
         helper.make_tensor_value_info("w", T.BFLOAT16, [2, 3])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("backend", ["ort-cpu", "ort-cpu-noopt"])
def test_bfloat16_feeds_and_outputs_round_trip_bit_exactly(backend):
    x = (np.arange(-3, 3).reshape(2, 3) / 3).astype(ml_dtypes.bfloat16)
    out = get(backend).prepare(ModelRef(_bf16_model())).run({"x": x})
    assert out["w"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert out["w"].tobytes() == x.tobytes()  # the same bits back
    assert out["z"].tobytes() == x.tobytes()
    np.testing.assert_array_equal(out["y"], x.astype(np.float32))


def test_a_strict_session_refusal_becomes_the_cells_note_and_names_the_cause():
    def refuses():
        raise RuntimeError("Node (GroupQueryAttention_0) of type GroupQueryAttention is not assigned to CUDA\nmore")

    note = fallback_note(refuses, "CUDAExecutionProvider")
    assert "ran on the CPU EP" in note and "GroupQueryAttention_0" in note and "more" not in note
    assert fallback_note(lambda: object(), "CUDAExecutionProvider") == ""


def test_strict_cuda_turns_tf32_and_cpu_fallback_off_and_says_so_in_its_version():
    strict, default = OrtCudaStrict(), OrtCuda()
    assert strict.provider_options == {"use_tf32": "0"} and strict.no_cpu_fallback
    assert not default.provider_options and not default.no_cpu_fallback
    v = strict.version()
    assert "use_tf32=0" in v and "cpu_fallback=disabled" in v
    assert strict.name != default.name
