"""The zoo harness: schemas, the teacher-forced decode loop per cache kind, logit metrics,
twin cases, the hub cache path and the CLI wiring. Fixture twins (tests/test_zoo_fixture_twins.py)
have a numpy float64 oracle of their own maths, so a pass here means the loop is right."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness import backends
from harness.backends.base import Backend, ModelRef, Session
from harness.runner import run_cell
from harness.zoo import ZooError, load_zoo, zoo_cases
from harness.zoo.decode import plan
from harness.zoo.metrics import judge_logits, logit_metrics
from harness.zoo.schema import Contract, Manifest, Tokens, ZooModel
from harness.zoo.twins import load_manifest
from harness import tolerances

from .test_zoo_fixture_twins import DECODE, PROMPT, make_twin

KINDS = ["concat", "embed", "shared_buffer", "static", "prefill"]


@pytest.fixture
def twins(tmp_path, monkeypatch):
    d = tmp_path / "twins"
    for k in KINDS:
        make_twin(d, k)
    monkeypatch.setenv("ONNX_COMPAT_TWINS", str(d))
    from harness import case as case_mod

    case_mod._CACHE.clear()  # built cases are cached by id; each test has its own twin folder
    return d


def _case(name):
    return next(c for c in zoo_cases("twins") if c.id == f"zoo/{name}")


# ------------------------------------------------------------------ decode loop per cache kind

@pytest.mark.parametrize("backend", ["reference", "ort-cpu"])
@pytest.mark.parametrize("kind", KINDS)
def test_decode_loop_matches_the_fixture_oracle(twins, kind, backend):
    rec = run_cell(_case(f"fixture-{kind}"), backends.get(backend, isolated=False))
    assert rec["status"] == "pass", rec["message"]
    steps = rec["metrics"]["steps"]
    assert len(steps) == 1 + len(DECODE)
    assert all(s["top1"] == 1.0 and s["kl"] < 1e-9 for s in steps)
    assert rec["metrics"]["oracle"].startswith("torch eager") and "judged against" in rec["message"]


def test_a_wrong_position_base_is_a_mismatch(twins):
    """The contract drives the loop: a manifest that says base 1 for a graph whose oracle used
    base 0 must not pass (this is what a 1-based TJS Gemma-3 export fed 0-based would show)."""
    p = twins / "fixture-concat" / "manifest.json"
    m = json.loads(p.read_text())
    m["contract"]["position_base"] = 1
    p.write_text(json.dumps(m))
    rec = run_cell(_case("fixture-concat"), backends.get("ort-cpu"))
    assert rec["status"] == "mismatch"
    assert rec["metrics"]["steps"][0]["nmse"] > 1e-3


def test_prefill_graph_presents_feed_the_decode_graph(twins):
    """Step 1 runs the decode graph on the prefill graph's presents, not on an empty buffer
    (the bug that made every decode step of a prefill/decode twin disagree)."""
    c = _case("fixture-prefill")
    steps = c.build().driver.steps
    assert steps[0].graph == "onnx/prefill.onnx" and steps[1].graph == "onnx/model.onnx"
    assert not any(k.startswith("past_key_values") for k in steps[1].feeds)


class Recording(Backend):
    """ort-cpu, but every logit vector's argmax is moved to token 0 and every feed recorded."""

    name = "recording"

    def __init__(self):
        self.inner = backends.get("ort-cpu")
        self.fed: list[dict] = []

    def available(self):
        return True, ""

    def version(self):
        return "test"

    def prepare(self, model: ModelRef) -> Session:
        inner, fed = self.inner.prepare(model), self.fed

        class S(Session):
            def run(self, feeds):
                fed.append({k: np.array(v) for k, v in feeds.items()})
                out = dict(inner.run(feeds))
                out["logits"] = out["logits"].copy()
                out["logits"][..., 0] = 1e4
                return out
        return S()


def test_teacher_forcing_feeds_the_manifest_tokens_not_the_argmax(twins):
    b = Recording()
    rec = run_cell(_case("fixture-concat"), b)
    ids = [f["input_ids"].tolist() for f in b.fed]
    assert ids == [[PROMPT]] + [[t] for t in DECODE]
    assert [f["attention_mask"].shape[1] for f in b.fed] == [len(PROMPT) + i for i in range(len(DECODE) + 1)]
    assert rec["status"] == "mismatch" and rec["metrics"]["top1"] == 0.0


