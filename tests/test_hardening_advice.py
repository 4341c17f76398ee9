"""One line, not a traceback, and the right advice (issue 24, item 7): a model input that is not
a tensor, a bad tolerance profile in case.json, a full disk under `report`, `repro.sh tract`
where tract is not installed, `locate` quoting a Rust backtrace and not saying where it wrote.
(--out naming a file and --timeout -5: test_hardening_outdir.py; --compat-out: test_hardening_pytest.py.)"""

from __future__ import annotations

import errno
import json
import os
import subprocess

import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

ONE = "rotary/ms-3d-interleaved0-rotdim0-pos2d-headsgiven-b2s5h4d16-fp32"


def _one_line(proc, rc, *words):
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in err[0], err[0]


@pytest.fixture
def seq_model(tmp_path):
    g = h.make_graph([h.make_node("SequenceAt", ["s", "i"], ["y"])], "g",
                     [h.make_tensor_sequence_value_info("s", T.FLOAT, None), h.make_tensor_value_info("i", T.INT64, [])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    p = tmp_path / "seq.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(p))
    return p


@pytest.mark.parametrize("cmd", ["check", "extract"])
def test_a_model_input_that_is_not_a_tensor_is_one_line(run_cli, seq_model, cmd):
    proc = run_cli(cmd, seq_model, "--backends", "reference")
    _one_line(proc, 2, str(seq_model), "input 's' is a sequence, not a tensor")
    assert "KeyError" not in proc.stderr


def test_a_bad_tolerance_profile_in_case_json_names_the_file(run_cli, bundle):
    meta = json.loads((bundle / "case.json").read_text())
    meta["tolerance"]["profile"] = "fp32-nonsense"
    (bundle / "case.json").write_text(json.dumps(meta))
    proc = run_cli("check", bundle, "--backends", "reference")
    _one_line(proc, 2, f"{bundle / 'case.json'}: tolerance.profile", "'fp32-nonsense'", "fp32-attention")
    assert "--tolerance:" not in proc.stderr


def test_a_full_disk_under_report_names_the_file_and_does_not_advise_resume(tmp_path, monkeypatch, capsys):
    from harness import cli, results

    src = tmp_path / "r.jsonl"
    src.write_text("")
    real = os.fsync

    def full(fd):
        real(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results.os, "fsync", full)
    rc = cli.main(["report", str(src), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1, err
    assert str(tmp_path / "rep") in err[0] and "No space left on device" in err[0], err[0]
    assert "--resume" not in err[0] and "run `onnx-compat report` again" in err[0], err[0]
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.startswith(".")], "no temp file left"


def test_repro_sh_without_the_runtime_installed_says_what_to_install(bundle, tmp_path):
    stub = tmp_path / "stub" / "tract"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('No module named tract')\n")  # as if not installed
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "stub"))
    proc = subprocess.run(["sh", str(bundle / "repro.sh"), "tract"], capture_output=True, text=True, env=env, timeout=120)
    _one_line(proc, 2, "tract needs the Python package tract", "pip install tract")


def test_locate_quotes_a_backends_first_line_and_says_where_it_wrote(run_cli, tmp_path):
    from harness.locate import _brief

    rust = RuntimeError("Failed analyse for node #3 \"Mul\"\n\nCaused by:\n    0: in tract_core::ops\n"
                        "   1: std::backtrace_rs::backtrace::libunwind::trace\n   2: <tract_onnx::...>")
    assert _brief(rust) == 'Failed analyse for node #3 "Mul"'
    from tests.fake_backends import ALL

    out = tmp_path / "loc"
    proc = run_cli("locate", ONE, "--backend", "fake-lie", "--out", out, env={"ONNX_COMPAT_EXTRA_BACKENDS": ALL},
                   timeout=600)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    wrote = [ln for ln in proc.stderr.splitlines() if ln.startswith("locate: repro bundle written to ")]
    assert len(wrote) == 1 and str(out) in wrote[0], proc.stderr
    assert any(out.iterdir())
