"""Repro bundles cost disk (the main job writes one per failing case): the run says what they
cost, and `--no-repro` writes none, saying how to get one later (issue 25)."""

import json

from tests.fake_backends import ALL

SEL = ["-k", "rotary/ms-3d and fp32 and b2s5h4d16", "--zoo", "none", "--quiet", "--no-report"]


def _run(run_cli, out, *extra, backends="fake-lie"):
    return run_cli("run", *SEL, "--backends", backends, "--out", out, *extra, env={"ONNX_COMPAT_EXTRA_BACKENDS": ALL})


def _records(out):
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def test_failing_cells_get_bundles_and_the_run_states_their_cost(run_cli, tmp_path):
    proc = _run(run_cli, tmp_path / "o")
    recs = _records(tmp_path / "o")
    failing = [r for r in recs if r["status"] != "pass"]
    assert failing and all(r["repro"] and (tmp_path / "o" / "repro").is_dir() for r in failing)
    assert f"{len({r['case_id'] for r in failing})} repro bundle(s) of failing cells" in proc.stderr
    assert "--no-repro writes none" in proc.stderr


def test_no_repro_writes_no_bundle_and_says_how_to_get_one(run_cli, tmp_path):
    proc = _run(run_cli, tmp_path / "o", "--no-repro")
    recs = _records(tmp_path / "o")
    assert any(r["status"] != "pass" for r in recs), "the fake backend must fail some cells for this test to mean anything"
    assert all(r["repro"] is None for r in recs)
    assert not (tmp_path / "o" / "repro").exists()
    assert "no repro bundles written (--no-repro); `onnx-compat export CASE --out DIR` writes one" in proc.stderr


def test_a_skipped_cell_gets_no_bundle(run_cli, tmp_path):
    """`skip` is the harness's own subset rule, not a verdict: the main job once wrote a bundle for
    every cell the WebGPU and JS columns skip (1 431 bundles, 1.2 GB, most of them for skips)."""
    proc = _run(run_cli, tmp_path / "o", backends="fake-subset-skip")
    recs = _records(tmp_path / "o")
    assert recs and {r["status"] for r in recs} == {"skip"}
    assert all(r["repro"] is None for r in recs) and not (tmp_path / "o" / "repro").exists(), proc.stderr


def test_a_case_over_the_array_cap_gets_no_bundle_and_the_run_says_so(run_cli, tmp_path):
    """Phi-3's shape-true GroupQueryAttention bundles were ~180 MB of random KV buffer each: a
    case whose arrays exceed ONNX_COMPAT_REPRO_MAX_MB (default 64) is left to `export`, and said."""
    out = tmp_path / "o"
    proc = run_cli("run", *SEL, "--backends", "fake-lie", "--out", out,
                   env={"ONNX_COMPAT_EXTRA_BACKENDS": ALL, "ONNX_COMPAT_REPRO_MAX_MB": "0.0001"})
    recs = _records(out)
    failing = {r["case_id"] for r in recs if r["status"] != "pass"}
    assert failing and all(r["repro"] is None for r in recs) and not (out / "repro").exists()
    assert f"{len(failing)} failing case(s) got no repro bundle (arrays over 0.0001 MiB" in proc.stderr
    assert "onnx-compat export CASE --out DIR" in proc.stderr
