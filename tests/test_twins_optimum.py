"""The optimum twins (zoo/build/optimum_twins.py) are the form their manifests claim: read from the
shipped ONNX files themselves, not from the manifest's own graph summary.

- decomposed: no com.microsoft attention/rotary op, RoPE as Cos/Sin, one Softmax per layer, a
  concatenating past whose I/O names and shapes match the contract;
- q4 is transformers.js' recipe: every constant-weight MatMul of the fp32 graph becomes
  MatMulNBits bits 4, block 32, symmetric (no zero points), no accuracy_level;
- the tied lm_head: optimum deduplicates Qwen2's (Transpose of the embedding, left float by q4)
  but not Gemma-3's (a second copy, quantised);
- the oracle is not degenerate (top-1 changes across prompt positions).

A rebuild with the real exporter reproduces every shipped file bit for bit (needs the exporter
environment .zoo-envs/optimum; skipped without it).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
TWINS = ROOT / "zoo" / "twins"
NAMES = ["qwen25-optimum-fp32", "qwen25-optimum-q4", "gemma3-optimum-fp32", "gemma3-optimum-q4"]
ENV_PY = ROOT / ".zoo-envs" / "optimum" / "bin" / "python"


def manifest(name):
    return json.loads((TWINS / name / "manifest.json").read_text())


def graph(name):
    m = manifest(name)
    return onnx.load(str(TWINS / name / m["contract"]["graphs"]["decoder"]))


def dims(v):
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


def const_weight_matmuls(g):
    inits = {i.name for i in g.initializer}
    return [n for n in g.node if n.op_type == "MatMul" and n.input[1] in inits]


@pytest.mark.parametrize("name", NAMES)
def test_decomposed_form_and_concat_cache_match_the_contract(name):
    m, g = manifest(name), graph(name).graph
    layers = m["checkpoint"]["config"]["num_hidden_layers"]
    ops = [(n.domain or "ai.onnx", n.op_type) for n in g.node]
    assert not [o for o in ops if o[0] == "com.microsoft" and o[1] != "MatMulNBits"]
    assert sum(o == ("ai.onnx", "Softmax") for o in ops) == layers
    assert ("ai.onnx", "Cos") in ops and ("ai.onnx", "Sin") in ops
    kv, c = m["contract"]["kv"], m["contract"]
    assert kv["count"] == layers and kv["cache"] == "concat"
    ins = {v.name: dims(v) for v in g.input}
    outs = {v.name: dims(v) for v in g.output}
    for i in range(layers):
        for which in ("key", "value"):
            past, present = ins[kv["past"].format(i=i, kv=which)], outs[kv["present"].format(i=i, kv=which)]
            assert past == ["batch_size", kv["heads"], "past_sequence_length", kv["head_dim"]]
            assert present == ["batch_size", kv["heads"], "past_sequence_length + sequence_length", kv["head_dim"]]
    assert set(ins) == {c["input_ids"], c["attention_mask"]} | ({c["position_ids"]} - {None}) | {
        kv["past"].format(i=i, kv=w) for i in range(layers) for w in ("key", "value")}
    assert outs[c["logits"]] == ["batch_size", "sequence_length", m["checkpoint"]["config"]["vocab_size"]]
    # optimum-onnx 0.1.0: Qwen2 takes position_ids, Gemma-3 text does not
    assert (c["position_ids"] is not None) == name.startswith("qwen25")


@pytest.mark.parametrize("fam", ["qwen25", "gemma3"])
def test_q4_is_the_transformers_js_recipe_on_every_constant_matmul(fam):
    fp32, q4 = graph(f"{fam}-optimum-fp32").graph, graph(f"{fam}-optimum-q4").graph
    nbits = [n for n in q4.node if n.op_type == "MatMulNBits"]
    assert not const_weight_matmuls(q4)
    assert sorted(n.name + "_Q4" for n in const_weight_matmuls(fp32)) == sorted(n.name for n in nbits)
    for n in nbits:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["bits"] == 4 and attrs["block_size"] == 32 and "accuracy_level" not in attrs
        assert len([i for i in n.input if i]) == 3, f"{n.name}: zero points present (not symmetric)"
    # the embedding stays a float Gather in both
    assert [n.op_type for n in q4.node if "embed_tokens" in n.name and n.op_type.startswith("Gather")] == ["Gather"]


def test_tied_lm_head_deduplicated_for_qwen2_not_for_gemma3():
    q = graph("qwen25-optimum-q4").graph
    head = next(n for n in q.node if n.name.startswith("/lm_head/"))
    assert head.op_type == "MatMul"
    src = next(n for n in q.node if head.input[1] in n.output)
    assert src.op_type == "Transpose" and list(src.input) == ["model.embed_tokens.weight"]
    g32 = graph("gemma3-optimum-fp32").graph
    w = {i.name: numpy_helper.to_array(i) for i in g32.initializer}
    head = next(n for n in g32.node if n.name.startswith("/lm_head/"))
    np.testing.assert_array_equal(w[head.input[1]].T, w["model.embed_tokens.weight"])  # a second copy
    assert any(n.name.startswith("/lm_head/") and n.op_type == "MatMulNBits" for n in graph("gemma3-optimum-q4").graph.node)


@pytest.mark.parametrize("name", NAMES)
def test_twin_is_small_and_its_oracle_not_degenerate(name):
    m = manifest(name)
    assert sum(m["sizes"].values()) < 2 * 1024 * 1024
    o = np.load(TWINS / name / "oracle.npz")
    s = len(m["tokens"]["prompt"][0])
    assert o["step0"].shape == (1, s, m["checkpoint"]["config"]["vocab_size"])
    assert len(set(o["step0"][0].argmax(-1).tolist())) >= 4
    assert sorted(o.files) == sorted(f"step{k}" for k in range(len(m["tokens"]["decode"]) + 1))


@pytest.mark.skipif(not ENV_PY.exists(), reason="exporter environment .zoo-envs/optimum not built "
                    "(python3 -m venv .zoo-envs/optimum && pip install torch==2.13.0 && pip install -r zoo/envs/optimum.txt)")
@pytest.mark.parametrize("name", ["qwen25-optimum-q4", "qwen25-shapetrue-optimum-q4", "gemma3-shapetrue-optimum-q4"])
def test_rebuild_with_the_real_exporter_is_bit_identical(tmp_path, name):
    """The exporter's files byte for byte, the oracle within fp32-logits; the shape-true twins
    (issue 22) as well as the small one."""
    r = subprocess.run([str(ENV_PY), "zoo/build/optimum_twins.py", name, "--out", str(tmp_path)],
                       cwd=ROOT, check=False, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    from harness.zoo.rebuild import rebuild_differences

    diffs = rebuild_differences(TWINS / name, tmp_path / name)  # graphs byte for byte, the oracle within fp32-logits
    assert not diffs, "; ".join(diffs)


def test_build_script_refuses_an_unknown_twin_and_a_python_without_optimum(tmp_path):
    import sys

    r = subprocess.run([sys.executable, "zoo/build/optimum_twins.py", "qwen25-optimum-int8"], cwd=ROOT,
                       check=False, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "unknown twin qwen25-optimum-int8" in r.stderr and "qwen25-optimum-q4" in r.stderr
    if Path(sys.executable).with_name("optimum-cli").exists():
        pytest.skip("this Python has optimum-cli")
    code = ("import sys; sys.path.insert(0, 'zoo/build'); import optimum_twins as o; "
            "from pathlib import Path; o.export(Path('ckpt'), Path('out'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, capture_output=True, text=True)
    assert r.returncode == 1 and "no optimum-cli beside" in r.stderr and "zoo/envs/optimum.txt" in r.stderr
