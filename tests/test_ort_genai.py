"""The ort-genai column: op cases skip by the harness's rule, a missing package is `unavailable`
with the install command, the genai_config written from a contract, and (where
onnxruntime_genai is importable: its own venv, see harness/backends/ort_genai.py) real runs of
shipped twins through og.Model / og.Generator."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from harness.backends.ort_genai import INSTALL, SKIP_OP_CASES, OrtGenai, genai_config, own_config_folder
from harness.case import Built, Case
from harness.runner import run_cell
from harness.zoo.twins import load_manifest

ROOT = Path(__file__).resolve().parents[1]
TWINS = ROOT / "zoo" / "twins"
HAVE_GENAI = importlib.util.find_spec("onnxruntime_genai") is not None
needs_genai = pytest.mark.skipif(not HAVE_GENAI, reason="onnxruntime_genai not importable here; run this file in "
                                 "the ort-genai venv (python -m venv .zoo-envs/ort-genai && "
                                 ".zoo-envs/ort-genai/bin/pip install -e '.[dev,genai]')")


def _op_case() -> Case:
    def make(rng):
        g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        x = np.array([-1.0, 2.0], np.float32)
        return Built(model=helper.make_model(g), feeds=[{"x": x}], expected=[{"y": np.maximum(x, 0)}])

    return Case(id="test/relu", family="norm", features={}, marks=(), tolerance="fp32-pointwise", make=make)


class _Tripwire(OrtGenai):
    """Fails the test if the runner asks it to load anything for an op case."""

    def drive(self, driver):
        raise AssertionError("drive() called for an op case")

    def prepare(self, model):
        raise AssertionError("prepare() called for an op case")


def _zoo_case(name: str) -> Case:
    from harness.zoo.cases import twin_cases

    cases = {c.id: c for c in twin_cases()}
    assert f"zoo/{name}" in cases, f"twin {name} is not in {TWINS}"
    return cases[f"zoo/{name}"]


@pytest.mark.parametrize("importable", [True, False])
def test_op_case_is_skip_with_the_reason_whether_or_not_installed(monkeypatch, importable):
    if not importable:
        monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)
    rec = run_cell(_op_case(), _Tripwire())
    assert rec["status"] == "skip"
    assert rec["message"] == SKIP_OP_CASES


def test_op_case_is_skip_under_worker_isolation_too():
    from harness.backends.worker import IsolatedBackend

    b = IsolatedBackend(_Tripwire())  # what --isolate hands the runner; no worker is started for a skip
    try:
        rec = run_cell(_op_case(), b)
    finally:
        b.close()
    assert (rec["status"], rec["message"]) == ("skip", SKIP_OP_CASES)


def test_unavailable_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)  # import raises ImportError
    b = OrtGenai()
    ok, why = b.available()
    assert not ok and INSTALL in why and "onnxruntime_genai" in why
    assert b.version() == "not installed"
    rec = run_cell(_zoo_case("gemma3-statickv-irbuilt-fp32"), b)
    assert rec["status"] == "unavailable" and "pip install -e .[genai]" in rec["message"]


def test_genai_config_written_from_a_concat_contract():
    m = load_manifest(TWINS / "qwen25-optimum-fp32")
    cfg, notes = genai_config(m.contract, TWINS / "qwen25-optimum-fp32", steps=5, prompt=24)
    hf = json.loads((TWINS / "qwen25-optimum-fp32" / "config.json").read_text())
    dec = cfg["model"]["decoder"]
    assert dec["filename"] == m.contract.graphs.decoder
    assert dec["inputs"]["past_key_names"] == m.contract.kv.past.replace("{i}", "%d").replace("{kv}", "key")
    assert dec["outputs"]["present_value_names"] == m.contract.kv.present.replace("{i}", "%d").replace("{kv}", "value")
    assert dec["inputs"].get("attention_mask") == m.contract.attention_mask
    assert dec["inputs"].get("position_ids") == m.contract.position_ids
    assert (dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]) == \
        (m.contract.kv.count, m.contract.kv.heads, m.contract.kv.head_dim)
    assert cfg["model"]["type"] == hf["model_type"] and cfg["model"]["vocab_size"] == hf["vocab_size"]
    assert cfg["search"]["max_length"] >= 24 + 4 and cfg["search"]["past_present_share_buffer"] is False
    assert notes == []


def test_genai_config_says_what_a_static_contract_loses():
    m = load_manifest(TWINS / "gemma3-statickv-irbuilt-fp32")
    cfg, notes = genai_config(m.contract, TWINS / "gemma3-statickv-irbuilt-fp32", steps=5, prompt=24)
    dec = cfg["model"]["decoder"]
    assert cfg["model"]["type"] == "decoder-pipeline" and "filename" not in dec
    assert "attention_mask" not in dec["inputs"]
    (pre,), (step,) = (list(st.values()) for st in dec["pipeline"])
    assert (pre["filename"], pre["run_on_prompt"], pre["run_on_token_gen"]) == (m.contract.graphs.prefill, True, False)
    assert (step["filename"], step["run_on_prompt"], step["run_on_token_gen"]) == (m.contract.graphs.decoder, False, True)
    assert pre["inputs"] == ["input_ids", "cache_position"] and "past_key_values.0.key" in step["inputs"]
    assert step["outputs"][0] == "logits" and "present.5.value" in step["outputs"]
    text = " ".join(notes)
    assert m.contract.graphs.prefill in text and "cache_position" in text


def test_own_genai_config_is_found_beside_a_decoder_in_a_subfolder(tmp_path):
    # a hub builder export keeps genai_config.json next to its model, e.g. cpu_and_mobile/<variant>/
    # (phi3 twins): it was missed once and a config was written from the contract instead
    sub = tmp_path / "model" / "cpu_and_mobile" / "v"
    sub.mkdir(parents=True)
    (sub / "m.onnx").write_bytes(b"")
    assert own_config_folder(tmp_path / "model", "cpu_and_mobile/v/m.onnx") is None
    (tmp_path / "genai_config.json").write_text("{}")  # outside the model's root: not its config
    assert own_config_folder(tmp_path / "model", "cpu_and_mobile/v/m.onnx") is None
    (tmp_path / "model" / "genai_config.json").write_text("{}")
    assert own_config_folder(tmp_path / "model", "cpu_and_mobile/v/m.onnx") == (tmp_path / "model").resolve()
    (sub / "genai_config.json").write_text("{}")
    assert own_config_folder(tmp_path / "model", "cpu_and_mobile/v/m.onnx") == sub.resolve()


def test_isolated_or_single_graph_prepare_is_refused_in_words():
    with pytest.raises(RuntimeError, match="whole zoo models"):
        OrtGenai().prepare(None)


@needs_genai
def test_builder_twin_runs_with_its_own_genai_config():
    name = "gemma3-genai-current-q4"
    if not (TWINS / name / "manifest.json").exists():
        pytest.fail(f"the model builder twin {name} is missing; build it (onnx-compat twins build {name})")
    rec = run_cell(_zoo_case(name), OrtGenai())
    assert rec["status"] in ("pass", "mismatch"), rec["message"]
    assert "written from the contract" not in rec["message"]
    steps = rec["metrics"]["steps"]
    assert len(steps) == 1 + len(load_manifest(TWINS / name).tokens.decode)
    # GenAI computes the model the eager oracle computes: same greedy token at every step
    assert all(s["top1"] == 1.0 for s in steps), steps


@needs_genai
def test_twin_without_genai_config_runs_on_a_written_one():
    rec = run_cell(_zoo_case("qwen25-optimum-fp32"), OrtGenai())
    assert rec["status"] == "pass", rec["message"]
    assert rec["message"].startswith("no genai_config.json in the model: one was written from the contract")


@needs_genai
def test_gemma4_two_graph_form_runs_as_a_decoder_pipeline():
    rec = run_cell(_zoo_case("gemma4-tjs-q4"), OrtGenai())
    assert rec["status"] in ("pass", "mismatch"), rec["message"]
    assert "decoder-pipeline" in rec["message"]
    assert all(s["top1"] == 1.0 for s in rec["metrics"]["steps"]), rec["metrics"]["steps"]


@needs_genai
def test_static_form_gets_genais_own_words():
    rec = run_cell(_zoo_case("gemma3-statickv-irbuilt-fp32"), OrtGenai())
    assert rec["status"] in ("error", "unsupported"), rec["message"]
    assert "onnxruntime-genai: " in rec["message"] and "prefill" in rec["message"]



def _phi3_prefill(folder: Path, tmp: Path, change, tokens: int) -> str:
    """The Phi-3 shape-true twin's own files with its genai_config changed by `change`, prefilled
    with `tokens` tokens and decoded one step: "ran", or GenAI's words."""
    import os

    import onnxruntime_genai as og

    cfg = json.loads((folder / "genai_config.json").read_text())
    change(cfg["model"]["decoder"])
    tmp.mkdir()
    for entry in folder.iterdir():
        if entry.name != "genai_config.json":
            os.symlink(entry.resolve(), tmp / entry.name)
    (tmp / "genai_config.json").write_text(json.dumps(cfg))
    model = og.Model(str(tmp))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=tokens + 1, do_sample=False, num_beams=1)
    try:
        gen = og.Generator(model, params)
        gen.append_tokens(np.random.default_rng(0).integers(3, 500, size=(1, tokens)).astype(np.int32))
        gen.append_tokens(np.array([[7]], np.int32))
    except Exception as e:  # noqa: BLE001 - GenAI's words are what the test reads
        return str(e)
    return "ran"


