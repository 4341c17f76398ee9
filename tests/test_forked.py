"""harness/forked.py: a cell in a forked child costs a fork, and a segfault, a hang or a kill from
outside in it costs that cell only (`check` runs ONNX Runtime that way)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from harness.forked import ForkedOutcome, run_forked
from harness.results import read_results
from tests.fake_backends import ALL as FAKES

ROTARY = "rotary/ms-3d-interleaved1-rotdim8-pos2d-headsgiven-b2s5h4d16-fp32"


def test_a_result_comes_back_as_it_was_made():
    assert run_forked(lambda: {"status": "pass", "metrics": {"nmse": 1e-15}, "pid": os.getpid()}, 30)["status"] == "pass"
    assert run_forked(lambda: {"pid": os.getpid()}, 30)["pid"] != os.getpid()  # it ran in another process


def test_a_segfault_is_the_backends_crash():
    got = run_forked(lambda: os.kill(os.getpid(), signal.SIGSEGV), 30)
    assert isinstance(got, ForkedOutcome) and got.status == "crash" and "SIGSEGV" in got.message


def test_a_hang_ends_at_the_limit():
    t0 = time.monotonic()
    got = run_forked(lambda: time.sleep(3600), 1.0)
    assert isinstance(got, ForkedOutcome) and got.status == "timeout"
    assert time.monotonic() - t0 < 30


def test_a_kill_from_outside_is_not_a_crash():
    got = run_forked(lambda: os.kill(os.getpid(), signal.SIGKILL), 30)  # as the OOM killer or a user would
    assert isinstance(got, ForkedOutcome) and got.status == "error" and "from outside" in got.message


def test_check_survives_an_in_process_segfault_and_hang(run_cli, tmp_path):
    """ORT-like backends (native, no worker) on one bundle: the segfault and the hang each cost
    their own row; the passing backend after them still runs."""
    d = tmp_path / "b"
    run_cli("export", ROTARY, "--out", d, check=0)
    inputs = dict(np.load(d / "inputs.npz"))
    first = next(k for k, v in inputs.items() if v.dtype.kind == "f")
    inputs[first].flat[0] = -abs(inputs[first].flat[0]) - 1.0  # the fakes misbehave on this
    np.savez(d / "inputs.npz", **inputs)
    p = run_cli("check", d, "--backends", "fake-segv-inproc,fake-hang-inproc,ort-cpu", "--timeout", "3",
                "--out", tmp_path / "out", env={"ONNX_COMPAT_EXTRA_BACKENDS": FAKES}, check=1)
    rows = {line.split()[0]: line.split()[1] for line in p.stdout.splitlines()[2:] if line.split()}
    assert rows.get("fake-segv-inproc") == "crash", p.stdout + p.stderr
    assert rows.get("fake-hang-inproc") == "timeout", p.stdout + p.stderr
    assert rows.get("ort-cpu") in ("pass", "mismatch"), p.stdout + p.stderr  # ran; expected.npz is for other inputs
    assert p.returncode == 1
    versions = {r["backend"]: r["backend_version"] for r in read_results(tmp_path / "out" / "results.jsonl")}
    # the crashed and the hung cell still name the backend they ran on
    assert versions["fake-segv-inproc"] == "fake SegfaultingInProcess"
    assert versions["fake-hang-inproc"] == "fake HangingInProcess"
    assert versions["ort-cpu"].startswith("onnxruntime 1.")
