"""Processes and directories a run owns (issue 10, items 1, 2, 4): workers never import from
the current directory, one run per --out, nothing outlives a killed run, tract-cli obeys
--timeout, and no temp directory is left behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT
from tests.fake_backends import ALL

ONE = "rotary/ms-3d-interleaved0-rotdim0-pos2d-headsgiven-b2s5h4d16-fp32"
SEL = ["-k", "rotary/ms-3d and fp32 and b2s5h4d16", "--zoo", "none"]
EXE = Path(sys.executable).parent / "onnx-compat"  # the console script: what a user types


def _env(**kw):
    return dict(os.environ, PYTHONPATH=str(ROOT), ONNX_COMPAT_EXTRA_BACKENDS=ALL, **kw)


def _start(args, cwd=ROOT, **env):
    return subprocess.Popen([str(EXE), *map(str, args)], cwd=cwd, env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pids) -> set[int]:
    live = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            live.add(p)
    return live


def _wait_for(pred, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _hang_cli(tmp_path) -> Path:
    """A `tract` that answers --version and then hangs, writing its pid where the test sees it."""
    exe = tmp_path / "tract-hang"
    exe.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo tract 0.0.0-hang; exit 0; }\n"
                   f"echo $$ > {tmp_path}/cli-$$.pid\nexec sleep 600\n")
    exe.chmod(0o755)
    return exe


def test_worker_ignores_a_hostile_numpy_and_harness_in_the_cwd(tmp_path):
    hostile = tmp_path / "bundle"
    (hostile / "harness" / "backends").mkdir(parents=True)
    marker = tmp_path / "EXECUTED"
    payload = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    (hostile / "numpy.py").write_text(payload)
    (hostile / "harness" / "__init__.py").write_text(payload)
    (hostile / "harness" / "backends" / "__init__.py").write_text(payload)
    p = _start(["run", "-k", ONE, "--zoo", "none", "--backends", "tract,fake-abort", "--out", "o", "--quiet",
                "--no-report"], cwd=hostile)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert not marker.exists(), f"code from the cwd ran: {marker.read_text()}"
    recs = [json.loads(x) for x in (hostile / "o" / "results.jsonl").read_text().splitlines()]
    assert {r["backend"]: r["status"] for r in recs} == {"tract": "pass", "fake-abort": "pass"}


def test_second_run_into_the_same_out_is_refused_in_one_line_and_sigterm_cleans_up(tmp_path):
    out = tmp_path / "o"
    first = _start(["run", *SEL, "--backends", "fake-hang", "--jobs", "2", "--timeout", "120", "--out", out, "--quiet"])
    try:
        assert _wait_for(lambda: len(_descendants(first.pid)) >= 4), "the first run never started its workers"
        second = subprocess.run([str(EXE), "run", *SEL, "--backends", "reference", "--out", str(out), "--resume",
                                 "--quiet"], env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 3, second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and str(out) in err[0] and "another onnx-compat run" in err[0], err
        assert f"pid {first.pid}" in err[0]
        kids = _descendants(first.pid)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        assert first.returncode == 143, first.stderr.read()
        assert _wait_for(lambda: not _alive(kids), 10), f"left alive after SIGTERM: {_alive(kids)}"
    finally:
        if first.poll() is None:
            first.kill()
    # the lock died with its holder: the same out dir is usable again at once
    again = subprocess.run([str(EXE), "run", *SEL, "--backends", "reference", "--out", str(out), "--resume",
                            "--quiet", "--no-report"], env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr


def test_kill_9_of_a_jobs_2_run_leaves_no_process_alive(tmp_path):
    exe = _hang_cli(tmp_path)
    run = _start(["run", *SEL, "--backends", "fake-hang,tract-cli", "--isolate", "--jobs", "2", "--timeout", "300",
                  "--out", tmp_path / "o", "--quiet"], ONNX_COMPAT_TRACT_CLI=str(exe))
    try:
        assert _wait_for(lambda: len(list(tmp_path.glob("cli-*.pid"))) >= 2), "tract-cli never started twice"
        kids = _descendants(run.pid)
        assert len(kids) >= 6, kids  # 2 pool workers, each with 2 backend workers and a tract-cli child
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        assert _wait_for(lambda: not _alive(kids), 10), f"orphans after kill -9: {_alive(kids)}"
    finally:
        if run.poll() is None:
            run.kill()


def test_tract_cli_obeys_timeout(tmp_path, run_cli):
    exe = _hang_cli(tmp_path)
    t0 = time.monotonic()
    proc = run_cli("run", "-k", ONE, "--zoo", "none", "--backends", "tract-cli", "--timeout", "2",
                   "--out", tmp_path / "o", "--quiet", "--no-report", env={"ONNX_COMPAT_TRACT_CLI": str(exe)}, check=0)
    assert time.monotonic() - t0 < 60, proc.stderr
    rec = json.loads((tmp_path / "o" / "results.jsonl").read_text())
    assert rec["status"] == "timeout" and "2 s" in rec["message"], rec
    pids = [int(p.read_text()) for p in tmp_path.glob("cli-*.pid")]
    assert pids and not _alive(pids), "the timed-out tract process was left running"


def test_no_temp_directory_is_left_behind(tmp_path, run_cli):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run_cli("run", *SEL, "--backends", "tract,fake-abort,reference", "--jobs", "2", "--out", tmp_path / "o",
            "--quiet", "--no-report", env={"TMPDIR": str(tmp), "ONNX_COMPAT_EXTRA_BACKENDS": ALL}, check=0)
    run_cli("run", "-k", ONE, "--zoo", "none", "--backends", "tract", "--isolate", "--in-process",
            "--out", tmp_path / "p", "--quiet", "--no-report", env={"TMPDIR": str(tmp)}, check=0)
    assert sorted(os.listdir(tmp)) == []


def test_the_test_suite_runs_numpy_on_one_blas_thread_unless_the_user_says_otherwise():
    """conftest.py sets OPENBLAS_NUM_THREADS=1 before numpy loads (xdist workers inherit it), as
    the CLI does; a value the user set is kept."""
    from tests.conftest import ROOT

    code = "import conftest, os; print(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "1"
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(env, OPENBLAS_NUM_THREADS="3"),
                         capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "3"
