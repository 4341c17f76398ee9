"""harness/model_io.py reads a model's graph inputs/outputs without onnx: it must agree with
onnx's own parse on real models, and `check` of a bundle on ONNX Runtime must not import onnx."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harness.bundle import graph_io, write_bundle
from harness.model_io import ModelFormatError, read_graph_io
from harness.registry import load_cases


def _sample_cases():
    cases = [c for c in load_cases() if c.family != "zoo"]
    by_family: dict[str, list] = {}
    for c in cases:
        by_family.setdefault(c.family, []).append(c)
    return [c for fam in sorted(by_family) for c in by_family[fam][:3]]


@pytest.mark.parametrize("case", _sample_cases(), ids=lambda c: c.id)
def test_reader_agrees_with_onnx_on_case_models(case, tmp_path):
    model = case.build().model
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    got, want = read_graph_io(path), graph_io(model)
    assert got.inputs == want.inputs
    assert got.outputs == want.outputs


def test_reader_skips_initialisers_and_reads_dtypes_and_ranks(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"]), helper.make_node("Cast", ["n"], ["m"], to=TensorProto.INT64)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, "S", 2]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("n", TensorProto.INT32, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None),
         helper.make_tensor_value_info("m", TensorProto.INT64, [])],
        initializer=[w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g), str(path))
    io = read_graph_io(path)
    assert io.inputs == {"x": (np.dtype("float16"), 3), "n": (np.dtype("int32"), None)}
    assert io.outputs == ["y", "m"]


def test_reader_names_external_data_files(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [4096], np.ones(4096, np.float32).tobytes(), raw=True)
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4096])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4096])], initializer=[w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g), str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    io = read_graph_io(path)
    assert io.external_locations == ["weights.bin"]
    assert io.inputs == {"x": (np.dtype("float32"), 1)}


def test_reader_refuses_what_is_not_a_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xff\xff")
    with pytest.raises(ModelFormatError):
        read_graph_io(bad)
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    with pytest.raises(ModelFormatError, match="regular"):
        read_graph_io(fifo)  # refused before open(): a FIFO would block it


def test_check_of_a_bundle_on_ort_does_not_import_onnx(tmp_path):
    case = next(c for c in load_cases() if c.id.startswith("norm/"))
    write_bundle(case, case.build(), tmp_path / "b")
    code = ("import sys; from harness.cli import main; rc = main(['check', sys.argv[1], '--backends', 'ort-cpu']); "
            "print('onnx imported' if 'onnx' in sys.modules else 'onnx not imported'); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert " pass " in p.stdout
    assert "onnx not imported" in p.stdout