@needs_genai
def test_phi3_shape_true_stops_where_genai_sizes_a_window_cache(tmp_path):
    """The README's account of the Phi-3 shape-true cell (`error` on ort-genai), re-derived: builder
    0.18.0 writes sliding_window {window_size 2047, slide_key_value_cache false, cache_slack 0}
    into genai_config but exports GroupQueryAttention with local_window_size -1 and no
    sliding_window_cache; on CPU the runtime still gives every layer a window-sized buffer of
    2047 + 16 rows (its CPU default slack, onnxruntime-genai src/models/windowed_kv_cache.cpp), so
    a sequence past 2 063 tokens is refused though context_length and max_length are 4 096. The
    same files run with the slack raised or the sliding_window section removed."""
    folder = TWINS / "phi3-shapetrue-genai-current-q4" / "cpu_and_mobile" / "cpu-int4-rtn-block-32-acc-level-4"
    cfg = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]["sliding_window"]
    assert (cfg["window_size"], cfg["slide_key_value_cache"], cfg["cache_slack"]) == (2047, False, 0)
    said = _phi3_prefill(folder, tmp_path / "as-exported", lambda d: None, 2064)
    assert "past_sequence_length=2063" in said and "total_sequence_length=2064" in said, said
    assert _phi3_prefill(folder, tmp_path / "slack", lambda d: d["sliding_window"].update(cache_slack=100), 2064) == "ran"
    assert _phi3_prefill(folder, tmp_path / "no-window", lambda d: d.pop("sliding_window"), 2064) == "ran"
