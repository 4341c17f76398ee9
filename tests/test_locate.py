"""`onnx-compat locate`: a twin with one deliberately broken node is located to exactly that node,
by both methods, and the extracted bundle fails on the broken backend and passes on the reference."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from harness import locate as loc
from harness import node_profiles as profiles
from harness import subgraph
from harness.backends.base import Backend, ModelRef, Session
from harness.backends.ort import OrtCpu
from harness.backends.reference import Reference

ROOT = Path(__file__).resolve().parents[1]
TWIN = ROOT / "zoo" / "twins" / "qwen25-optimum-fp32"
NODE_ENV = "ONNX_COMPAT_TEST_PERTURB_NODE"
REFUSE_ENV = "ONNX_COMPAT_TEST_REFUSE_EXPOSED"


def perturb(model: onnx.ModelProto, node_name: str, delta: float = 1e-2) -> onnx.ModelProto:
    """A copy where the named node's first output has `delta` added (an Add node after it)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = list(m.graph.node)
    for i, n in enumerate(nodes):
        if n.name == node_name:
            out = n.output[0]
            n.output[0] = out + "__unperturbed"
            c = numpy_helper.from_array(np.array(delta, np.float32), out + "__delta")
            m.graph.initializer.append(c)
            nodes.insert(i + 1, helper.make_node("Add", [n.output[0], c.name], [out], name=node_name + "__perturb"))
            del m.graph.node[:]
            m.graph.node.extend(nodes)
            return m
    return m


class _Session(Session):
    """Reads the model file at the first run, as tract does (it types a model once the input
    shapes are known): the file a ModelRef made must outlive prepare()."""

    def __init__(self, model: ModelRef):
        self.path, self.inner = model.path, None

    def run(self, feeds):
        if self.inner is None:
            proto = onnx.load(str(self.path))
            self.outputs = [o.name for o in proto.graph.output]
            self.inner = OrtCpu().prepare(ModelRef(perturb(proto, os.environ.get(NODE_ENV, ""))))
        got = self.inner.run(feeds)
        return {k: v for k, v in got.items() if k in self.outputs}


class Perturbing(Backend):
    """ORT CPU, except that the node named in $ONNX_COMPAT_TEST_PERTURB_NODE gets 1e-2 added to
    its output (wherever that node appears: the whole model, a cut, the node alone); with
    $ONNX_COMPAT_TEST_REFUSE_EXPOSED=all it refuses graphs of more than 8 outputs (a runtime
    that cannot expose intermediates: only cutting finds the node); =ints it refuses int64
    graph outputs (tract's shape tensors: only float intermediates can be exposed)."""

    name = "fake-perturb"

    def available(self):
        return True, ""

    def version(self):
        return "fake-perturb over " + OrtCpu().version()

    def prepare(self, model: ModelRef) -> Session:
        proto = model.proto
        refuse = os.environ.get(REFUSE_ENV)
        if refuse == "all" and len(proto.graph.output) > 8:
            raise RuntimeError("fake-perturb: cannot expose intermediate tensors")
        if refuse == "ints" and any(o.type.tensor_type.elem_type == onnx.TensorProto.INT64 for o in proto.graph.output):
            raise RuntimeError("fake-perturb: shape tensors cannot be outputs (tract: TDim)")
        return _Session(model)


@pytest.fixture()
def twin(tmp_path):
    """A copy of a shipped twin (the fixture's model is the twin's own, unmodified)."""
    dest = tmp_path / "zoo-twins" / TWIN.name
    shutil.copytree(TWIN, dest)
    return dest


def _case(twin_dir: Path):
    from harness.zoo.cases import _make_twin
    from harness.case import Case

    return Case(id=f"zoo/{twin_dir.name}", family="zoo", features={}, marks=("zoo",), tolerance="fp32-logits",
                make=lambda rng: _make_twin(str(twin_dir)))


def _target(twin_dir: Path, op_type: str, nth: int) -> onnx.NodeProto:
    m = onnx.load(str(twin_dir / "onnx" / "model.onnx"), load_external_data=False)
    return [n for n in m.graph.node if n.op_type == op_type][nth]


@pytest.mark.parametrize("refuse,isolated", [("", False), ("all", False), ("ints", False), ("", True)],
                         ids=["intermediates", "bisect", "floats-only", "intermediates-in-a-worker"])
