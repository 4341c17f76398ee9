"""Issue 23.3: the same commit gives the same verdicts. The versions that decide a verdict are
pinned (constraints.txt) and checked here, run.json records them with the host's instruction
sets, and a selection run twice in fresh processes gives identical verdicts and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import constraints, runinfo

ROOT = Path(__file__).resolve().parents[1]
#: fp16 activations (the cells that flipped between two runs of one commit), on three columns
SELECTION = ["-k", "activation and fp16", "--backends", "reference,ort-cpu,tract", "--zoo", "none"]


def test_installed_versions_match_constraints():
    """A drift from constraints.txt is a failure, not a silent change of verdicts."""
    drift = constraints.drift()
    assert not drift, "; ".join(f"{n} {h} installed, {w} pinned" for n, (h, w) in sorted(drift.items())) + \
        " — reinstall with pip install -c constraints.txt -e \".[dev]\""


def test_constraints_pin_every_package_that_decides_a_verdict():
    pins = constraints.read()
    assert set(pins) == {constraints.canonical(n) for n in constraints.PINNED}
    text = (ROOT / "constraints.txt").read_text()
    assert ">=" not in text and "~=" not in text


def test_every_install_command_uses_the_constraints():
    for f in ("README.md", ".ci/run", ".github/workflows/nightly.yml"):
        lines = [ln for ln in (ROOT / f).read_text().splitlines() if "pip install" in ln and " -e " in ln]
        assert lines, f
        assert all("-c constraints.txt" in ln for ln in lines), (f, [ln for ln in lines if "-c constraints" not in ln])


def test_write_pins_the_installed_versions_and_keeps_absent_ones(tmp_path):
    f = tmp_path / "constraints.txt"
    f.write_text("numpy==0.0.1\nnot-a-real-package==9\nopenvino==2026.4.1\n")
    assert constraints.main(["--write", "--file", str(f)]) == 0
    pins = constraints.read(f)
    assert pins["numpy"] == constraints.installed("numpy") != "0.0.1"
    if constraints.installed("openvino") is None:
        assert pins["openvino"] == "2026.4.1"
    assert "not-a-real-package" not in pins
    assert constraints.main(["--file", str(f)]) == 0


def test_a_drift_is_reported_with_the_fix(tmp_path, capsys):
    f = tmp_path / "constraints.txt"
    f.write_text("numpy==0.0.1\n")
    assert constraints.drift(f) == {"numpy": (constraints.installed("numpy"), "0.0.1")}
    assert constraints.main(["--file", str(f)]) == 1
    err = capsys.readouterr().err
    assert "numpy" in err and "0.0.1" in err and "pip install -c constraints.txt" in err


def test_run_json_records_versions_isa_and_kernel_env(monkeypatch):
    monkeypatch.setenv("TRACT_CPU_ISA", "-avx512f")
    m = runinfo.machine()
    for p in ("onnx", "onnxruntime", "tract", "numpy", "ml_dtypes", "onnx_ir"):
        assert m["packages"][p] == constraints.installed(p), p
    assert m["kernel_env"] == {"TRACT_CPU_ISA": "-avx512f"}
    assert isinstance(m["isa"], list) and m["constraints_drift"] == {}
    if Path("/proc/cpuinfo").exists():
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith(("flags", "Features")))
        assert set(m["isa"]) == set(runinfo.ISA_FLAGS) & set(flags.split(":", 1)[1].split())


def _cells(out: Path) -> dict[tuple[str, str], tuple[str, dict]]:
    recs = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    return {(r["case_id"], r["backend"]): (r["status"], r["metrics"]) for r in recs}


def test_a_selection_run_twice_gives_identical_verdicts_and_metrics(run_cli, tmp_path):
    """Two fresh processes, the same selection: every cell's status and every metric equal."""
    runs = []
    for i in (1, 2):
        out = tmp_path / f"run{i}"
        run_cli("run", *SELECTION, "--out", out, "--quiet", "--no-report", check=0)
        runs.append(_cells(out))
    assert len(runs[0]) == 36 and runs[0].keys() == runs[1].keys()
    differ = [k for k in runs[0] if runs[0][k] != runs[1][k]]
    assert not differ, differ
    info = json.loads((tmp_path / "run1" / "run.json").read_text())["backends"]["tract"]
    assert info["packages"]["ml_dtypes"] == constraints.installed("ml_dtypes") and "isa" in info


def test_run_says_at_start_when_an_installed_version_drifts(run_cli, tmp_path, monkeypatch):
    fake = tmp_path / "constraints.txt"
    fake.write_text("numpy==0.0.1\n")
    p = run_cli("run", "-k", "activation/gelu-2x5x64-fp32", "--backends", "reference", "--zoo", "none", "--quiet",
                "--no-report", "--out", tmp_path / "o", env={"ONNX_COMPAT_CONSTRAINTS": str(fake)}, check=0)
    assert "numpy" in p.stderr and "constraints.txt pins 0.0.1" in p.stderr, p.stderr
    info = json.loads((tmp_path / "o" / "run.json").read_text())["backends"]["reference"]
    assert info["constraints_drift"]["numpy"]["pinned"] == "0.0.1"
