"""pytest's own options, as the CLI treats them (issue 10, item 6): a misspelt --backend or a
-m naming no mark is one line naming the option and the valid values, not a traceback per
family or a silent "everything deselected"; expressions that select something still work."""

import os
import subprocess
import sys

from tests.conftest import ROOT


def pytest_run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "--collect-only", "-q", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _usage_error(rc, text, *words):
    assert rc == 4, text  # pytest's usage-error exit code
    assert "Traceback" not in text, text
    err = [ln for ln in text.splitlines() if ln.startswith("ERROR")]
    assert len(err) == 1, text
    for w in words:
        assert w in err[0], err[0]


def test_misspelt_backend_is_one_line_with_the_valid_names():
    rc, text = pytest_run("cases/norms.py", "cases/rotary.py", "--backend", "trac")
    _usage_error(rc, text, "--backend", "'trac'", "tract", "reference", "ort-cpu")
    assert text.count("trac'") == 1


def test_a_mark_no_case_carries_is_one_line_with_the_marks():
    rc, text = pytest_run("cases/norms.py", "--backend", "reference", "-m", "gqa_decod")
    _usage_error(rc, text, "-m", "'gqa_decod'", "gqa_decode", "norm")


def test_expressions_that_select_keep_working():
    rc, text = pytest_run("cases/norms.py", "--backend", "reference", "-m", "norm and not fp16")
    assert rc == 0 and "deselected" in text, text
    rc, text = pytest_run("tests/test_results.py", "-m", "not slow")  # a mark nothing carries, negated
    assert rc == 0 and "tests collected" in text and "deselected" not in text, text
    rc, text = pytest_run("tests/test_hardening_errors.py", "-m", "parametrize")  # pytest's own mark
    assert rc == 0 and "5/" in text and "deselected" in text, text


def test_under_xdist_the_controller_says_it_once():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-q", "cases/norms.py", "--backend", "reference",
                           "-m", "gqa_decod"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    _usage_error(proc.returncode, proc.stdout + proc.stderr, "-m", "'gqa_decod'", "gqa_decode")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-q", "cases/norms.py", "--backend", "reference",
                           "-m", "norm and not slow", "--co"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_segfault_in_a_native_backend_costs_its_test_only_without_xdist():
    """Issue 24, item 6: native runtimes run in a worker process under pytest, as under `run`."""
    from tests.fake_backends import ROUND2

    env = dict(os.environ, PYTHONPATH=str(ROOT), ONNX_COMPAT_EXTRA_BACKENDS=ROUND2)
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "cases/rotary.py", "-k",
                           "ms-3d and fp32 and b2s5h4d16", "--backend", "fake-segv-inproc"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text  # tests failed; the session itself lived (not -11 / 139)
    last = text.strip().splitlines()[-1]
    assert "failed" in last and "passed" in last, last
    assert "CRASH: " in text and "SIGSEGV" in text, text


def test_compat_out_that_cannot_be_written_is_one_usage_error(tmp_path):
    """Issue 24, item 7: one line at the start, not an OSError per test."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            import pytest

            pytest.skip("running as a user who can write a read-only directory (root)")
        rc, text = pytest_run("cases/norms.py", "--backend", "reference", "--compat-out", str(ro))
    finally:
        ro.chmod(0o755)
    _usage_error(rc, text, "--compat-out", str(ro), "cannot write there")


def test_compat_out_naming_a_file_is_one_usage_error(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    rc, text = pytest_run("cases/norms.py", "--backend", "reference", "--compat-out", str(f))
    _usage_error(rc, text, "--compat-out", str(f), "cannot write there")
