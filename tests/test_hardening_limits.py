"""No hang without a limit, no read without a bound (issue 24, items 4 and 5).

Every cell, in every mode, ends within its limit with `timeout`: a zoo decode loop in the pool
process (every ORT column by default), a cell with --in-process, a cell of `check`. A FIFO
where a model or an array file should be is refused before it is opened. An .npz is checked
against its declared sizes before anything is decompressed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.fake_backends import ROUND2

from .test_zoo_fixture_twins import make_twin

ONE = "rotary/ms-3d-interleaved0-rotdim0-pos2d-headsgiven-b2s5h4d16-fp32"
FAKES = {"ONNX_COMPAT_EXTRA_BACKENDS": ROUND2}


def _records(out):
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def test_a_zoo_decode_loop_that_hangs_in_the_pool_process_times_out(run_cli, tmp_path):
    twins = tmp_path / "twins"
    make_twin(twins, "concat")
    out = tmp_path / "o"
    t0 = time.monotonic()
    proc = run_cli("run", "-k", "zoo/fixture-concat", "--backends", "fake-hang-decode-inproc", "--timeout", "2",
                   "--out", out, "--quiet", "--no-report", env={**FAKES, "ONNX_COMPAT_TWINS": str(twins)}, timeout=240)
    assert proc.returncode == 0, proc.stderr
    (rec,) = _records(out)
    assert rec["case_id"] == "zoo/fixture-concat" and rec["status"] == "timeout", rec
    assert "--timeout 2 s" in rec["message"], rec["message"]
    assert time.monotonic() - t0 < 200


def test_a_hang_with_in_process_ends_the_run_in_one_line_and_resume_records_timeout(run_cli, tmp_path):
    out = tmp_path / "o"
    args = ["run", "-k", ONE, "--zoo", "none", "--backends", "fake-hang-always-inproc", "--timeout", "1", "--out", out,
            "--quiet", "--no-report", "--in-process"]
    proc = run_cli(*args, env=FAKES, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(err) == 1 and "gave no answer within 2 s" in err[0] and "--resume" in err[0], proc.stderr
    proc = run_cli(*args, "--resume", env=FAKES, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (rec,) = _records(out)
    assert rec["status"] == "timeout" and "--in-process" in rec["message"], rec


def test_a_hang_in_check_ends_at_its_timeout(run_cli, bundle):
    t0 = time.monotonic()
    proc = run_cli("check", bundle, "--backends", "fake-hang-always-inproc", "--timeout", "2", env=FAKES, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "fake-hang-always-inproc timeout" in " ".join(proc.stdout.split()), proc.stdout
    assert time.monotonic() - t0 < 100


@pytest.mark.parametrize("name", ["model.onnx", "inputs.npz", "expected.npz", "case.json"])
def test_a_fifo_in_a_bundle_is_refused_before_it_is_opened(run_cli, bundle, name):
    (bundle / name).unlink()
    os.mkfifo(bundle / name)
    proc = run_cli("check", bundle, "--backends", "reference", timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and f"{bundle / name}: is a FIFO, not a regular file" in err[0], proc.stderr


def test_a_fifo_named_as_the_model_is_refused(run_cli, tmp_path):
    os.mkfifo(tmp_path / "m.onnx")
    proc = run_cli("check", tmp_path / "m.onnx", "--backends", "reference", timeout=60)
    assert proc.returncode == 2 and "is a FIFO, not a regular file" in proc.stderr, proc.stdout + proc.stderr


def _bomb(path, nbytes: int) -> None:
    """An .npz of deflated zeros: a few MB on disk declaring `nbytes` of float32."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (nbytes // 4,)})
            chunk = bytes(1 << 22)
            for _ in range(nbytes // len(chunk)):
                f.write(chunk)


_MEASURED = """
import atexit, runpy, sys


def peak():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child of a large pytest
    # worker would report the worker's size; the high-water mark belongs to this address space
    hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")).split()[1]
    print(f"peak-rss-kb {hwm}", file=sys.stderr)


atexit.register(peak)  # an exit handler: `check` ends with cli.quick_exit, which runs those (not finally blocks)
sys.argv = ["onnx-compat", *sys.argv[1:]]
runpy.run_module("harness.cli", run_name="__main__")
"""


def _check_rss(bundle, env) -> tuple[int, str, int]:
    """(exit code, stderr without the measurement, its peak resident memory in MB) of `check BUNDLE`."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    p = subprocess.run([sys.executable, "-c", _MEASURED, "check", str(bundle), "--backends", "reference"],
                       cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)
    lines = p.stderr.strip().splitlines()
    peak = int(lines[-1].split()[-1]) // 1024
    return p.returncode, "\n".join(lines[:-1]), peak


def test_an_npz_is_checked_against_its_declared_size_before_it_is_decompressed(bundle):
    """A 160 MiB array in a file of under 1 MB: refused in one line, and never allocated (a
    `check` of a small bundle peaks at ~75 MB resident; decompressing it would add 160)."""
    _bomb(bundle / "expected.npz", 160 << 20)
    assert (bundle / "expected.npz").stat().st_size < 2 << 20
    rc, err, peak = _check_rss(bundle, {"ONNX_COMPAT_MAX_NPZ_BYTES": str(32 << 20)})
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "expected.npz: declares 160.0 MiB once decompressed" in lines[0] and "over the limit of 32 MiB" in lines[0]
    assert peak < 160, f"peak RSS {peak} MB: the array was decompressed"


def test_an_npy_header_that_outgrows_its_member_is_refused(tmp_path):
    from harness.safeload import UnsafeInput, check_npz

    p = tmp_path / "x.npz"
    with zipfile.ZipFile(p, "w") as zf:
        with zf.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (1 << 20,)})
            f.write(b"\0" * 64)
    with pytest.raises(UnsafeInput, match="declares 8388608 bytes but its member holds"):
        check_npz(p)
