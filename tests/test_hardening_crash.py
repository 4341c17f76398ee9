"""A native crash inside a backend that runs in the cell's own process (as ONNX Runtime does)
costs that cell, never the run (issue 10, item 3); a kill from outside is never taken for a
crash."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from harness import inflight
from tests.conftest import ROOT
from tests.fake_backends import ALL

SEL = ["-k", "rotary/ms-3d and fp32 and b2s5h4d16", "--zoo", "none"]


def _records(out):
    lines = (out / "results.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    keys = [(r["case_id"], r["backend"]) for r in recs]
    assert len(keys) == len(set(keys)), "a cell recorded twice"
    return {k: r for k, r in zip(keys, recs)}


def _run(run_cli, out, backends, *extra):
    return run_cli("run", *SEL, "--backends", backends, "--out", out, "--quiet", "--no-report", *extra,
                   env={"ONNX_COMPAT_EXTRA_BACKENDS": ALL})


@pytest.mark.parametrize("fake,jobs,words", [("fake-segv-inproc", "1", "Segmentation fault"),
                                             ("fake-abort-inproc", "2", "Aborted")])
def test_native_crash_costs_one_cell_and_the_run_goes_on(run_cli, tmp_path, fake, jobs, words):
    out = tmp_path / "o"
    proc = _run(run_cli, out, f"reference,{fake}", "--jobs", jobs)
    assert proc.returncode == 0, proc.stderr
    recs = _records(out)
    cases = {c for c, b in recs if b == "reference"}
    assert len(cases) == 12 and {c for c, b in recs if b == fake} == cases, "every cell got a verdict"
    status = {c: recs[c, fake]["status"] for c in cases}
    assert set(status.values()) == {"crash", "pass"}, status
    for c in cases:
        assert recs[c, "reference"]["status"] == "pass"
        if status[c] == "crash":
            assert words in recs[c, fake]["message"] and recs[c, fake]["repro"], recs[c, fake]
    assert not (out / inflight.DIRNAME).exists(), "markers left behind"


def test_in_process_crash_is_recorded_by_resume_which_goes_on(run_cli, tmp_path):
    """--in-process: the crash ends the run (nothing can survive it in one process); each
    --resume records the cell that killed it as `crash` and goes on, never dying twice on it."""
    supervised = tmp_path / "s"
    assert _run(run_cli, supervised, "fake-abort-inproc").returncode == 0
    want = {k: r["status"] for k, r in _records(supervised).items()}
    n_crash = sum(s == "crash" for s in want.values())
    assert n_crash >= 1

    out = tmp_path / "o"
    rcs = [_run(run_cli, out, "fake-abort-inproc", "--in-process").returncode]
    while rcs[-1] != 0 and len(rcs) <= n_crash + 1:
        rcs.append(_run(run_cli, out, "fake-abort-inproc", "--in-process", "--resume").returncode)
    assert rcs[0] == -signal.SIGABRT and rcs[-1] == 0, rcs
    assert len(rcs) == n_crash + 1, "each resume must get past exactly one crashing cell"
    got = _records(out)
    assert {k: r["status"] for k, r in got.items()} == want
    assert all("Aborted" in r["message"] for r in got.values() if r["status"] == "crash")


def _marker_child(tmp_path, action):
    code = textwrap.dedent(f"""
        import os, signal, time
        from harness.inflight import InFlight
        f = InFlight({str(tmp_path)!r})
        f.begin("norm/x", "ort-cpu")
        {action}
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, timeout=60)


def test_a_fatal_signal_is_a_crash_and_a_kill_is_not(tmp_path):
    _marker_child(tmp_path / "a", "os.abort()")
    died = inflight.collect(tmp_path / "a")
    assert [(d.case_id, d.backend) for d in died] == [("norm/x", "ort-cpu")]
    assert "Aborted" in died[0].fatal and "Aborted" in inflight.describe(died[0])

    _marker_child(tmp_path / "k", "os.kill(os.getpid(), signal.SIGKILL)")
    died = inflight.collect(tmp_path / "k")
    assert len(died) == 1 and died[0].fatal == "", "a kill from outside leaves no fatal dump"
    assert inflight.collect(tmp_path / "k") == [], "collect removes what it read"


