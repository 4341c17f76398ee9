"""TEST FIXTURES, not zoo twins: tiny hand-built ONNX decoders (one attention layer, a learned
position table so position_ids and their base matter) in each cache kind, each with its own
numpy float64 oracle written from the maths below, laid out like a twin (docs/zoo.md) so the
decode loop, cases, hub cache and CLI can be tested before and independently of real twins.

    x = E[ids] + P[pos];  q, k, v = x Wq, x Wk, x Wv  (H heads of D);
    a = softmax(q kᵀ / √D, causal) v;  logits = (x + a Wo) Wlm
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

V, HID, H, D, MAXP = 48, 16, 2, 8, 64


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    w = {"E": r.normal(0, 1, (V, HID)), "P": r.normal(0, 0.5, (MAXP, HID))}
    for n in ("Wq", "Wk", "Wv", "Wo"):
        w[n] = r.normal(0, HID ** -0.5, (HID, HID))
    w["Wlm"] = r.normal(0, HID ** -0.5, (HID, V))
    return {k: v.astype(np.float32) for k, v in w.items()}


def oracle(w: dict, seq: list[int], base: int = 0) -> np.ndarray:
    """float64 logits [1, len(seq), V] of the whole sequence, causally."""
    f = {k: v.astype(np.float64) for k, v in w.items()}
    s = len(seq)
    x = f["E"][seq] + f["P"][np.arange(s) + base]
    q, k, v = (np.transpose((x @ f[n]).reshape(s, H, D), (1, 0, 2)) for n in ("Wq", "Wk", "Wv"))
    sc = q @ np.transpose(k, (0, 2, 1)) / np.sqrt(D)
    sc = np.where(np.tril(np.ones((s, s), bool)), sc, -np.inf)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    a = np.transpose(p @ v, (1, 0, 2)).reshape(s, HID)
    return ((x + a @ f["Wo"]) @ f["Wlm"])[None]


def _init(w):
    return [nh.from_array(v, k) for k, v in w.items()]


def _c(name, arr):
    return h.make_node("Constant", [], [name], value=nh.from_array(np.asarray(arr), name + "_v"))


def _embed_nodes(out="x"):
    return [h.make_node("Gather", ["E", "input_ids"], ["tok"]), h.make_node("Gather", ["P", "position_ids"], ["pe"]),
            h.make_node("Add", ["tok", "pe"], [out])]


def _qkv(x="x"):
    nodes = [_c("shp4", np.array([0, 0, H, D], np.int64))]
    for n in ("q", "k", "v"):
        nodes += [h.make_node("MatMul", [x, "W" + n], [n + "2"]), h.make_node("Reshape", [n + "2", "shp4"], [n + "4"]),
                  h.make_node("Transpose", [n + "4"], [n + "_new"], perm=[0, 2, 1, 3])]
    return nodes


def _attend_and_head(k_all, v_all, bias, x="x"):
    return [h.make_node("Transpose", [k_all], ["kT"], perm=[0, 1, 3, 2]), h.make_node("MatMul", ["q_new", "kT"], ["s0"]),
            _c("scale", np.array(1 / np.sqrt(D), np.float32)), h.make_node("Mul", ["s0", "scale"], ["s1"]),
            h.make_node("Add", ["s1", bias], ["s2"]), h.make_node("Softmax", ["s2"], ["p"], axis=-1),
            h.make_node("MatMul", ["p", v_all], ["a4"]), h.make_node("Transpose", ["a4"], ["a3"], perm=[0, 2, 1, 3]),
            _c("shp3", np.array([0, 0, HID], np.int64)), h.make_node("Reshape", ["a3", "shp3"], ["a"]),
            h.make_node("MatMul", ["a", "Wo"], ["o"]), h.make_node("Add", [x, "o"], ["y"]),
            h.make_node("MatMul", ["y", "Wlm"], ["logits"])]


def _vi(name, et, shape):
    return h.make_tensor_value_info(name, et, shape)


def _causal_bias(row0, ncols, mask=None):
    """bias[i, j] = 0 where j <= row0 + i (and mask[j] == 1), else -1e9."""
    nodes = [_c("zero", np.array(0, np.int64)), _c("one", np.array(1, np.int64)),
             h.make_node("Shape", ["input_ids"], ["ids_shape"]), _c("i1", np.array([1], np.int64)),
             h.make_node("Gather", ["ids_shape", "i1"], ["S1"]), h.make_node("Squeeze", ["S1"], ["S"]),
             h.make_node("Range", ["zero", "S", "one"], ["ri"]), h.make_node("Unsqueeze", ["ri", "i1"], ["ri2"]),
             h.make_node("Add", ["ri2", row0], ["rows"]),
             h.make_node("Range", ["zero", ncols, "one"], ["cols"]),
             h.make_node("LessOrEqual", ["cols", "rows"], ["ok"])]
    if mask:
        nodes += [_c("onei", np.array(1, np.int64)), h.make_node("Equal", [mask, "onei"], ["mok"]),
                  _c("i0", np.array([1], np.int64)), h.make_node("Unsqueeze", ["mok", "i0"], ["mok3"]),
                  h.make_node("Unsqueeze", ["mok3", "i0"], ["mok4"]), h.make_node("And", ["ok", "mok4"], ["ok2"])]
        ok = "ok2"
    else:
        ok = "ok"
    nodes += [_c("z", np.array(0, np.float32)), _c("neg", np.array(-1e9, np.float32)),
              h.make_node("Where", [ok, "z", "neg"], ["bias"])]
    return nodes


def concat_graph(w, embed_split=False):
    """optimum-style: past_key_values.0.{key,value} [B,H,P,D], present = past ++ new."""
    ids = [_vi("input_ids", T.INT64, ["B", "S"]), _vi("position_ids", T.INT64, ["B", "S"])]
    head = _embed_nodes() if not embed_split else []
    x_in = [_vi("inputs_embeds", T.FLOAT, ["B", "S", HID])] if embed_split else []
    nodes = head + ([h.make_node("Identity", ["inputs_embeds"], ["x"])] if embed_split else []) + _qkv()
    nodes += [h.make_node("Concat", ["past_key_values.0.key", "k_new"], ["present.0.key"], axis=2),
              h.make_node("Concat", ["past_key_values.0.value", "v_new"], ["present.0.value"], axis=2),
              h.make_node("Shape", ["attention_mask"], ["m_shape"]), _c("i1b", np.array([1], np.int64)),
              h.make_node("Gather", ["m_shape", "i1b"], ["T1"]), h.make_node("Squeeze", ["T1"], ["Tt"])]
    if embed_split:  # the decoder has no input_ids: its S comes from inputs_embeds
        nodes += [h.make_node("Shape", ["inputs_embeds"], ["e_shape"]), _c("i2", np.array([0, 1], np.int64)),
                  h.make_node("Gather", ["e_shape", "i2"], ["input_ids"])]
        nodes = nodes[:-1] + [h.make_node("Gather", ["e_shape", "i2"], ["ids_shape0"]),
                              h.make_node("ConstantOfShape", ["ids_shape0"], ["input_ids"],
                                          value=nh.from_array(np.array([0], np.int64)))]
    bias = _causal_bias("past_len", "Tt", "attention_mask")
    nodes += [h.make_node("Sub", ["Tt", "S"], ["past_len"])]
    nodes = nodes + bias + _attend_and_head("present.0.key", "present.0.value", "bias")
    # Sub needs S from the bias block: move it after the bias nodes that define S
    nodes = [n for n in nodes if not (n.op_type == "Sub" and n.output[0] == "past_len")]
    k = next(i for i, n in enumerate(nodes) if n.output and n.output[0] == "ri2")
    nodes.insert(k + 1, h.make_node("Sub", ["Tt", "S"], ["past_len"]))
    inputs = (x_in + [ids[1]] if embed_split else ids) + [_vi("attention_mask", T.INT64, ["B", "T"])] + [
        _vi(f"past_key_values.0.{kv}", T.FLOAT, ["B", H, "P", D]) for kv in ("key", "value")]
    if embed_split:  # P is gathered in the decoder, E in the embed graph
        nodes = [h.make_node("Gather", ["P", "position_ids"], ["pe"]), h.make_node("Add", ["inputs_embeds", "pe"], ["x"])] + \
            [n for n in nodes if not (n.op_type == "Identity")]
    outputs = [_vi("logits", T.FLOAT, ["B", "S", V])] + [_vi(f"present.0.{kv}", T.FLOAT, ["B", H, "T", D])
                                                          for kv in ("key", "value")]
    inits = {k: v for k, v in w.items() if not (embed_split and k == "E")}
    g = h.make_graph(nodes, "fixture_concat", inputs, outputs, _init(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


def embed_graph(w):
    g = h.make_graph([h.make_node("Gather", ["E", "input_ids"], ["inputs_embeds"])], "fixture_embed",
                     [_vi("input_ids", T.INT64, ["B", "S"])], [_vi("inputs_embeds", T.FLOAT, ["B", "S", HID])],
                     _init({"E": w["E"]}))
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


def shared_buffer_graph(w, max_len):
    """The GenAI builder's form: com.microsoft.GroupQueryAttention, past and present one
    [B, H, max_len, D] buffer; seqlens_k = sum(mask) - 1, total_seq_len = mask width."""
    nodes = _embed_nodes()
    for n in ("q", "k", "v"):
        nodes.append(h.make_node("MatMul", ["x", "W" + n], [n + "2"]))
    nodes += [h.make_node("ReduceSum", ["attention_mask", "ax1"], ["msum"], keepdims=0), _c("ax1", np.array([1], np.int64)),
              _c("onei", np.array(1, np.int64)), h.make_node("Sub", ["msum", "onei"], ["sk64"]),
              h.make_node("Cast", ["sk64"], ["seqlens_k"], to=T.INT32),
              h.make_node("Shape", ["attention_mask"], ["ms"]), _c("i1", np.array(1, np.int64)),
              h.make_node("Gather", ["ms", "i1"], ["t64"]), h.make_node("Cast", ["t64"], ["total"], to=T.INT32),
              h.make_node("GroupQueryAttention", ["q2", "k2", "v2", "past_key_values.0.key", "past_key_values.0.value",
                                                  "seqlens_k", "total"], ["a", "present.0.key", "present.0.value"],
                          domain="com.microsoft", num_heads=H, kv_num_heads=H),
              h.make_node("MatMul", ["a", "Wo"], ["o"]), h.make_node("Add", ["x", "o"], ["y"]),
              h.make_node("MatMul", ["y", "Wlm"], ["logits"])]
    nodes = [nodes[i] for i in (0, 1, 2, 3, 4, 5, 7, 6)] + nodes[8:]
    inputs = [_vi("input_ids", T.INT64, ["B", "S"]), _vi("attention_mask", T.INT64, ["B", "T"]),
              _vi("position_ids", T.INT64, ["B", "S"])] + [
        _vi(f"past_key_values.0.{kv}", T.FLOAT, ["B", H, max_len, D]) for kv in ("key", "value")]
    outputs = [_vi("logits", T.FLOAT, ["B", "S", V])] + [_vi(f"present.0.{kv}", T.FLOAT, ["B", H, max_len, D])
                                                          for kv in ("key", "value")]
    g = h.make_graph(nodes, "fixture_shared", inputs, outputs, _init(w))
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)], ir_version=9)


def static_graph(w, max_len):
    """A hand-built static cache: [B, H, max_len, D] buffers written at `cache_position` by
    ScatterElements; key j is visible to query i when j <= cache_position[i]."""
    nodes = _embed_nodes() + _qkv()
    nodes += [h.make_node("Shape", ["k_new"], ["kshape"]),
              h.make_node("Reshape", ["cache_position", "cp_shape"], ["cp4"]),
              _c("cp_shape", np.array([1, 1, -1, 1], np.int64)),
              h.make_node("Expand", ["cp4", "kshape"], ["idx"])]
    nodes[-3], nodes[-2] = nodes[-2], nodes[-3]
    for kv in ("key", "value"):
        nodes.append(h.make_node("ScatterElements", [f"past_key_values.0.{kv}", "idx", f"{kv[0]}_new"],
                                 [f"present.0.{kv}"], axis=2))
    nodes += [_c("zero", np.array(0, np.int64)), _c("one", np.array(1, np.int64)), _c("M", np.array(max_len, np.int64)),
              h.make_node("Range", ["zero", "M", "one"], ["cols"]), _c("i1", np.array([1], np.int64)),
              h.make_node("Unsqueeze", ["cache_position", "i1"], ["rows"]),
              h.make_node("LessOrEqual", ["cols", "rows"], ["ok"]), _c("z", np.array(0, np.float32)),
              _c("neg", np.array(-1e9, np.float32)), h.make_node("Where", ["ok", "z", "neg"], ["bias"])]
    nodes += _attend_and_head("present.0.key", "present.0.value", "bias")
    inputs = [_vi("input_ids", T.INT64, ["B", "S"]), _vi("position_ids", T.INT64, ["B", "S"]),
              _vi("cache_position", T.INT64, ["S"])] + [
        _vi(f"past_key_values.0.{kv}", T.FLOAT, ["B", H, max_len, D]) for kv in ("key", "value")]
    outputs = [_vi("logits", T.FLOAT, ["B", "S", V])] + [_vi(f"present.0.{kv}", T.FLOAT, ["B", H, max_len, D])
                                                          for kv in ("key", "value")]
    g = h.make_graph(nodes, "fixture_static", inputs, outputs, _init(w))
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


def prefill_graph(w, max_len):
    """static_graph without past inputs (the cache starts as zeros inside it), batch 1."""
    m = static_graph(w, max_len)
    g = m.graph
    for kv in ("key", "value"):
        name = f"past_key_values.0.{kv}"
        g.input.remove(next(i for i in g.input if i.name == name))
        g.node.insert(0, _c(name, np.zeros((1, H, max_len, D), np.float32)))
    return m


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _summary(p: Path) -> dict:
    m = onnx.load(str(p))

    def io(v):
        return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]}
    return {"ops": dict(Counter(f"{n.domain or 'ai.onnx'}.{n.op_type}" for n in m.graph.node)),
            "inputs": [io(v) for v in m.graph.input], "outputs": [io(v) for v in m.graph.output]}


PROMPT = [5, 17, 3, 9, 30, 11, 2]
DECODE = [[7], [41], [13]]


def make_twin(root: Path, kind: str = "concat", name: str | None = None, base: int = 0, seed: int = 0,
              max_len: int = 16) -> Path:
    """Write a fixture twin of one cache kind (concat, embed, shared_buffer, static) under root/<name>."""
    name = name or f"fixture-{kind}"
    d = Path(root) / name
    (d / "onnx").mkdir(parents=True, exist_ok=True)
    w = weights(seed)
    graphs = {"decoder": "onnx/model.onnx"}
    contract = {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                "position_base": base,
                "kv": {"count": 1, "heads": H, "head_dim": D, "cache": "concat"}, "logits": "logits"}
    if kind in ("concat", "embed"):
        onnx.save(concat_graph(w, embed_split=kind == "embed"), str(d / "onnx/model.onnx"))
        if kind == "embed":
            onnx.save(embed_graph(w), str(d / "onnx/embed.onnx"))
            graphs["embed"] = "onnx/embed.onnx"
    elif kind == "shared_buffer":
        onnx.save(shared_buffer_graph(w, max_len), str(d / "onnx/model.onnx"))
        contract["kv"].update(cache="shared_buffer", max_length=max_len)
    elif kind in ("static", "prefill"):
        onnx.save(static_graph(w, max_len), str(d / "onnx/model.onnx"))
        contract["kv"].update(cache="static", max_length=max_len)
        contract.update(attention_mask=None, cache_position="cache_position")
        if kind == "prefill":  # a separate prefill graph: the same maths on a zero cache it makes itself
            onnx.save(prefill_graph(w, max_len), str(d / "onnx/prefill.onnx"))
            graphs["prefill"] = "onnx/prefill.onnx"
    else:
        raise ValueError(kind)
    contract["graphs"] = graphs
    seq = PROMPT + [t[0] for t in DECODE]
    full = oracle(w, seq, base).astype(np.float32)
    s = len(PROMPT)
    steps = {"step0": full[:, :s]} | {f"step{k}": full[:, s + k - 1: s + k] for k in range(1, len(DECODE) + 1)}
    np.savez(d / "oracle.npz", **steps)
    files = {p.relative_to(d).as_posix(): _sha(p) for p in sorted(d.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    manifest = {
        "name": name, "model": "fixture", "form": f"fixture-{kind.replace('_', '-')}", "precision": "fp32",
        "exporter": {"name": "tests/test_zoo_fixture_twins.py", "version": "0"},
        "reconstruction": "a test fixture, not a zoo twin",
        "checkpoint": {"class": "numpy", "seed": seed, "transformers": "-", "torch": "-"},
        "files": files,
        "graphs": {g: _summary(d / g) for g in graphs.values()},
        "contract": contract,
        "tokens": {"batch": 1, "prompt": [PROMPT], "decode": DECODE},
        "oracle": {"kind": "torch-eager", "file": "oracle.npz", "dtype": "float32",
                   "weights": "numpy float64 of the fixture's weights (stands in for eager)"},
    }
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return d


def test_fixture_oracle_is_causal_and_position_based():
    """The fixture's oracle itself: a prefix's logits do not depend on later tokens, and the
    position base changes the logits (so a wrong base cannot pass unnoticed)."""
    w = weights()
    a = oracle(w, PROMPT)
    b = oracle(w, PROMPT + [1, 2])
    np.testing.assert_allclose(a, b[:, : len(PROMPT)], rtol=1e-12)
    assert np.abs(oracle(w, PROMPT, base=1) - a).max() > 0.1