def _contract(**kv):
    return Contract.model_validate({"graphs": {"decoder": "m.onnx"}, "kv": {"count": 1, "heads": 2, "head_dim": 4, **kv}})


def _inputs(contract, extra=()):
    from harness.zoo.decode import InputSpec

    names = ["input_ids", "attention_mask", "position_ids", "past_key_values.0.key", "past_key_values.0.value", *extra]
    return {"m.onnx": {n: InputSpec(np.int64 if "past" not in n else np.float32, 2) for n in names}}


@pytest.mark.parametrize("cache,rows", [("concat", 0), ("sliding_window", 4), ("shared_buffer", 9)])
def test_plan_binds_the_first_past_per_cache_kind(cache, rows):
    c = _contract(cache=cache, window=4 if cache == "sliding_window" else None,
                  max_length=9 if cache == "shared_buffer" else None)
    tokens = Tokens(batch=1, prompt=[[1, 2, 3]], decode=[[4], [5]])
    steps = plan(c, tokens, _inputs(c))
    assert steps[0].feeds["past_key_values.0.key"].shape == (1, 2, rows, 4)
    assert all("past_key_values.0.key" not in s.feeds for s in steps[1:])  # fed back from presents
    assert [s.feeds["position_ids"].tolist() for s in steps] == [[[0, 1, 2]], [[3]], [[4]]]
    assert [s.feeds["attention_mask"].shape for s in steps] == [(1, 3), (1, 4), (1, 5)]


def test_plan_extra_inputs_and_a_missing_input_named():
    c = Contract.model_validate({"graphs": {"decoder": "m.onnx"}, "extra_inputs": {"num_logits_to_keep": "zero"},
                                 "kv": {"count": 1, "heads": 2, "head_dim": 4}})
    steps = plan(c, Tokens(batch=1, prompt=[[1, 2]], decode=[[3]]), _inputs(c, ["num_logits_to_keep"]))
    assert steps[0].feeds["num_logits_to_keep"].tolist() == [[0]]
    from harness.zoo.decode import ContractError

    with pytest.raises(ContractError, match="num_logits_to_keep"):
        plan(c, Tokens(batch=1, prompt=[[1, 2]], decode=[[3]]), _inputs(c))


# ------------------------------------------------------------------ metrics

def test_logit_metrics_known_values():
    b = np.log(np.array([[[0.4, 0.3, 0.15, 0.08, 0.05, 0.02]]]))
    a = b[..., ::-1].copy()
    m = logit_metrics(b, b)
    assert m["top1"] == 1.0 and m["top5"] == 1.0 and abs(m["kl"]) < 1e-12 and m["cosine"] == pytest.approx(1.0)
    m = logit_metrics(a, b)
    p, q = np.exp(b[0, 0]), np.exp(a[0, 0])
    assert m["top1"] == 0.0 and m["top5"] == pytest.approx(0.8)  # {0,1,2,3,4} vs {5,4,3,2,1}
    assert m["kl"] == pytest.approx(float(np.sum(p * np.log(p / q))))


def test_judge_logits_last_position_and_oracle_named():
    tol = tolerances.get("fp32-logits")
    exp = [np.zeros((1, 3, 4), np.float32) + np.arange(4), np.arange(4, dtype=np.float32).reshape(1, 1, 4)]
    j = judge_logits([exp[0][:, -1:], exp[1]], exp, tol, "X")
    assert j.passed and j.metrics["steps"][0]["positions"] == "last" and j.message == "judged against X"
    j = judge_logits([exp[0], exp[1] + 1.0], exp, tol, "X")
    assert not j.passed and j.metrics["first_bad_step"] == 1


# ------------------------------------------------------------------ schemas

def _zoo_entry(**over):
    e = {"name": "m", "repo": "org/model", "revision": "a" * 40, "form": "f", "precision": "q4",
         "exporter": {"name": "x", "version": "1"}, "files": [{"path": "onnx/m.onnx"}],
         "contract": {"graphs": {"decoder": "onnx/m.onnx"}, "kv": {"count": 1, "heads": 1, "head_dim": 4}}}
    e.update(over)
    return e


