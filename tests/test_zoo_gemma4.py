"""The Gemma-4 twins (zoo/build/gemma4_*.py) have what E2B has, read from the shipped ONNX files
and config.json themselves, not from the manifest's own graph summary:

- per-layer inputs: the PLE table (vocab x layers*ple) is in the graph, and in the
  transformers.js form `per_layer_inputs` [B, S, layers, ple] flows from embed_tokens into the decoder;
- two head sizes: the KV pairs of sliding layers have head_dim, the full layers global_head_dim,
  as the contract's per-pair list says;
- KV sharing: fewer KV pairs than layers (layers - num_kv_shared_layers), and mobius's shared
  layers read the present of the last unshared layer of their own type;
- transformers' exporter (multi-token decode graph): one graph runs the prompt and each step;
- each twin's decode loop on onnxruntime CPU reproduces its eager oracle at every step.

A rebuild with the exporter reproduces the shipped oracle and contract (needs the exporter
environments under .zoo-envs; skipped without them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
TWINS = ROOT / "zoo" / "twins"
HFEXPORT = ["gemma4-hfexport-mtd-fp32", "gemma4-hfexport-mtd-ortcpu-fp32"]
NAMES = ["gemma4-tjs-fp32", "gemma4-tjs-q4", "gemma4-mobius-fp32", *HFEXPORT]
#: E2B's geometry (35 layers, 15 KV pairs, head sizes 256 / 512; tests/test_zoo_shape_true.py): checked
#: for what the files hold here; its decode loop runs in the reference column (and the run's ORT ones)
SHAPE_TRUE = ["gemma4-shapetrue-tjs-q4"]


def manifest(name):
    return json.loads((TWINS / name / "manifest.json").read_text())


def config(name):
    return json.loads((TWINS / name / "config.json").read_text())


def load(name, key="decoder"):
    return onnx.load(str(TWINS / name / manifest(name)["contract"]["graphs"][key]))


def dims(v):
    """Static sizes as ints: transformers' exporter names some fixed sizes as symbols ("32")."""
    out = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    return [int(x) if isinstance(x, str) and x.isdigit() else x for x in out]


def head_dims(cfg):
    """Per layer type, as transformers 5.14 (global_head_dim) or 5.23 (per_layer_config) saved it."""
    glob = cfg.get("global_head_dim") or next(iter(cfg["per_layer_config"].values()))["head_dim"]
    return {"sliding_attention": cfg["head_dim"], "full_attention": glob}


@pytest.mark.parametrize("name", NAMES + SHAPE_TRUE)
def test_kv_pairs_only_for_unshared_layers_each_at_its_layer_head_size(name):
    m, cfg, g = manifest(name), config(name), load(name).graph
    kv = m["contract"]["kv"]
    layers, shared = cfg["num_hidden_layers"], cfg["num_kv_shared_layers"]
    assert shared > 0 and kv["count"] == layers - shared < layers
    hd = head_dims(cfg)
    want = [hd[t] for t in cfg["layer_types"][: kv["count"]]]
    assert len(set(want)) == 2 and kv["head_dim"] == want
    ins, outs = {v.name: dims(v) for v in g.input}, {v.name: dims(v) for v in g.output}
    for i in range(kv["count"]):
        for w in ("key", "value"):
            assert ins[kv["past"].format(i=i, kv=w)][1:] == [cfg["num_key_value_heads"], ins[kv["past"].format(
                i=i, kv=w)][2], want[i]]
            assert outs[kv["present"].format(i=i, kv=w)][-1] == want[i]
    names = set(ins) | set(outs)
    assert not any(kv["past"].format(i=i, kv="key") in names for i in range(kv["count"], layers))


@pytest.mark.parametrize("name", NAMES + SHAPE_TRUE)
def test_per_layer_embedding_table_is_in_the_graphs(name):
    cfg = config(name)
    want = (cfg["vocab_size_per_layer_input"], cfg["num_hidden_layers"] * cfg["hidden_size_per_layer_input"])
    m = manifest(name)
    shapes = []
    for g in filter(None, (m["contract"]["graphs"]["embed"], m["contract"]["graphs"]["decoder"])):
        model = onnx.load(str(TWINS / name / g))
        shapes += [tuple(t.dims) for t in model.graph.initializer]
    assert want in shapes


