"""A run killed with SIGKILL mid-way and resumed gives the same cell set, with no duplicates."""

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT

SEL = ["-m", "norm and not extracted", "--backends", "reference,ort-cpu,ort-cpu-noopt"]


def cells(path):
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    keys = [(r["case_id"], r["backend"]) for r in recs]
    return keys, {k: r["status"] for k, r in zip(keys, recs)}


def test_kill_and_resume_loses_nothing_and_duplicates_nothing(run_cli, tmp_path):
    full = tmp_path / "full"
    run_cli("run", *SEL, "--out", full, "--quiet", "--no-report", check=0)
    full_keys, full_status = cells(full / "results.jsonl")

    part = tmp_path / "part"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", *SEL, "--out", str(part), "--quiet", "--no-report"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res = part / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if res.exists() and res.read_bytes().count(b"\n") >= 25:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = res.read_bytes().count(b"\n")
    assert 25 <= partial < len(full_keys), "the kill must land mid-run"
    run_cli("run", *SEL, "--out", part, "--resume", "--quiet", "--no-report", check=0)
    keys, status = cells(res)
    assert len(keys) == len(set(keys)), "duplicate cells after resume"
    assert set(keys) == set(full_keys)
    assert status == full_status