@pytest.mark.parametrize("over,needle", [
    ({"trust_remote_code": True}, "trust_remote_code is never allowed"),
    ({"colour": "red"}, "colour: unknown key"),
    ({"revision": "a58439f"}, "revision"),
    ({"revision": None}, "exactly one of revision"),
    ({"repo": "org/../x"}, "repo"),
    ({"files": [{"path": "../etc/passwd"}]}, "'..'"),
    ({"files": [{"path": "/abs.onnx"}]}, "relative path"),
    ({"files": [{"path": "onnx\\m.onnx"}]}, "forward slashes"),
    ({"files": [{"path": "onnx/m.onnx", "sha256": "xyz"}]}, "sha256"),
    ({"files": [{"path": "onnx/m.onnx"}, {"path": "modeling.py"}]}, "is code"),
    ({"files": [{"path": "other.onnx"}]}, "not listed in files"),
])
def test_zoo_yaml_refusals_are_one_line_naming_entry_and_field(tmp_path, over, needle):
    p = tmp_path / "zoo.yaml"
    p.write_text(yaml.safe_dump({"version": 1, "models": [_zoo_entry(**over)]}))
    with pytest.raises(ZooError) as e:
        load_zoo(p)
    msg = str(e.value)
    assert "\n" not in msg and needle in msg and str(p) in msg and "model 'm'" in msg


def test_manifest_refusals(twins):
    p = twins / "fixture-concat" / "manifest.json"
    m = json.loads(p.read_text())
    m["contract"]["kv"]["cache"] = "static"  # static needs max_length and cache_position
    p.write_text(json.dumps(m))
    with pytest.raises(ZooError, match="max_length"):
        load_manifest(p.parent)
    rec = run_cell(_case("fixture-concat"), backends.get("reference"))
    assert rec["status"] == "error" and "max_length" in rec["message"]


def test_tampered_twin_file_is_an_error_naming_it(twins):
    f = twins / "fixture-concat" / "oracle.npz"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    rec = run_cell(_case("fixture-concat"), backends.get("reference"))
    assert rec["status"] == "error" and "oracle.npz" in rec["message"] and "sha256" in rec["message"]


def test_the_repo_zoo_yaml_and_twins_validate():
    zoo = load_zoo()
    names = {m.name for m in zoo.models}
    assert names >= {"gemma3-1b", "gemma3-1b-gqa", "phi3-mini-4k-genai-cpu-int4", "qwen2.5-0.5b",
                     "gemma4-e2b-onnx-community"}
    by_name = {m.name: m for m in zoo.models}
    for d in Path(__file__).resolve().parents[1].glob("zoo/twins/*/manifest.json"):
        m = load_manifest(d.parent)  # every shipped manifest passes the strict schema
        if m.model in by_name:  # forms without a hub export (issue 13's hand-built ones) have no entry
            assert m.name in by_name[m.model].twins, f"zoo.yaml {m.model}: twins does not list {m.name}"


# ------------------------------------------------------------------ hub cache (offline)

REV = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(cache: Path, repo: str, twin: Path, rev: str = REV) -> dict:
    """Lay `twin`'s files out as huggingface_hub does (zoo-facts §7): blobs/<sha256>,
    snapshots/<rev>/<path> relative symlinks, refs/main without a newline."""
    m = Manifest.model_validate_json((twin / "manifest.json").read_text())
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(rev)
    for rel, sha in m.files.items():
        blob = root / "blobs" / sha
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(twin / rel, blob)
        link = root / "snapshots" / rev / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return {"name": twin.name, "repo": repo, "revision": rev, "form": m.form, "precision": m.precision,
            "exporter": {"name": "fixture", "version": "0"},
            "files": [{"path": p, "sha256": s} for p, s in m.files.items() if p != "oracle.npz"],
            "contract": json.loads(m.contract.model_dump_json()), "twins": [twin.name]}


@pytest.fixture
def hub(tmp_path, twins, monkeypatch):
    import huggingface_hub.constants as C

    cache = tmp_path / "hf"
    entries = [hub_cache(cache, f"fixture-org/{k}", twins / f"fixture-{k}") for k in ("concat", "embed")]
    entries[1]["files"] = [{k: v for k, v in f.items() if k != "sha256"} for f in entries[1]["files"]]  # -> zoo.lock
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(yaml.safe_dump({"version": 1, "models": entries}))
    monkeypatch.setenv("ONNX_COMPAT_ZOO", str(zoo))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache))
    return cache, zoo