@pytest.mark.parametrize("name", ["gemma4-tjs-fp32", "gemma4-tjs-q4", *SHAPE_TRUE])
def test_transformers_js_split_feeds_per_layer_inputs_from_embed_to_decoder(name):
    cfg = config(name)
    emb, dec = load(name, "embed").graph, load(name, "decoder").graph
    e_out = {v.name: dims(v) for v in emb.output}
    d_in = {v.name: dims(v) for v in dec.input}
    ple = ["batch_size", "sequence_length", cfg["num_hidden_layers"], cfg["hidden_size_per_layer_input"]]
    assert e_out["per_layer_inputs"] == d_in["per_layer_inputs"] == ple
    assert e_out["inputs_embeds"] == d_in["inputs_embeds"] == ["batch_size", "sequence_length", cfg["hidden_size"]]
    assert [v.name for v in emb.input] == ["input_ids"]
    assert {"attention_mask", "position_ids"} <= set(d_in) and "input_ids" not in d_in
    assert manifest(name)["reconstruction"]  # no public exporter: said so


def test_mobius_shared_layers_read_the_last_unshared_layer_of_their_type():
    name = "gemma4-mobius-fp32"
    cfg, g = config(name), load(name).graph
    gqa = [n for n in g.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == cfg["num_hidden_layers"]  # GQA on the CPU EP, shared layers included
    n_kv = cfg["num_hidden_layers"] - cfg["num_kv_shared_layers"]
    types = cfg["layer_types"]
    for layer, node in enumerate(gqa):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert ("local_window_size" in attrs) == (types[layer] == "sliding_attention")
        if layer < n_kv:
            assert node.input[3] == f"past_key_values.{layer}.key"
        else:
            donor = max(j for j in range(n_kv) if types[j] == types[layer])
            assert node.input[3:5] == [f"present.{donor}.key", f"present.{donor}.value"]
    # the donor of the shared full layer is not the last unshared layer: a "last layer" mapping would fail
    assert max(j for j in range(n_kv) if types[j] == "full_attention") != n_kv - 1


def test_q4_quantises_every_linear_and_the_oracle_uses_its_weights():
    fp32, q4 = load("gemma4-tjs-fp32").graph, load("gemma4-tjs-q4").graph
    inits = {t.name for t in fp32.initializer}
    linear = sorted(n.name + "_Q4" for n in fp32.node if n.op_type == "MatMul" and n.input[1] in inits)
    nbits = [n for n in q4.node if n.op_type == "MatMulNBits"]
    assert sorted(n.name for n in nbits) == linear
    for n in nbits:
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        assert (a["bits"], a["block_size"], len(n.input) > 3 and n.input[3]) == (4, 32, False)
    # the oracle ran on the graph's own dequantised weights: one parameter loaded back per node
    info = manifest("gemma4-tjs-q4")["build_info"]
    assert info["weights_loaded_back"] == len(nbits) and info["quantisation_max_abs"] > 0


@pytest.mark.parametrize("name", NAMES + SHAPE_TRUE)
def test_oracle_is_not_degenerate(name):
    o = np.load(TWINS / name / "oracle.npz")
    top = o["step0"][0].argmax(-1)
    assert len(set(top.tolist())) > 3  # top-1 changes across prompt positions
    assert np.abs(o["step0"]).max() < manifest(name)["checkpoint"]["config"]["final_logit_softcapping"]


@pytest.mark.parametrize("name", NAMES)
def test_decode_loop_on_ort_cpu_matches_the_eager_oracle(name):
    """The harness's own loop and tolerance profile, not the builder's check: every step passes,
    top-1 equal at every position."""
    from harness import backends
    from harness.runner import run_cell
    from harness.zoo import zoo_cases

    case = next(c for c in zoo_cases("twins") if c.id == f"zoo/{name}")
    rec = run_cell(case, backends.get("ort-cpu", isolated=False))
    assert rec["status"] == "pass", rec["message"]
    steps = rec["metrics"]["steps"]
    assert len(steps) == 1 + len(manifest(name)["tokens"]["decode"])
    assert all(s["top1"] == 1.0 for s in steps)


@pytest.mark.parametrize("name", HFEXPORT)
def test_transformers_export_decode_graph_takes_the_prompt_and_its_window_scalars_are_pass_through(name):
    """The contract drives the multi-token decode graph alone and feeds 0 to the
    `_sliding_window_tensor` inputs: that is sound only if the query axis is dynamic and those
    scalars reach nothing but an Identity to their own output."""
    c, g = manifest(name)["contract"], load(name).graph
    ins = {v.name: dims(v) for v in g.input}
    assert c["graphs"]["prefill"] is None and c["attention_mask"] is None
    assert isinstance(ins["input_ids"][1], str)  # symbolic: a 24-token prompt fits
    scalars = [n for n in ins if n.endswith("._sliding_window_tensor")]
    assert sorted(scalars) == sorted(c["extra_inputs"]) and scalars
    outs = {v.name for v in g.output}
    for s in scalars:
        users = [n for n in g.node if s in n.input]
        assert [u.op_type for u in users] == ["Identity"]
        assert users[0].output[0] == s.replace("input.", "output.", 1) and users[0].output[0] in outs


def test_ort_cpu_fusion_gives_sliding_layers_gqa_with_the_window_as_attention_bias():
    """ort_fusions="cpu": sliding layers 0 and 1 run GroupQueryAttention on their own past with an
    attention_bias (the sliding mask: GQA gets no local_window_size); the full layers, the shared
    layers and sliding layer 3 (whose KV shared layer 4 reads) stay decomposed; rotary is
    com.microsoft RotaryEmbedding."""
    name = "gemma4-hfexport-mtd-ortcpu-fp32"
    cfg, g = config(name), load(name).graph
    gqa = [n for n in g.node if n.op_type == "GroupQueryAttention"]
    assert [cfg["layer_types"][i] for i in (0, 1, 3)] == ["sliding_attention"] * 3
    assert [n.input[3] for n in gqa] == [f"input.past_key_values.layers.{i}.keys" for i in (0, 1)]
    assert gqa and all(len(n.input) > 10 and n.input[10] for n in gqa)
    assert not any(a.name == "local_window_size" for n in gqa for a in n.attribute)
    assert sum(n.op_type == "Softmax" for n in g.node) == cfg["num_hidden_layers"] - len(gqa)
    assert any(n.op_type == "RotaryEmbedding" and n.domain == "com.microsoft" for n in g.node)


@pytest.mark.slow_reason("runs the real exporter and the eager oracle from scratch (the shape-true twin: 35 layers "
                         "and a 600-token prompt); only where .zoo-envs/gemma4-torch exists (nightly)")
@pytest.mark.parametrize("flags, names", [(["--shape-true"], ["gemma4-shapetrue-tjs-q4"]),
                                          (["--q4"], ["gemma4-tjs-fp32", "gemma4-tjs-q4"])])
def test_rebuild_with_the_real_exporter_reproduces_every_file(flags, names, tmp_path):
    """zoo/build/gemma4_tjs.py run from scratch into another folder gives the shipped files: the
    exporter's byte for byte, the eager oracle within fp32-logits (harness/zoo/rebuild.py)."""
    import subprocess

    py = ROOT / ".zoo-envs" / "gemma4-torch" / "bin" / "python"
    if not py.exists():
        pytest.skip("no exporter environment .zoo-envs/gemma4-torch (create it from zoo/envs/gemma4-torch.txt)")
    r = subprocess.run([str(py), "zoo/build/gemma4_tjs.py", *flags, "--dest", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    from harness.zoo.rebuild import rebuild_differences

    for name in names:
        diffs = rebuild_differences(TWINS / name, tmp_path / name)
        assert not diffs, f"{name}: " + "; ".join(diffs)
