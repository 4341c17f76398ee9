"""A backend that aborts or hangs costs one cell, never the run; every other status is its own."""

import json

from tests.fake_backends import ALL

#: 4 cases, one of which the fake backends misbehave on (tests/fake_backends._marker), third of four:
#: cells before and after it; each hang costs the whole --timeout, so no more of them than that
SEL = ["-k", "rotary/ms-3d-interleaved0-rotdim0 and fp32 and b2s5h4d16"]


def run(run_cli, tmp_path, backends, *extra):
    out = tmp_path / "o"
    proc = run_cli("run", *SEL, "--backends", backends, "--out", out, "--quiet", "--timeout", "3", *extra,
                   env={"ONNX_COMPAT_EXTRA_BACKENDS": ALL})
    assert proc.returncode == 0, proc.stderr
    lines = (out / "results.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines], out


def test_crash_and_hang_cost_one_cell_each_and_the_run_completes(run_cli, tmp_path):
    recs, out = run(run_cli, tmp_path, "reference,fake-abort,fake-hang")
    by = {}
    for r in recs:
        by.setdefault(r["backend"], {})[r["case_id"]] = r
    cases = set(by["reference"])
    assert set(by["fake-abort"]) == set(by["fake-hang"]) == cases, "every cell got a verdict"
    abort = [r["status"] for r in by["fake-abort"].values()]
    hang = [r["status"] for r in by["fake-hang"].values()]
    assert "crash" in abort and "pass" in abort, abort
    assert "timeout" in hang and "pass" in hang, hang
    crash = next(r for r in by["fake-abort"].values() if r["status"] == "crash")
    assert "SIGABRT" in crash["message"]
    # a cell after a crash ran in a fresh worker and still agreed with the oracle
    assert all(by["reference"][c]["status"] == "pass" for c in cases)
    for r in recs:
        if r["status"] != "pass":
            assert r["repro"] and (out / "repro").exists()


def test_each_failure_kind_keeps_its_own_status(run_cli, tmp_path):
    recs, _ = run(run_cli, tmp_path, "fake-refuse,fake-break,fake-lie,fake-missing")
    st = {r["backend"]: {x["status"] for x in recs if x["backend"] == r["backend"]} for r in recs}
    assert st == {"fake-refuse": {"unsupported"}, "fake-break": {"error"}, "fake-lie": {"mismatch"},
                  "fake-missing": {"unavailable"}}
    refuse = next(r for r in recs if r["backend"] == "fake-refuse")
    assert "op X is not implemented" in refuse["message"]
    lie = next(r for r in recs if r["backend"] == "fake-lie")
    assert lie["metrics"]["max_rel"] > 0.009


def test_bfloat16_crosses_the_worker_as_bfloat16():
    """.npz stores ml_dtypes arrays as raw void (|V2): the worker must hand the backend, and the
    caller, bfloat16 arrays again (the openvino and tract columns run isolated)."""
    import ml_dtypes
    import numpy as np
    from onnx import TensorProto, helper

    from harness import backends
    from harness.backends.base import ModelRef

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([1.5, -2.0, 3.25], ml_dtypes.bfloat16)
    b = backends.get("ort-cpu", isolated=True)
    try:
        y = b.prepare(ModelRef(model)).run({"x": x})["y"]
    finally:
        b.close()
    assert y.dtype == ml_dtypes.bfloat16 and y.view(np.uint16).tolist() == x.view(np.uint16).tolist()