def test_hub_offline_runs_against_the_oracle_backend_and_records_missing_checksums(hub, capsys):
    cache, zoo = hub
    cases = zoo_cases("hub")
    assert [c.id for c in cases] == ["zoo/hub/fixture-concat", "zoo/hub/fixture-embed"]
    for c in cases:
        rec = run_cell(c, backends.get("reference"))
        assert rec["status"] == "pass", rec["message"]
        assert "ort-cpu-noopt" in rec["message"] and "no eager oracle" in rec["message"]
    rec = run_cell(cases[0], backends.get("ort-cpu-noopt"))
    assert rec["metrics"]["self_oracle"] and rec["message"].startswith("this backend is the oracle")
    from harness.bundle import write_bundle  # a hub model's bundle: the zoo kind, files from the cache

    dest = write_bundle(cases[0], cases[0].build(), cache.parent / "bundle")
    assert json.loads((dest / "case.json").read_text())["kind"] == "zoo"
    assert (dest / "graphs" / "onnx" / "model.onnx").exists()
    lock = json.loads((zoo.with_name("zoo.lock")).read_text())["files"]
    assert any(k.startswith(f"fixture-org/embed@{REV}/onnx/") for k in lock)
    assert "zoo.lock: recorded sha256" in capsys.readouterr().err


def test_hub_tampered_blob_and_missing_file(hub):
    cache, zoo = hub
    case = zoo_cases("hub")[0]
    blob = next((cache / "models--fixture-org--concat" / "blobs").iterdir())
    blob.write_bytes(blob.read_bytes() + b"x")
    rec = run_cell(case, backends.get("reference"))
    assert rec["status"] == "error" and "tampered" in rec["message"]
    assert "Traceback" not in rec["message"] and len(rec["message"].splitlines()) == 2  # the harness's lead-in + one line
    blob.unlink()
    case = zoo_cases("hub")[0]
    from harness import case as case_mod

    case_mod._CACHE.clear()
    rec = run_cell(case, backends.get("reference"))
    assert rec["status"] == "error" and "hf download fixture-org/concat" in rec["message"]


def test_hub_refuses_an_unresolved_revision(tmp_path, monkeypatch):
    p = tmp_path / "zoo.yaml"
    p.write_text(yaml.safe_dump({"version": 1, "models": [_zoo_entry(revision=None, unresolved="a58439f… short")]}))
    monkeypatch.setenv("ONNX_COMPAT_ZOO", str(p))
    rec = run_cell(zoo_cases("hub")[0], backends.get("reference"))
    assert rec["status"] == "error" and "no pinned revision (a58439f… short)" in rec["message"]


# ------------------------------------------------------------------ pytest and CLI

def test_pytest_m_zoo_collects_the_twins(twins, run_cli):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "pytest", "cases/zoo.py", "-m", "zoo_fixture_shared_buffer", "--backend",
                           "reference", "--collect-only", "-q"], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, ONNX_COMPAT_TWINS=str(twins)))
    assert "zoo/fixture-shared_buffer[reference]" in proc.stdout, proc.stdout + proc.stderr
    assert "fixture-concat" not in proc.stdout


