"""`onnx-compat extract` and the `extracted` family: a real export's op configurations as cases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness import extract as ex
from harness.backends.ort import OrtCpu
from harness.backends.reference import Reference
from harness.runner import run_cell

ROOT = Path(__file__).resolve().parents[1]
TWINS = ROOT / "zoo" / "twins"
GQA_TWIN = "phi3-genai-q4"  # GQA (packed QKV, rotary inside), MatMulNBits acc 4, both norms


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX_COMPAT_CACHE", str(tmp_path / "cache"))


def _graph(twin: str) -> onnx.GraphProto:
    from harness.zoo.twins import load_manifest

    m = load_manifest(TWINS / twin)
    return onnx.load(str(TWINS / twin / m.contract.graphs.decoder), load_external_data=False).graph


def test_one_case_per_distinct_configuration():
    cfgs = ex.twin_configs(TWINS / GQA_TWIN)
    keys = [c.key() for c in cfgs]
    assert len(keys) == len(set(keys))
    graph = _graph(GQA_TWIN)
    gqa_nodes = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    gqa = [c for c in cfgs if c.op_type == "GroupQueryAttention"]
    # every layer's GQA has one configuration per step kind: the prompt and a decode on a past
    assert len(gqa_nodes) >= 2 and len(gqa) == 2
    seq = sorted(c.inputs[0]["shape"][1] for c in gqa)
    m = json.loads((TWINS / GQA_TWIN / "manifest.json").read_text())
    assert seq == [1, len(m["tokens"]["prompt"][0])]
    # which optional inputs are wired is part of the configuration: packed QKV leaves key/value absent
    assert [i["kind"] for i in gqa[0].inputs[1:3]] == ["absent", "absent"]
    # attributes as the export wrote them
    node = gqa_nodes[0]
    assert gqa[0].attrs == ex._attr_json(node)


def test_cases_are_named_after_the_model_and_pass_on_ort_cpu():
    cases = ex.to_cases(ex.twin_configs(TWINS / GQA_TWIN), TWINS / GQA_TWIN)
    assert all(c.id.startswith(f"extracted/{GQA_TWIN}/") for c in cases)
    assert {c.features["op"] for c in cases} >= {"GroupQueryAttention", "MatMulNBits", "SkipSimplifiedLayerNormalization"}
    gqa = next(c for c in cases if c.features["op"] == "GroupQueryAttention")
    assert gqa.tolerance == "fp32-attention" and "attention" in gqa.marks
    mnb = next(c for c in cases if c.features["op"] == "MatMulNBits")
    assert mnb.tolerance == "int8act-blockq-matmul"  # accuracy_level 4 in this export
    for c in (gqa, mnb):
        built = c.build()  # runs the reference on the node: it must be able to
        assert run_cell(c, OrtCpu(), built)["status"] == "pass"


def test_the_reference_cell_of_an_extracted_case_is_skip_and_builds_nothing():
    """The oracle is the reference backend on the same bytes: its own cell could only compare it
    with itself (a test that cannot fail), so it is `skip`, saying so, without building the case
    (Phi-3's 2 100-token extracted cases cost 9-35 s each through the float64 reference)."""
    from dataclasses import replace

    case = ex.to_cases(ex.twin_configs(TWINS / GQA_TWIN), TWINS / GQA_TWIN)[0]

    def no_build(_rng):
        raise AssertionError("built for the reference column")

    unbuilt = replace(case, id=case.id + "-unbuilt", make=no_build)  # its own id: no cached build
    rec = run_cell(unbuilt, Reference())
    assert rec["status"] == "skip" and "compare reference with itself" in rec["message"]
    assert run_cell(unbuilt, OrtCpu())["status"] == "error"  # every other column builds it


def test_the_model_alone_is_the_built_cases_graph_without_running_the_oracle(monkeypatch):
    """Coverage reads `Case.model()`: for an extracted case it skips the feeds and the reference
    run, and must give the same node, inputs and initializers as `build()`."""
    cases = ex.to_cases(ex.twin_configs(TWINS / GQA_TWIN), TWINS / GQA_TWIN)
    built = {c.id: c.build().model for c in cases}
    from harness import case as case_mod

    monkeypatch.setattr(case_mod, "_CACHE", type(case_mod._CACHE)())  # force the model-only path
    monkeypatch.setattr(Reference, "prepare", lambda *a: pytest.fail("model() ran the reference"))
    for c in cases:
        alone = c.model()
        assert alone.graph.node == built[c.id].graph.node, c.id
        assert alone.graph.initializer == built[c.id].graph.initializer, c.id
        assert [i.name for i in alone.graph.input] == [i.name for i in built[c.id].graph.input], c.id


def test_constants_are_the_exports_and_activations_random():
    cases = ex.to_cases(ex.twin_configs(TWINS / GQA_TWIN), TWINS / GQA_TWIN)
    mnb = next(c for c in cases if c.features["op"] == "MatMulNBits")
    built = mnb.build()
    graph = onnx.load(str(TWINS / GQA_TWIN / ex.twin_configs(TWINS / GQA_TWIN)[0].graph)).graph
    src = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    node = next(n for n in graph.node if n.name == mnb.features["node"])
    packed = onnx.numpy_helper.to_array(built.model.graph.initializer[0])
    assert np.array_equal(packed, src[node.input[1]])  # the export's own packed weights
    (a,) = built.feeds[0].values()
    assert a.dtype == np.float32 and list(a.shape) == mnb.features["shapes"][0] and a.std() > 0.5


def test_a_broken_backend_fails_an_extracted_case():
    """The cases judge: a backend 1% off on every output fails a norm case the reference passes."""
    from tests.fake_backends import Lying

    cases = ex.to_cases(ex.twin_configs(TWINS / GQA_TWIN), TWINS / GQA_TWIN)
    norm = next(c for c in cases if c.features["op"] == "SimplifiedLayerNormalization")
    assert run_cell(norm, Lying(), norm.build())["status"] == "mismatch"


def test_the_family_discovers_every_twin_with_target_ops(monkeypatch, tmp_path):
    twins = tmp_path / "twins"
    for t in (GQA_TWIN, "qwen25-optimum-fp32"):
        shutil.copytree(TWINS / t, twins / t)
    monkeypatch.setenv("ONNX_COMPAT_TWINS", str(twins))
    from cases import extracted

    ids = [c.id for c in extracted.cases("quick")]
    assert ids and all(i.startswith(f"extracted/{GQA_TWIN}/") for i in ids)  # the decomposed fp32 twin has none


def test_an_unreadable_model_is_one_line(tmp_path, run_cli):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"not a model")
    out = run_cli("extract", str(bad), check=2)
    assert "m.onnx" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_cli_extract_a_twin_graph(run_cli, tmp_path):
    graph = TWINS / GQA_TWIN / ex.twin_configs(TWINS / GQA_TWIN)[0].graph
    out = run_cli("extract", str(graph), "--backends", "ort-cpu", "--json", check=0,
                  env={"ONNX_COMPAT_CACHE": str(tmp_path / "c")})
    data = json.loads(out.stdout)
    assert data["name"] == GQA_TWIN and len(data["cases"]) == len(data["cells"]) > 0
    assert {c["status"] for c in data["cells"]} == {"pass"}
