"""One line and a distinct exit code where a traceback used to be (issue 10, item 5): bad input
files exit 2 naming the file and the fix; a run that cannot go on (read-only --out, full
disk, out of memory, another run holding --out) exits 3."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from harness.results import ResultsError, read_results
from tests.conftest import ROOT

ONE = ["-k", "rotary/ms-3d-interleaved0-rotdim0-pos2d-headsgiven-b2s5h4d16-fp32", "--zoo", "none"]
GOOD = {"case_id": "a", "family": "f", "features": {}, "marks": [], "backend": "reference", "backend_version": "v",
        "status": "pass", "metrics": {}, "tolerance": {}, "message": "", "seconds": 0.0, "repro": None}


def _one_line(proc, code, *words):
    """The error is one line, the last (a run's own header line may come before it)."""
    err = [ln for ln in proc.stderr.strip().splitlines() if "error:" in ln]
    assert proc.returncode == code and len(err) == 1, (proc.returncode, proc.stderr)
    assert proc.stderr.strip().splitlines()[-1] == err[0] and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in err[0], err[0]


def _main_with(patch: str, *args):
    """The CLI in a fresh interpreter with one fault injected (what cannot be made for real here)."""
    code = textwrap.dedent(patch) + f"\nimport sys\nfrom harness.cli import main\nsys.exit(main({list(map(str, args))!r}))\n"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=300)


BAD_LINES = {
    "nan": (json.dumps(GOOD).replace('"seconds": 0.0', '"seconds": NaN'), "NaN"),
    "no-status": (json.dumps({k: v for k, v in GOOD.items() if k != "status"}), "no status"),
    "unknown-status": (json.dumps({**GOOD, "status": "passed"}), "unknown status 'passed'"),
    "surrogate": (json.dumps({**GOOD, "message": "\ud800"}), "surrogate"),
    "case-id-type": (json.dumps({**GOOD, "case_id": 3}), "case_id"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_a_bad_results_line_is_named_by_file_and_line(tmp_path, run_cli, kind):
    line, words = BAD_LINES[kind]
    p = tmp_path / "results.jsonl"
    p.write_text(json.dumps({**GOOD, "case_id": "ok"}) + "\n" + line + "\n")
    with pytest.raises(ResultsError, match=rf"results.jsonl:2: .*{words}"):
        read_results(p)
    _one_line(run_cli("report", p, "--out", tmp_path / "r"), 2, f"{p}:2", words)
    assert not (tmp_path / "r").exists()


def test_a_good_file_still_reads_with_a_partial_tail(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_bytes((json.dumps(GOOD) + "\n").encode() + json.dumps({**GOOD, "case_id": "é"}).encode()[:-12])
    assert [r["case_id"] for r in read_results(p)] == ["a"]


def test_a_bad_zoo_yaml_is_one_line(tmp_path, run_cli):
    bad = tmp_path / "zoo.yaml"
    bad.write_text("version: 1\nmodels: [\n  {name: x\n")
    proc = run_cli("run", "-k", "rotary/ms-3d-interleaved0", "--zoo", "hub", "--backends", "reference",
                   "--out", tmp_path / "o", env={"ONNX_COMPAT_ZOO": str(bad)})
    _one_line(proc, 2, str(bad))


def test_an_unwritable_out_is_one_line_with_the_run_code(tmp_path, run_cli):
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses new directories to anyone
        out = "/sys/onnx-compat-test-out"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out = ro / "o"
    _one_line(run_cli("run", *ONE, "--backends", "reference", "--out", out, "--quiet"), 3, str(out), "--out")
    # export builds the bundle beside --out, then renames it in: the line names where it failed
    _one_line(run_cli("export", ONE[1], "--out", out), 3, os.path.dirname(out), "--out")


def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path):
    out = tmp_path / "o"
    patch = """
        import errno, os
        real = os.fsync
        def fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}").endswith("results.jsonl"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd)
        os.fsync = fsync
    """
    sel = ["run", "-k", "rotary/ms-3d-interleaved0-rotdim0", "--zoo", "none", "--backends", "reference",
           "--out", out, "--quiet", "--no-report"]
    proc = _main_with(patch, *sel)
    _one_line(proc, 3, str(out / "results.jsonl"), "No space left on device", "--resume")
    assert subprocess.run([sys.executable, "-m", "harness.cli", *map(str, sel), "--resume"], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True).returncode == 0
    recs = read_results(out / "results.jsonl")
    assert len({r["case_id"] for r in recs}) == len(recs) > 1


def test_memory_error_is_one_line_with_the_run_code(tmp_path):
    patch = """
        import harness.matrix
        def boom(*a, **k):
            raise MemoryError()
        harness.matrix.write_matrix = boom
    """
    proc = _main_with(patch, "run", *ONE, "--backends", "reference", "--out", tmp_path / "o", "--quiet", "--no-report")
    _one_line(proc, 3, "out of memory")


def test_a_message_with_a_lone_surrogate_is_written_not_fatal(tmp_path):
    from harness.results import ResultsWriter

    with ResultsWriter(tmp_path / "results.jsonl", resume=False) as w:
        w.append({**GOOD, "message": "path b'\\xff' decoded as \udcff"})
    (rec,) = read_results(tmp_path / "results.jsonl")
    assert rec["message"].endswith("decoded as \ufffd")
