"""Perf mode: `run --perf N` times N warm runs of every cell that ran (latency_ms, the median), and
the report shows them as an optional column group; without it no latency is recorded."""

import re
import json
import subprocess
import sys

from tests.conftest import ROOT


def _run(tmp_path, *extra):
    out = tmp_path / "o"
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", "-k", "norm/simplified-axis-1-2x5x64-centred-fp32",
                        "--zoo", "none", "--backends", "reference,ort-cpu", "--quiet", "--out", str(out), *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()], out


def test_perf_mode_records_a_latency_per_cell_and_the_report_shows_it(tmp_path):
    recs, out = _run(tmp_path, "--perf", "3")
    assert len(recs) == 2
    for r in recs:
        assert r["status"] == "pass" and r["metrics"]["latency_ms"] > 0
        assert r["metrics"]["latency_ms"] < r["seconds"] * 1000  # warm runs, no session load
    html = (out / "report.html").read_text()
    assert 'id="f-latency"' in html
    from harness.report.cells import unpacked

    grid = unpacked(re.search(r'id="grid-data">(.*?)</script>', html, re.S).group(1))
    labels = [c[1] for row in grid["rows"] for c in row[3] if c]
    assert len(labels) == 2 and all(re.fullmatch(r"[\d.e+-]+ ms", x) for x in labels)  # the unit is named


def test_without_perf_no_latency_is_recorded(tmp_path):
    recs, out = _run(tmp_path)
    assert all("latency_ms" not in r["metrics"] for r in recs)
    assert 'id="f-latency"' not in (out / "report.html").read_text()


def test_perf_is_read_again_when_run_sets_it_in_the_same_process(tmp_path, monkeypatch):
    """run_cell reads ONNX_COMPAT_PERF once per process (it costs ~10 µs of each cell); a second
    `run` in the same process (cli.main called twice, as a Python caller may) with another --perf
    must still be obeyed."""
    from harness import cli

    monkeypatch.setenv("ONNX_COMPAT_PERF", "0")

    def records(out, *extra):
        code = cli.main(["run", "-k", "norm/simplified-axis-1-2x5x64-centred-fp32", "--zoo", "none", "--backends",
                         "ort-cpu", "--in-process", "--quiet", "--out", str(out), *extra])
        assert code == 0
        return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]

    assert all("latency_ms" not in r["metrics"] for r in records(tmp_path / "a"))
    assert all(r["metrics"]["latency_ms"] > 0 for r in records(tmp_path / "b", "--perf", "2"))
    assert all("latency_ms" not in r["metrics"] for r in records(tmp_path / "c"))