def test_cli_run_zoo_modes_and_jobs(twins, tmp_path, run_cli):
    env = {"ONNX_COMPAT_TWINS": str(twins)}
    run_cli("run", "-m", "zoo", "--zoo", "none", "--backends", "reference", "--out", tmp_path / "a", env=env, check=2)
    run_cli("run", "-m", "zoo", "--backends", "reference,ort-cpu", "--jobs", "2", "--quiet", "--out", tmp_path / "b",
            env=env, check=0)
    recs = [json.loads(x) for x in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 2 * len(KINDS) and {r["status"] for r in recs} == {"pass"}
    assert all(len(r["metrics"]["steps"]) == 4 for r in recs)
    html = (tmp_path / "b" / "report.html").read_text()
    assert "Hub models × runtimes" in html and "fixture-shared-buffer" in html and "torch eager (oracle.npz)" in html


def test_cli_run_zoo_hub_offline_end_to_end(hub, tmp_path, run_cli):
    cache, zoo = hub
    env = {k: os.environ[k] for k in ("ONNX_COMPAT_TWINS", "ONNX_COMPAT_ZOO", "HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    run_cli("run", "-m", "zoo", "--zoo", "hub", "--backends", "reference,tract", "--quiet", "--out", tmp_path / "h",
            env=env, check=0)
    recs = [json.loads(x) for x in (tmp_path / "h" / "results.jsonl").read_text().splitlines()]
    assert {r["case_id"] for r in recs} == {"zoo/hub/fixture-concat", "zoo/hub/fixture-embed"}
    assert {r["status"] for r in recs} == {"pass"}
    assert all("judged against ort-cpu-noopt" in r["message"] for r in recs)
    assert not any(r["metrics"].get("self_oracle") for r in recs)
    blob = (cache / "models--fixture-org--concat" / "snapshots" / REV / "onnx" / "model.onnx").resolve()
    blob.write_bytes(b"tampered")
    run_cli("run", "-m", "zoo", "--zoo", "hub", "--backends", "reference", "--quiet", "--out", tmp_path / "t",
            env=env, check=0)
    recs = [json.loads(x) for x in (tmp_path / "t" / "results.jsonl").read_text().splitlines()]
    bad = next(r for r in recs if r["case_id"] == "zoo/hub/fixture-concat")
    assert bad["status"] == "error" and "tampered" in bad["message"] and blob.name in bad["message"]


def _project(tmp_path, monkeypatch):
    """A project root with one builder script and one (empty) exporter environment."""
    from harness.zoo import build

    (tmp_path / "zoo" / "envs").mkdir(parents=True)
    (tmp_path / "zoo" / "build").mkdir(parents=True)
    (tmp_path / "zoo" / "envs" / "empty.txt").write_text("# nothing: the fixture's build needs only the standard library\n")
    (tmp_path / "zoo" / "build" / "fixture_build.py").write_text(
        "import sys\nif sys.argv[1:] == ['fail']:\n    raise SystemExit('exporter failed: KeyError rope_type')\n"
        "print(sys.prefix)\n")
    monkeypatch.setattr(build, "ENVS", tmp_path / "zoo-envs")
    monkeypatch.setattr(build, "ROOT", tmp_path)
    return build


def test_cli_twins_list_and_build(twins, tmp_path, run_cli, monkeypatch):
    """`twins build` runs the manifest's project script with its exporter environment's Python
    (made from zoo/envs/<env>.txt under .zoo-envs/, then reused), and compares the graph summary."""
    out = run_cli("twins", "list", env={"ONNX_COMPAT_TWINS": str(twins)}, check=0).stdout
    assert "fixture-static" in out and "static" in out and "KiB" in out
    build = _project(tmp_path, monkeypatch)
    p = twins / "fixture-concat" / "manifest.json"
    m = json.loads(p.read_text())
    m["exporter"].update(env="zoo/envs/empty.txt", script="zoo/build/fixture_build.py",
                         command="python zoo/build/fixture_build.py")
    p.write_text(json.dumps(m))
    r = build.build("fixture-concat")
    assert r["graph_changes"] == [] and (tmp_path / "zoo-envs" / "empty" / ".requirements.sha256").exists()
    m["exporter"]["command"] = "python zoo/build/fixture_build.py fail"
    p.write_text(json.dumps(m))
    with pytest.raises(ZooError, match="exited 1: exporter failed: KeyError rope_type"):
        build.build("fixture-concat")


def test_sliding_window_gives_window_buffers_only_to_windowed_layers():
    """The builder's windowed graph has window-sized buffers on local layers and max_length
    ones on global layers (ORT: "total_sequence_length must equal past_sequence_length" when a
    global layer gets a window buffer). Read from the graph, or from kv.window_layers."""
    from harness.zoo.decode import InputSpec

    base = {"graphs": {"decoder": "m.onnx"}, "kv": {"count": 2, "heads": 1, "head_dim": 4, "cache": "sliding_window",
                                                     "window": 4, "max_length": 9}}
    names = ["input_ids", "attention_mask", "position_ids"] + [f"past_key_values.{i}.{k}" for i in (0, 1)
                                                               for k in ("key", "value")]
    inputs = {"m.onnx": {n: InputSpec(np.float32 if "past" in n else np.int64, 2) for n in names}}
    tokens = Tokens(batch=1, prompt=[[1, 2, 3, 4, 5, 6]], decode=[[7]])
    rows = lambda st: [st[0].feeds[f"past_key_values.{i}.key"].shape[2] for i in (0, 1)]  # noqa: E731
    assert rows(plan(Contract.model_validate(base), tokens, inputs, {"past_key_values.0.key", "past_key_values.0.value"})) == [4, 9]
    base["kv"]["window_layers"] = [1]
    assert rows(plan(Contract.model_validate(base), tokens, inputs)) == [9, 4]


def test_plan_refuses_tokens_that_overflow_a_fixed_cache():
    from harness.zoo.decode import ContractError

    c = _contract(cache="shared_buffer", max_length=3)
    with pytest.raises(ContractError, match="4 tokens do not fit the shared_buffer cache of kv.max_length 3"):
        plan(c, Tokens(batch=1, prompt=[[1, 2, 3]], decode=[[4]]), _inputs(c))


@pytest.mark.parametrize("kind", ["embed", "prefill"])
def test_multigraph_bundle_replays_standalone(twins, tmp_path, kind):
    """A zoo model of several graphs gets a bundle of its own (graphs, planned feeds, oracle
    logits, repro.py with the same loop): it passes on ORT, and fails once the oracle is off."""
    import subprocess
    import sys

    from harness.bundle import write_bundle

    case = _case(f"fixture-{kind}")
    dest = write_bundle(case, case.build(), tmp_path / "b")
    assert (dest / "graphs" / "onnx" / "model.onnx").exists() and json.loads((dest / "case.json").read_text())["pairs"]
    run = lambda: subprocess.run([sys.executable, "repro.py", "ort-cpu"], cwd=dest, capture_output=True, text=True)  # noqa: E731
    p = run()
    assert p.returncode == 0 and "PASS" in p.stdout, p.stdout + p.stderr
    with np.load(dest / "expected.npz") as z:
        e = {k: z[k] for k in z.files}
    e["step2"] = e["step2"] + 0.5
    np.savez(dest / "expected.npz", **e)
    p = run()
    assert p.returncode == 1 and "step 2" in p.stdout and "MISMATCH" in p.stdout


def test_build_argv_and_dot_folders_are_not_twins(twins, monkeypatch, tmp_path):
    from harness.zoo.twins import manifest_dirs

    build = _project(tmp_path, monkeypatch)
    (tmp_path / "zoo" / "envs" / "x.txt").write_text("")
    (tmp_path / "zoo" / "build" / "s.py").write_text("")

    shutil.copytree(twins / "fixture-concat", twins / ".fixture-concat.tmp123")  # a builder's write in progress
    assert all(not d.name.startswith(".") for d in manifest_dirs())
    monkeypatch.setattr(build, "env_python", lambda req, log=None: f"<{req.name}>")
    m = load_manifest(twins / "fixture-concat").model_copy(update={"exporter": Manifest.model_fields["exporter"]
                                                                   .annotation(name="b", version="1",
                                                                               env="zoo/envs/x.txt",
                                                                               command="python -m builder -i ckpt",
                                                                               script="zoo/build/s.py")})
    assert build.build_argv(m, "fixture-concat") == ["<x.txt>", "zoo/build/s.py", "fixture-concat"]
    m2 = m.model_copy(update={"exporter": m.exporter.model_copy(update={"command": "python zoo/build/s.py fp16"})})
    assert build.build_argv(m2, "fixture-concat") == ["<x.txt>", "zoo/build/s.py", "fp16"]


REAL = {"gemma3-genai-current-fp32": "sliding_window", "gemma3-statickv-irbuilt-fp32": "static",
        "gemma4-tjs-fp32": "concat", "qwen25-optimum-fp32": "concat"}


@pytest.mark.parametrize("name", sorted(REAL))
def test_shipped_fp32_twins_pass_on_ort_cpu(name):
    """The loop on real exports of each cache kind and graph layout (windowed GQA with global
    layers, prefill + decode static cache, embed + decoder): ORT CPU matches their eager
    oracles on every step (measured NMSE <= 2e-12), as the builders' own checks also found."""
    root = Path(__file__).resolve().parents[1] / "zoo" / "twins" / name
    if not (root / "manifest.json").exists():
        pytest.skip(f"twin {name} not shipped in this checkout")
    from harness import case as case_mod

    case_mod._CACHE.clear()
    case = next(c for c in zoo_cases("twins") if c.id == f"zoo/{name}")
    assert case.features["cache"] == REAL[name]
    rec = run_cell(case, backends.get("ort-cpu"))
    assert rec["status"] == "pass", rec["message"]
    assert rec["metrics"]["top1"] == 1.0 and len(rec["metrics"]["steps"]) == 5


def test_multigraph_bundle_links_big_files(twins, tmp_path, monkeypatch):
    from harness.bundle import write_bundle
    from harness.zoo import bundle as zb

    monkeypatch.setattr(zb, "LINK_OVER", 0)  # every file counts as big
    case = _case("fixture-embed")
    dest = write_bundle(case, case.build(), tmp_path / "b")
    assert (dest / "graphs" / "onnx" / "model.onnx").is_symlink()
