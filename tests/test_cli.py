"""The CLI as users call it: exports that reproduce with plain onnxruntime, check's verdicts and
exit codes, and one-line errors for every kind of bad input."""

import json

import numpy as np
import onnx
import pytest

CASE = "rotary/ms-3d-interleaved1-rotdim8-pos2d-headsgiven-b2s5h4d16-fp32"


def test_backends_lists_every_backend_with_a_reason(run_cli):
    out = run_cli("backends", "--json", check=0)
    rows = {r["backend"]: r for r in json.loads(out.stdout)}
    assert {"reference", "ort-cpu", "ort-cpu-noopt", "ort-cuda", "tract", "tract-cli"} <= set(rows)
    assert rows["reference"]["available"] and rows["ort-cpu"]["available"]
    for r in rows.values():
        assert r["available"] or r["reason"]


def test_list_json_has_features(run_cli):
    out = run_cli("list", "-m", "rotary", "--json", check=0)
    items = json.loads(out.stdout)
    assert items and all("features" in i and "rotary" in i["marks"] for i in items)


def test_export_reproduces_with_plain_onnxruntime(run_cli, tmp_path):
    import onnxruntime as ort

    d = tmp_path / "bundle"
    run_cli("export", CASE, "--out", d, check=0)
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = dict(np.load(d / "inputs.npz"))
    expected = dict(np.load(d / "expected.npz"))
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
    for name, e in expected.items():
        np.testing.assert_allclose(got[name], e, rtol=1e-5, atol=1e-6)
    meta = json.loads((d / "case.json").read_text())
    assert meta["case_id"] == CASE and meta["tolerance"]["profile"] == "fp32-pointwise"


def test_check_passes_a_good_bundle_and_fails_a_wrong_expected(run_cli, tmp_path):
    d = tmp_path / "bundle"
    run_cli("export", CASE, "--out", d, check=0)
    ok = run_cli("check", d, "--backends", "ort-cpu,reference", check=0)
    assert "ort-cpu" in ok.stdout and "pass" in ok.stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    model = onnx.load(str(d / "model.onnx"))
    onnx.save(model, str(bad / "model.onnx"))
    inputs = dict(np.load(d / "inputs.npz"))
    np.savez(bad / "inputs.npz", **inputs)
    expected = {k: v + 0.5 for k, v in np.load(d / "expected.npz").items()}
    np.savez(bad / "expected.npz", **expected)
    out = run_cli("check", bad, "--backends", "ort-cpu,reference", check=1)
    assert out.stdout.count("mismatch") == 2


def test_check_without_expected_uses_the_reference_as_oracle(run_cli, tmp_path):
    d = tmp_path / "bundle"
    run_cli("export", CASE, "--out", d, check=0)
    (d / "expected.npz").unlink()
    (d / "case.json").unlink()
    out = run_cli("check", d, "--backends", "ort-cpu,reference", check=0)
    assert "oracle: reference backend" in out.stdout


def test_check_a_bare_model_file(run_cli, tmp_path):
    d = tmp_path / "bundle"
    run_cli("export", CASE, "--out", d, check=0)
    out = run_cli("check", d / "model.onnx", "--backends", "ort-cpu", check=0)
    assert "pass" in out.stdout


def _one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    for w in words:
        assert w in err[0], err[0]


def _junk_model(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model at all" * 10)
    return junk


def _bundle_with(tmp_path, run_cli, inputs_npz):
    d = tmp_path / "b"
    run_cli("export", CASE, "--out", d, check=0)
    inputs_npz(d / "inputs.npz")
    return d


#: (id, argv from tmp_path and run_cli, words the one line must hold); one test each, so that
#: pytest-xdist spreads the 14 command starts over its workers
BAD_INPUTS = [
    ("check-missing", lambda t, c: ["check", t / "nope"], ["nope"]),
    ("check-empty-dir", lambda t, c: ["check", (t / "empty").mkdir() or t / "empty"], ["model.onnx"]),
    ("check-junk-model", lambda t, c: ["check", _junk_model(t)], ["junk.onnx", "not an ONNX model"]),
    ("check-wrong-inputs", lambda t, c: ["check", _bundle_with(t, c, lambda p: np.savez(p, wrong=np.zeros(3, np.float32)))],
     ["inputs.npz", "wrong", "graph"]),
    ("check-garbage-npz", lambda t, c: ["check", _bundle_with(t, c, lambda p: p.write_bytes(b"garbage"))],
     ["inputs.npz", "npz"]),
    ("run-unknown-backend", lambda t, c: ["run", "--backends", "ort-gpu", "--out", t / "o"], ["--backends", "ort-gpu"]),
    ("run-unknown-mark", lambda t, c: ["run", "-m", "nosuchmark", "--out", t / "o"], ["-m", "nosuchmark"]),
    ("run-bad-k", lambda t, c: ["run", "-k", "rotary and", "--out", t / "o"], ["-k"]),
    ("run-no-case", lambda t, c: ["run", "-k", "zzz-no-case", "--out", t / "o"], ["no case"]),
    ("run-bad-shard", lambda t, c: ["run", "--shard", "4/3", "--out", t / "o"], ["--shard"]),
    ("export-unknown-case", lambda t, c: ["export", "rotary/nope", "--out", t / "x"], ["rotary/nope"]),
    ("report-missing-results", lambda t, c: ["report", t / "missing.jsonl", "--out", t / "r"], ["missing.jsonl"]),
]


@pytest.mark.parametrize(("argv", "words"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_errors_are_one_line_and_name_the_file_or_option(run_cli, tmp_path, argv, words):
    _one_line_error(run_cli(*argv(tmp_path, run_cli)), *words)
    assert not (tmp_path / "o").exists() and not (tmp_path / "x").exists() and not (tmp_path / "r").exists()


def test_run_writes_the_contract_files_and_refuses_to_overwrite(run_cli, tmp_path):
    out = tmp_path / "o"
    run_cli("run", "-k", "rotary/ms-3d-interleaved0-rotdim0-pos2d-headsgiven", "--backends", "reference,ort-cpu",
            "--out", out, "--quiet", check=0)
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert recs and {r["backend"] for r in recs} == {"reference", "ort-cpu"}
    for f in ("matrix.csv", "matrix.json", "report.html"):
        assert (out / f).stat().st_size > 0
    again = run_cli("run", "-k", "rotary", "--backends", "reference", "--out", out)
    _one_line_error(again, "--resume")