def test_broken_node_is_located_to_exactly_that_node(twin, tmp_path, monkeypatch, refuse, isolated):
    """`isolated`: the backend runs in a worker process that reads each model from a file, as
    tract does (the file must outlive prepare())."""
    node = _target(twin, "MatMul", 5)  # a matmul in the first layer: many nodes before and after it
    monkeypatch.setenv(NODE_ENV, node.name)
    if refuse:
        monkeypatch.setenv(REFUSE_ENV, refuse)
    backend = Perturbing()
    if isolated:
        from harness.backends.worker import IsolatedBackend

        monkeypatch.setenv("ONNX_COMPAT_EXTRA_BACKENDS", "fake-perturb=tests.test_locate:Perturbing")
        monkeypatch.setenv("PYTHONPATH", str(ROOT))

        backend = IsolatedBackend(backend, timeout=120)
    try:
        res = loc.locate(_case(twin), backend, Reference(), out_dir=tmp_path / "located")
    finally:
        backend.close()
    assert res["found"], res
    assert res["node"]["name"] == node.name and res["node"]["op_type"] == "MatMul"
    assert res["method"] == {"": "intermediates", "all": "bisect", "ints": "intermediates (float tensors only)"}[refuse]
    assert res["step"] == 0 and res["profile"] == "fp32-blockq-matmul"
    worst = max(m["max_abs"] for m in res["metrics"].values())
    assert worst == pytest.approx(1e-2, rel=1e-3)  # the perturbation itself, measured
    if refuse != "all":  # its inputs still agreed: each within its producer's profile, or fed identically
        assert all(isinstance(v, str) or v["bad"] == 0 for v in res["inputs_metrics"].values())
    # the bundle: the node alone, failing on the broken backend and passing on the reference
    assert res["extracted"] == "node" and res["repro_ok"], res["repro_check"]
    bundle = Path(res["repro"])
    m = onnx.load(str(bundle / "model.onnx"))
    assert [n.name for n in m.graph.node] == [node.name]
    meta = json.loads((bundle / "case.json").read_text())
    assert meta["tolerance"]["profile"] == "fp32-blockq-matmul" and meta["features"]["node"] == node.name


def test_a_passing_cell_locates_nothing(twin, monkeypatch):
    monkeypatch.setenv(NODE_ENV, "no such node")
    res = loc.locate(_case(twin), Perturbing(), Reference())
    assert res["found"] is False and res["cell_status"] == "pass"


def test_expose_all_adds_every_named_node_output(twin):
    proto = onnx.load(str(twin / "onnx" / "model.onnx"))
    exposed = subgraph.expose_all(proto)
    want = {o for n in proto.graph.node for o in n.output if o} | {o.name for o in proto.graph.output}
    assert {o.name for o in exposed.graph.output} == want
    assert [o.name for o in exposed.graph.output][: len(proto.graph.output)] == [o.name for o in proto.graph.output]


def test_a_reshape_carries_its_producers_profile(twin):
    """Data movement is judged by the profile of what it moves: a Reshape of an Add's output
    gets the pointwise bound, not the exact one (else the Add's rounding is charged to it)."""
    proto = onnx.load(str(twin / "onnx" / "model.onnx"))
    profs = profiles.node_profiles(proto, {})
    nodes = list(proto.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    i, r = next((i, n) for i, n in enumerate(nodes)
                if n.op_type == "Reshape" and getattr(producer.get(n.input[0]), "op_type", "") == "Add")
    assert profs[subgraph.node_key(r, i)] == "fp32-pointwise"
    j, g = next((j, n) for j, n in enumerate(nodes)
                if profiles.OP_CLASS.get(n.op_type) == "gather" and not any(x in producer for x in n.input))
    assert profs[subgraph.node_key(g, j)] == "fp32-gather"  # fed only graph inputs and constants: exact


@pytest.mark.parametrize("op,dtype,want", [("MatMulNBits", np.float32, "fp32-blockq-matmul"),
                                            ("GroupQueryAttention", np.float16, "fp16-attention"),
                                            ("SimplifiedLayerNormalization", np.float32, "fp32-reduction"),
                                            ("Reshape", np.float32, "fp32-gather"),
                                            ("Mul", np.float32, "fp32-pointwise"),
                                            ("Mul", np.float16, "fp16-pointwise")])
def test_op_profiles(op, dtype, want):
    assert profiles.op_profile(op, dtype) == want


def test_cli_locate_records_the_node(twin, tmp_path, run_cli, monkeypatch):
    pytest.importorskip("onnxruntime")
    node = _target(twin, "Mul", 3)
    env = {"ONNX_COMPAT_EXTRA_BACKENDS": "fake-perturb=tests.test_locate:Perturbing", NODE_ENV: node.name,
           "ONNX_COMPAT_TWINS": str(twin.parent)}
    out = run_cli("locate", f"zoo/{twin.name}", "--backend", "fake-perturb", "--out", str(tmp_path / "loc"), "--json",
                  check=0, env=env)
    res = json.loads(out.stdout)
    assert res["node"]["name"] == node.name and res["repro_ok"]


def test_run_locate_records_the_node_in_the_cell(twin, tmp_path, run_cli):
    node = _target(twin, "MatMul", 5)
    env = {"ONNX_COMPAT_EXTRA_BACKENDS": "fake-perturb=tests.test_locate:Perturbing", NODE_ENV: node.name,
           "ONNX_COMPAT_TWINS": str(twin.parent)}
    out = tmp_path / "run"
    run_cli("run", "-k", f"zoo/{twin.name}", "--backends", "reference,fake-perturb", "--out", str(out), "--quiet",
            "--no-report", "--locate", check=0, env=env)
    recs = {r["backend"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert recs["fake-perturb"]["status"] == "mismatch" and recs["reference"]["status"] == "pass"
    located = recs["fake-perturb"]["metrics"]["located"]
    assert located["node"]["name"] == node.name and located["repro_ok"]
    assert Path(located["repro"]).parent == out / "located"
    assert "located" not in recs["reference"]["metrics"]
