"""`onnx-compat check` (item 1): a table, an exit code and results for every kind of cell — none
of them raises — each cell written as it ends, and a second check into the same --out replaces
the first one's cells and says so."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fake_backends import ALL as FAKES

ROTARY = "rotary/ms-3d-interleaved1-rotdim8-pos2d-headsgiven-b2s5h4d16-fp32"
TRACT_REFUSES = "gqa/decode-kvint8-tensor-b1-qwen2-h14kv2-d64-s1-past9-fp32"  # quantised KV cache
TRACT_ABORTS = "gather_block_quantized/uint8-4bit-vocab1k-h64-bs32-zp1-q1g0-idxneg-fp32"  # negative index: SIGABRT


def _results(out):
    return {r["backend"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def _row(stdout, backend):
    return next(line.split() for line in stdout.splitlines() if line.split()[:1] == [backend])


def _tract_available(run_cli):
    rows = {r["backend"]: r for r in json.loads(run_cli("backends", "--json", check=0).stdout)}
    return rows.get("tract", {}).get("available")


def test_every_status_gets_a_row_and_a_result(run_cli, tmp_path):
    """Refused, crashed, failing, unavailable, lying and passing backends on one bundle whose
    oracle is the reference (no expected.npz): no traceback, exit 1, one result per backend."""
    d = tmp_path / "b"
    run_cli("export", ROTARY, "--out", d, check=0)
    (d / "expected.npz").unlink()
    (d / "case.json").unlink()
    inputs = dict(np.load(d / "inputs.npz"))
    first = next(k for k, v in inputs.items() if v.dtype.kind == "f")
    inputs[first].flat[0] = -abs(inputs[first].flat[0]) - 1.0  # fake-abort aborts on this
    np.savez(d / "inputs.npz", **inputs)
    out = tmp_path / "out"
    names = "ort-cpu,fake-abort,fake-refuse,fake-break,fake-missing,fake-lie"
    p = run_cli("check", d, "--backends", names, "--out", out, env={"ONNX_COMPAT_EXTRA_BACKENDS": FAKES})
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    want = {"ort-cpu": "pass", "fake-abort": "crash", "fake-refuse": "unsupported", "fake-break": "error",
            "fake-missing": "unavailable", "fake-lie": "mismatch"}
    for backend, status in want.items():
        row = _row(p.stdout, backend)
        assert row[1] == status, row
        if status not in ("pass", "mismatch"):
            assert row[2:4] == ["-", "-"], row  # no metrics: shown as such, never formatted
    recs = _results(out)
    assert {b: r["status"] for b, r in recs.items()} == want
    assert (out / "report.html").exists()


def test_a_bundle_tract_refuses(run_cli, tmp_path):
    if not _tract_available(run_cli):
        pytest.skip("tract not installed")
    d, out = tmp_path / "b", tmp_path / "out"
    run_cli("export", TRACT_REFUSES, "--out", d, check=0)
    p = run_cli("check", d, "--backends", "reference,ort-cpu,tract", "--out", out)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert _row(p.stdout, "tract")[1:4] == ["unsupported", "-", "-"]
    assert _row(p.stdout, "ort-cpu")[1] == "pass"
    assert {b: r["status"] for b, r in _results(out).items()} == {"reference": "pass", "ort-cpu": "pass",
                                                                   "tract": "unsupported"}


def test_a_bundle_tract_crashes_on(run_cli, tmp_path):
    if not _tract_available(run_cli):
        pytest.skip("tract not installed")
    d, out = tmp_path / "b", tmp_path / "out"
    run_cli("export", TRACT_ABORTS, "--out", d, check=0)
    p = run_cli("check", d, "--backends", "reference,tract", "--out", out)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert _row(p.stdout, "tract")[1] == "crash"
    assert _results(out)["tract"]["status"] == "crash"


def test_a_bundle_every_backend_passes_exits_0(run_cli, tmp_path):
    d, out = tmp_path / "b", tmp_path / "out"
    run_cli("export", ROTARY, "--out", d, check=0)
    p = run_cli("check", d, "--backends", "reference,ort-cpu,ort-cpu-noopt", "--out", out, check=0)
    assert {b: r["status"] for b, r in _results(out).items()} == dict.fromkeys(
        ["reference", "ort-cpu", "ort-cpu-noopt"], "pass")
    assert "results.jsonl" in p.stdout


def test_checking_the_same_model_twice_replaces_and_says_so(run_cli, tmp_path):
    d, out = tmp_path / "b", tmp_path / "out"
    run_cli("export", ROTARY, "--out", d, check=0)
    run_cli("check", d, "--backends", "reference", "--out", out, check=0)
    p = run_cli("check", d, "--backends", "reference,ort-cpu", "--out", out, check=0)
    assert "replacing" in p.stdout and "1 cell(s)" in p.stdout
    lines = (out / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["backend"] for x in lines) == ["ort-cpu", "reference"]
    run_cli("report", out / "results.jsonl", "--out", tmp_path / "rep", check=0)  # no duplicate cells


def test_two_bare_models_with_one_file_name_do_not_collide(run_cli, tmp_path):
    out = tmp_path / "out"
    for i, case in enumerate([ROTARY, "rotary/ms-3d-interleaved0-rotdim0-pos2d-headsgiven-b2s5h4d16-fp32"]):
        d = tmp_path / f"m{i}"
        run_cli("export", case, "--out", d, check=0)
        run_cli("check", d / "model.onnx", "--backends", "ort-cpu", "--out", out)
    ids = {json.loads(x)["case_id"] for x in (out / "results.jsonl").read_text().splitlines()}
    assert len(ids) == 2


def test_a_bare_model_with_a_huge_input_is_refused_in_one_line(run_cli, tmp_path):
    """Item 6: a model declaring a 2^31-element input is refused before any allocation."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2 ** 31])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2 ** 31])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(m, str(tmp_path / "huge.onnx"))
    p = run_cli("check", tmp_path / "huge.onnx", "--backends", "ort-cpu")
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "huge.onnx" in err[0] and "GiB" in err[0] and "inputs.npz" in err[0], p.stderr


def test_a_cell_matching_another_reading_gates_like_a_pass(run_cli, tmp_path):
    """ORT CPU's local_window_size=0 reading: `ambiguous` in the table, exit 0 (as pytest and
    repro.sh), and the bundle's readings are what made it so."""
    d = tmp_path / "b"
    run_cli("export", "gqa/prefill-win0-b1-edge1-h2kv1-d16-s8-fp32", "--out", d, check=0)
    p = run_cli("check", d, "--backends", "ort-cpu", check=0)
    assert _row(p.stdout, "ort-cpu")[1] == "ambiguous"
    meta = json.loads((d / "case.json").read_text())
    meta["readings"] = []
    (d / "case.json").write_text(json.dumps(meta))
    assert _row(run_cli("check", d, "--backends", "ort-cpu", check=1).stdout, "ort-cpu")[1] == "mismatch"
