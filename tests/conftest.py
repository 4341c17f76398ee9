import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env=None, timeout=600, check=None):
    """Run the installed CLI the way a user does, from the repo root."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    e.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=e, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    return proc


@pytest.fixture
def run_cli():
    return cli


#: a small op case whose repro bundle the hardening tests damage one file at a time
BUNDLE_CASE = "rotary/ms-3d-interleaved0-rotdim0-pos2d-headsgiven-b2s5h4d16-fp32"


@pytest.fixture
def bundle(run_cli, tmp_path):
    """A fresh `onnx-compat export` bundle of BUNDLE_CASE."""
    d = tmp_path / "b"
    run_cli("export", BUNDLE_CASE, "--out", d, check=0)
    return d
