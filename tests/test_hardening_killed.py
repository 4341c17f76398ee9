"""A worker killed from outside is not the backend's crash (issue 23, item 4).

A backend's own fault kills its process with SIGSEGV/SIGABRT/SIGBUS/SIGFPE/SIGILL (or an exit);
SIGKILL/SIGTERM/SIGINT come from someone else: a user, the out-of-memory killer. Such a cell is
retried once; killed again it is `error` naming the signal (never `crash`), and `--resume` runs
it again. Both the isolated worker (tract's) and the pool worker (ORT's columns) are covered."""

from __future__ import annotations

import json

import pytest

from tests.fake_backends import ROUND2

SEL = ["-k", "rotary/ms-3d and fp32 and b2s5h4d16", "--zoo", "none", "--quiet", "--no-report"]


def _run(run_cli, out, backend, *extra, **env):
    return run_cli("run", *SEL, "--backends", f"reference,{backend}", "--out", out, *extra, "--timeout", "60",
                   env={"ONNX_COMPAT_EXTRA_BACKENDS": ROUND2, **env}, timeout=600)


def _cells(out, backend):
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    return {r["case_id"]: r for r in recs if r["backend"] == backend}, recs


@pytest.mark.parametrize("backend, sig", [("fake-killed", "SIGKILL"), ("fake-killed-inproc", "SIGKILL"),
                                          ("fake-killed", "SIGTERM")])
def test_a_worker_killed_from_outside_is_error_not_crash_and_resume_retries_it(run_cli, tmp_path, backend, sig):
    out = tmp_path / "o"
    proc = _run(run_cli, out, backend, "--jobs", "2", ONNX_COMPAT_FAKE_KILL_SIGNAL=sig)
    assert proc.returncode == 0, proc.stderr
    cells, _ = _cells(out, backend)
    statuses = {r["status"] for r in cells.values()}
    assert statuses == {"pass", "error"}, statuses  # the marked cells were killed each time; never crash
    killed = [r for r in cells.values() if r["status"] == "error"]
    for r in killed:
        assert r["metrics"]["killed_from_outside"] == sig, r
        assert f"killed from outside ({sig}), retried once" in r["message"], r["message"]
    proc = _run(run_cli, out, backend, "--resume", ONNX_COMPAT_FAKE_KILL="never")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming: {len(killed)} cell(s) whose worker was killed from outside run again" in proc.stderr
    cells, recs = _cells(out, backend)
    assert {r["status"] for r in cells.values()} == {"pass"}, "every killed cell ran again, and passes"
    assert len(recs) == len({(r["case_id"], r["backend"]) for r in recs}), "one record per cell"


def test_a_kill_that_does_not_come_back_costs_nothing(run_cli, tmp_path):
    """Killed once, the cell runs again at once and gets its real verdict."""
    flags = tmp_path / "flags"
    flags.mkdir()
    out = tmp_path / "o"
    proc = _run(run_cli, out, "fake-killed", ONNX_COMPAT_FAKE_KILL="once", ONNX_COMPAT_FAKE_KILL_DIR=str(flags))
    assert proc.returncode == 0, proc.stderr
    cells, _ = _cells(out, "fake-killed")
    assert {r["status"] for r in cells.values()} == {"pass"}, {r["status"] for r in cells.values()}
    assert any(flags.iterdir()), "some cell was killed once"


def test_a_backends_own_signal_is_still_a_crash(run_cli, tmp_path):
    out = tmp_path / "o"
    proc = _run(run_cli, out, "fake-segv-inproc", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    cells, _ = _cells(out, "fake-segv-inproc")
    assert {r["status"] for r in cells.values()} == {"pass", "crash"}


def test_the_signal_is_read_even_when_the_pool_reaps_the_worker_first():
    """CI, under load: the broken pool's manager thread reaped the killed worker while the runner
    joined it too; the runner's read found no exit code yet and the cell said "a signal"
    instead of SIGKILL. A worker whose code is stored a moment late is still read right."""
    import threading
    import time

    from harness import pool

    class LateCode:  # a dead process whose exit code another thread stores 50 ms later
        pid = 4242

        def __init__(self):
            self._code = None
            threading.Timer(0.05, setattr, (self, "_code", -9)).start()

        def join(self, timeout=None):
            return None

        @property
        def exitcode(self):
            return self._code

    class BrokenPool:
        _executor_manager_thread = None

    started = time.monotonic()
    assert pool._exit_codes(BrokenPool(), [LateCode()]) == {4242: -9}
    assert time.monotonic() - started < 1.0, "read as soon as it is stored, not at the deadline"
    assert pool._exit_codes(BrokenPool(), [], wait_s=0.1) == {}