def test_workers_come_from_a_forkserver_once_cuda_is_loaded_and_still_cost_one_cell(tmp_path, monkeypatch):
    """CUDA does not survive a fork of a process that initialised it; the pool then starts its
    workers from a forkserver, and a crash there still costs one cell."""
    from harness import pool, runner
    from harness.registry import load_cases, select

    assert pool._pool_context("7f00 r-xp /usr/lib/x86_64-linux-gnu/libcuda.so.1\n").get_start_method() == "forkserver"
    assert pool._pool_context("7f00 r-xp /usr/lib/libc.so.6\n").get_start_method() == "fork"
    monkeypatch.setenv("ONNX_COMPAT_EXTRA_BACKENDS", ALL)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    real = pool._pool_context
    monkeypatch.setattr(pool, "_pool_context", lambda maps=None: real("libcuda.so.1"))
    cases = select(load_cases("quick"), SEL[1])
    summary = runner.execute(cases, ["reference", "fake-segv-inproc"], tmp_path / "o", progress=False, log=None)
    assert summary["counts"]["crash"] >= 1 and summary["counts"]["pass"] > summary["counts"]["crash"], summary
    recs = _records(tmp_path / "o")
    assert len(recs) == 2 * len(cases)


def test_a_worker_dying_before_any_cell_is_one_line_with_the_run_code(run_cli, tmp_path):
    proc = run_cli("run", *SEL, "--backends", "fake-abort-at-start", "--out", tmp_path / "o", "--quiet",
                   env={"ONNX_COMPAT_EXTRA_BACKENDS": "fake-abort-at-start=tests.fake_backends:AbortingAtStart"})
    err = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert proc.returncode == 3 and len(err) == 1 and "--in-process" in err[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_hang_inside_an_in_process_backend_costs_one_cell_as_timeout(run_cli, tmp_path):
    """The supervisor kills a worker whose cell runs past --timeout for loading and each step."""
    import time

    out = tmp_path / "o"
    t0 = time.monotonic()
    proc = _run(run_cli, out, "reference,fake-hang-inproc", "--timeout", "1", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    recs = _records(out)
    status = {c: r["status"] for (c, b), r in recs.items() if b == "fake-hang-inproc"}
    assert len(status) == 12 and set(status.values()) == {"timeout", "pass"}, status
    assert all(r["status"] == "pass" for (c, b), r in recs.items() if b == "reference")
    hung = next(r for (c, b), r in recs.items() if r["status"] == "timeout")
    assert "no answer within 2 s" in hung["message"] and hung["repro"], hung
    assert time.monotonic() - t0 < 240


def test_collect_removes_a_marker_half_written_by_a_killed_worker(tmp_path):
    """A pool's SIGTERM can land inside InFlight.begin(), between writing `.PID.tmp` and renaming
    it: collect() must clear that too (CI once found `.inflight/` left with two empty .tmp files),
    while the live process's own files stay."""
    d = tmp_path / inflight.DIRNAME
    d.mkdir()
    (d / ".2820.tmp").write_text("")
    (d / "2821.json").write_text(json.dumps({"case_id": "c", "backend": "b", "pid": 2821, "started": 0}))
    (d / ".7.tmp").write_text("")
    died = inflight.collect(tmp_path, exclude_pid=7)
    assert [(x.case_id, x.backend, x.pid) for x in died] == [("c", "b", 2821)]
    assert sorted(p.name for p in d.iterdir()) == [".7.tmp"]


def test_a_pool_that_breaks_while_cases_are_handed_out_is_the_same_run_error(monkeypatch, tmp_path):
    """A worker that dies before the last case is submitted makes `submit` itself raise
    BrokenProcessPool (seen once in a full -n 2 run: a traceback instead of the one-line error).
    Those cases are the broken pool's like the others; here no cell died, so it is the run error
    that names --in-process."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from harness.registry import load_cases, select
    from harness.runner import RunError, execute

    real = ProcessPoolExecutor.submit
    calls = []

    def submit(self, *a, **kw):
        calls.append(a)
        if len(calls) > 1:
            raise BrokenProcessPool("a child process terminated abruptly")
        return real(self, *a, **kw)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", submit)
    cases = select(load_cases("quick"), "rotary/ms-3d and fp32 and b2s5h4d16", None)[:3]
    with pytest.raises(RunError, match="--in-process"):
        execute(cases, ["reference"], tmp_path / "o", progress=False, log=None)
    assert len(calls) == 3  # every case was offered; none was lost to the exception
