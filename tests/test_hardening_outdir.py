"""A run never replaces a file it did not write (issue 24, item 2), and the options that name a
directory or a limit say what is wrong in one line (item 7: --out naming a file, --timeout -5)."""

from __future__ import annotations

import pytest

ONE = ["-k", "rotary/ms-3d-interleaved0-rotdim0-pos2d-headsgiven-b2s5h4d16-fp32", "--zoo", "none",
       "--backends", "reference", "--quiet"]


def _one_line_error(proc, *words):
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in err[0], err[0]
    return err[0]


def test_run_into_a_users_directory_replaces_none_of_their_files(run_cli, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "matrix.csv").write_text("my,own,matrix\n")
    (out / "report.html").write_text("<p>my report</p>")
    proc = run_cli("run", *ONE, "--out", out)
    _one_line_error(proc, str(out), "matrix.csv", "report.html", "no onnx-compat run wrote", "--out")
    assert (out / "matrix.csv").read_text() == "my,own,matrix\n"
    assert (out / "report.html").read_text() == "<p>my report</p>"
    assert sorted(p.name for p in out.iterdir()) == ["matrix.csv", "report.html"], "nothing added either"


def test_a_runs_own_directory_is_reused_and_unrelated_files_are_kept(run_cli, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # a name a run never writes: no reason to refuse
    run_cli("run", *ONE, "--out", out, check=0)
    assert (out / ".onnx-compat-run").is_file() and (out / "notes.txt").read_text() == "mine"
    (out / "results.jsonl").unlink()  # the run's own dir, results moved away: its matrix is its own to replace
    run_cli("run", *ONE, "--out", out, check=0)
    assert (out / "matrix.csv").exists()


@pytest.mark.parametrize("cmd", [["run", *ONE], ["check", "BUNDLE"], ["report", "RESULTS"]])
def test_out_naming_a_file_is_one_line(run_cli, tmp_path, cmd):
    target = tmp_path / "a-file"
    target.write_text("x")
    cmd = [str(tmp_path / "b.jsonl") if c == "RESULTS" else str(tmp_path) if c == "BUNDLE" else c for c in cmd]
    (tmp_path / "b.jsonl").write_text("")
    proc = run_cli(*cmd, "--out", target)
    _one_line_error(proc, f"--out {target}", "is a file, not a directory")
    assert "Errno" not in proc.stderr and target.read_text() == "x"


@pytest.mark.parametrize("cmd", [["run", *ONE, "--out", "OUT"], ["check", "OUT"],
                                 ["locate", "some/case", "--backend", "reference"]])
@pytest.mark.parametrize("value", ["-5", "0"])
def test_a_timeout_that_is_not_positive_is_refused(run_cli, tmp_path, cmd, value):
    cmd = [str(tmp_path / "o") if c == "OUT" else c for c in cmd]
    proc = run_cli(*cmd, "--timeout", value)
    _one_line_error(proc, f"--timeout {float(value):g}", "above 0")
    assert not (tmp_path / "o" / "results.jsonl").exists()
