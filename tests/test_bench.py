"""`onnx-compat bench` measures side by side and reports ratios; nothing here asserts a speed."""

import gc
import json
import weakref

import pytest

from harness import bench
from harness.bench_bare import bare_runner


def test_bench_reports_every_ratio_with_its_stability(run_cli):
    out = run_cli("bench", "-k", "rotary/ms-3d and fp32 and b2s5h4d16", "--backends", "reference,ort-cpu",
                  "--repeat", "2", "--json", "--no-polygraphy", check=0)
    data = json.loads(out.stdout)
    keys = set(data["stability"])
    assert {"overhead ort-cpu rotary", "overhead reference rotary", "reference/ort-cpu", "check/bare",
            "jobs2/serial", "isolated/in-process"} <= keys
    for s in data["stability"].values():
        assert s["pass_a"] > 0 and s["pass_b"] > 0
        assert s["stable"] == (abs(s["pass_a"] - s["pass_b"]) <= 0.1 * min(s["pass_a"], s["pass_b"]))
    row = next(r for r in data["passes"][0]["cells"]["overhead"] if r["backend"] == "ort-cpu")
    assert row["cells"] > 0 and row["harness_ms"] > 0 and row["bare_ms"] > 0
    assert row["overhead"] == round(row["overhead"], 3)


def test_bench_without_a_selection_is_bounded_and_covers_every_op_family():
    """`bench` alone measures a few cases of every op family, not the whole grid (it ran 14 minutes
    silently before)."""
    from harness.registry import load_cases

    cases = load_cases("quick")
    sample = bench.default_sample(cases)
    families = {c.family for c in cases} - {"zoo", "extracted"}
    assert {c.family for c in sample} == families
    assert all(sum(c.family == f for c in sample) <= bench.SAMPLE_PER_FAMILY for f in families)
    assert len(sample) <= bench.SAMPLE_PER_FAMILY * len(families) < len(cases) / 10


def test_each_ratio_is_printed_against_its_goal():
    assert bench.goal_of("overhead ort-cpu gqa", "ort-cpu") == bench.OVERHEAD_GOAL
    assert bench.goal_of("overhead reference gqa", "ort-cpu") is None
    assert bench.goal_of("check/polygraphy cpu", "ort-cpu") == 0.5


def test_check_vs_polygraphy_runs_both_whole_commands(tmp_path):
    """The comparison the issue asks for: both commands exit 0 on a passing bundle (a broken
    command line would time an error message instead)."""
    import pytest

    pytest.importorskip("polygraphy")
    from harness.bench_process import check_vs_polygraphy
    from harness.bundle import write_bundle
    from harness.registry import load_cases, select

    case = select(load_cases("quick"), "rotary/ms-3d and fp32 and b2s5h4d16", None)[0]
    write_bundle(case, case.build(), tmp_path / "b")
    m = check_vs_polygraphy(tmp_path / "b", "ort-cpu", 1)
    assert m["exit_codes"] == {"a": [0], "b": [0]}
    assert m["a_cpu"] > 0 and m["b_cpu"] > 0 and m["cpu_ratio"] > 0


def test_a_measurement_frees_what_it_made_before_the_next_one_starts():
    """No session may outlive its measurement (an ORT session's pool would spin under the next)."""
    class Session:
        def __init__(self):
            self.me = self  # a cycle: only the collector frees it

    refs = []
    bench._time(lambda: refs.append(weakref.ref(Session())))
    assert refs[0]() is None


def test_bare_ort_uses_the_harness_session_options():
    """The bare run gets the harness's own options (spinning off), or the ratio measures spinning."""
    from harness.backends import get
    from harness.registry import load_cases, select

    case = select(load_cases("quick"), "rotary/ms-3d and fp32 and b2s5h4d16", None)[0]
    built = case.build()
    seen = []
    b = get("ort-cpu")
    real = b._options
    b._options = lambda: seen.append(1) or real()
    bare_runner("ort-cpu", b, built, built.model.SerializeToString())()
    assert seen == [1]
    gc.collect()


