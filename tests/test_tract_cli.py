"""The tract-cli backend against a fake `tract` executable speaking the real CLI's flags."""

import json
import os
import sys

import pytest

from tests.conftest import ROOT

FAKE = ROOT / "tests" / "fake_tract_cli.py"
SEL = ["-k", "rotary/ms-3d-interleaved0-rotdim0-pos2d-headsgiven-b2s5h4d16-fp32"]


def run(run_cli, tmp_path, mode):
    out = tmp_path / mode
    env = {"ONNX_COMPAT_TRACT_CLI": str(FAKE), "FAKE_TRACT_MODE": mode}
    proc = run_cli("run", *SEL, "--backends", "tract-cli", "--out", out, "--quiet", "--no-report", env=env)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode,status", [("ok", "pass"), ("rename", "pass"), ("wrong", "mismatch"),
                                         ("refuse", "unsupported"), ("fail", "error"), ("segv", "crash")])
def test_statuses(run_cli, tmp_path, mode, status):
    recs = run(run_cli, tmp_path, mode)
    assert [r["status"] for r in recs] == [status], recs[0]["message"]
    assert "tract 0.0.0-fake" in recs[0]["backend_version"]
    if mode == "refuse":
        assert "softcap is unsupported" in recs[0]["message"] and "backtrace" not in recs[0]["message"].lower()


def test_listed_with_a_reason_when_absent(run_cli):
    env = {"PATH": os.path.dirname(sys.executable)}
    out = run_cli("backends", "--json", env=env, check=0)
    row = next(r for r in json.loads(out.stdout) if r["backend"] == "tract-cli")
    assert not row["available"] and "PATH" in row["reason"]