def test_fewer_fsyncs_keep_a_killed_run_whole(tmp_path):
    """The per-cell fsync became one a second (a bench-measured cost); a run killed right after
    three cells, inside that second, still has all three lines: flush hands them to the kernel."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    from harness.results import read_results

    root = Path(__file__).resolve().parents[1]
    code = textwrap.dedent(f"""
        import os, signal
        from harness.registry import load_cases, select
        from harness.results import ResultsWriter
        from harness.runner import run_cell
        from harness.backends import get
        cases = select(load_cases("quick"), "rotary/ms-3d and fp32", None)[:3]
        w = ResultsWriter({str(tmp_path / "results.jsonl")!r}, resume=False)
        syncs = []
        real = os.fsync
        os.fsync = lambda fd: syncs.append(fd) or real(fd)
        for c in cases:
            w.append(run_cell(c, get("reference"), c.build()))
        print(len(syncs), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert int(proc.stdout.strip()) < 3  # fewer fsyncs than cells (the point of the change)
    assert len(read_results(tmp_path / "results.jsonl")) == 3


def test_check_is_timed_from_bytecode_even_where_python_may_not_write_it(monkeypatch):
    """pip compiled polygraphy at install; under PYTHONDONTWRITEBYTECODE an editable harness would
    compile itself on every timed `check`, so the bench compiles it once first, and says so."""
    import importlib.util
    import types
    from pathlib import Path

    import harness
    from harness import bench_process

    monkeypatch.setattr(bench_process, "sys", types.SimpleNamespace(flags=types.SimpleNamespace(dont_write_bytecode=False)))
    assert bench_process.ensure_bytecode() == ""
    cli = Path(harness.__file__).parent / "cli.py"
    pyc = Path(importlib.util.cache_from_source(str(cli)))
    pyc.unlink(missing_ok=True)
    monkeypatch.setattr(bench_process, "sys", types.SimpleNamespace(flags=types.SimpleNamespace(dont_write_bytecode=True)))
    assert "PYTHONDONTWRITEBYTECODE" in bench_process.ensure_bytecode()
    assert pyc.stat().st_mtime >= cli.stat().st_mtime


def test_a_slow_stretch_over_three_harness_samples_and_two_bare_ones_does_not_move_the_ratio():
    """Pairs measured back to back share the host's slow stretches: the per-case overhead is the
    median of the pair ratios (1.2 here), not the ratio of the medians (2.4 here)."""
    from harness.bench import paired_ratio

    harness = [2.4, 2.4, 2.4, 1.2, 1.2]  # pairs 1-3 in a slow stretch; pair 3's bare ran just after it
    bare = [2.0, 2.0, 1.0, 1.0, 1.0]
    assert paired_ratio(harness, bare) == pytest.approx(1.2)
    with pytest.raises(ValueError):
        paired_ratio(harness, bare[:4])


def test_a_cell_overhead_the_two_passes_disagree_on_is_measured_again_and_judged_on_the_median(monkeypatch, capsys):
    """One slow stretch of a shared host can push one pass of one family past its goal (1.45 where
    the other pass said 1.17). Such a ratio gets a third pass over its family's cases alone, and
    the goal is judged on the median of the three: met where the third agrees with the lower pass,
    not met where it agrees with the higher one. A stable ratio is judged on the larger pass."""
    import types

    passes = iter([{"gqa": 1.45, "norm": 1.20, "mha": 1.25}, {"gqa": 1.20, "norm": 1.45, "mha": 1.28}])

    def fake_measure(cases, names, baseline, repeat, runs, progress, polygraphy):
        values = next(passes)
        rows = [{"backend": "ort-cpu", "family": f, "overhead": v} for f, v in values.items()]
        # the reference's overhead has no goal: unstable, it is not measured again
        rows.append({"backend": "reference", "family": "mha", "overhead": values["gqa"]})
        return {"cells": {"overhead": rows, "reference_vs": []}}

    third_pass_families, third_pass_backends = [], []

    def fake_cell_ratios(cases, names, repeat, progress):
        third_pass_families.extend(c.family for c in cases)
        third_pass_backends.extend(names)
        return {"overhead": [{"backend": "ort-cpu", "family": "gqa", "overhead": 1.22},
                             {"backend": "ort-cpu", "family": "norm", "overhead": 1.40}]}

    monkeypatch.setattr(bench, "measure", fake_measure)
    monkeypatch.setattr(bench, "_cell_ratios", fake_cell_ratios)
    cases = [types.SimpleNamespace(family=f) for f in ("gqa", "gqa", "norm", "mha")]
    bench.bench(cases, ["ort-cpu", "reference"], as_json=True)
    s = json.loads(capsys.readouterr().out)["stability"]
    assert (third_pass_families, third_pass_backends) == (["gqa", "gqa", "norm"], ["ort-cpu"])
    assert not s["overhead reference mha"]["stable"] and "pass_c" not in s["overhead reference mha"]
    gqa, norm, mha = (s[f"overhead ort-cpu {f}"] for f in ("gqa", "norm", "mha"))
    assert (gqa["pass_c"], gqa["meets_goal"]) == (1.22, True)  # median of 1.45, 1.20, 1.22
    assert (norm["pass_c"], norm["meets_goal"]) == (1.40, False)  # median of 1.20, 1.45, 1.40
    assert "pass_c" not in mha and mha["meets_goal"] is True
    assert bench.judged_value({"pass_a": 1.2, "pass_b": 1.31}) == 1.31


def test_bench_refuses_no_repetitions_in_one_line(run_cli):
    """--repeat 0 timed nothing and ended in a StatisticsError traceback; now a usage error."""
    r = run_cli("bench", "--repeat", "0", "-k", "rotary/ms-3d and fp32 and b2s5h4d16", check=2)
    assert r.stderr.strip().splitlines() == ["onnx-compat bench: error: --repeat 0: use 1 or more (each is one "
                                             "timed pair per measurement)"]



def test_the_command_lines_default_repeat_is_the_benchs():
    """The parser names the default without importing bench (numpy, the backends): the two agree."""
    from harness.cli_parser import build_parser

    assert build_parser(["bench"]).parse_args(["bench"]).repeat == bench.DEFAULT_REPEAT
