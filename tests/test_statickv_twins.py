"""The shipped static-KV twins have the form docs/zoo.md ("The static form") describes, read from
the ONNX files themselves (not from the manifests the build scripts wrote): a prefill graph
without past inputs, a decode graph of one token fed its cache, cache_position as the only
position input, fixed [1, kv_heads, L, head_dim] caches, the cache written by index."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from harness.zoo.twins import load_manifest, verify_files

TWINS = Path(__file__).resolve().parents[1] / "zoo" / "twins"
NAMES = ["gemma3-statickv-irbuilt-fp32", "gemma3-statickv-irbuilt-fp16", "gemma3-statickv-irbuilt-q4",
         "gemma3-statickv-irbuilt-q4f16", "gemma3-statickv-torchexport-fp32"]
ELEM = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16}


def _io(path: Path):
    m = onnx.load(str(path))
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    ins = {i.name: (i.type.tensor_type.elem_type, dims(i)) for i in m.graph.input}
    outs = {o.name: (o.type.tensor_type.elem_type, dims(o)) for o in m.graph.output}
    return m, ins, outs


@pytest.mark.parametrize("name", NAMES)
def test_static_twin_has_the_documented_form(name):
    d = TWINS / name
    man = load_manifest(d)
    verify_files(d, man.files, f"{name}/manifest.json")
    c = man.contract
    kv = c.kv
    assert kv.cache == "static" and c.cache_position == "cache_position"
    assert c.attention_mask is None and c.position_ids is None and c.graphs.prefill and c.graphs.embed is None
    prompt = len(man.tokens.prompt[0])
    assert prompt + len(man.tokens.decode) <= kv.max_length
    cache = [1, kv.heads, kv.max_length, kv.head_dim]
    io_type = ELEM[kv.dtype]
    presents = {kv.present.format(i=i, kv=w) for i in range(kv.count) for w in ("key", "value")}
    pasts = {kv.past.format(i=i, kv=w) for i in range(kv.count) for w in ("key", "value")}

    pm, pin, pout = _io(d / c.graphs.prefill)
    assert set(pin) == {"input_ids", "cache_position"}, "the prefill takes no past: it starts from an empty cache"
    assert pin["input_ids"][0] == onnx.TensorProto.INT64 and len(pin["cache_position"][1]) == 1
    assert pin["input_ids"][1][1] in ("sequence_length", prompt)  # symbolic, or exactly the prompt (static)
    assert set(pout) == {c.logits} | presents
    assert all(pout[p] == (io_type, cache) for p in presents)
    assert pout[c.logits][0] == io_type

    dm, din, dout = _io(d / c.graphs.decoder)
    assert set(din) == {"input_ids", "cache_position"} | pasts
    assert din["input_ids"][1] == [1, 1] and din["cache_position"][1] == [1]
    assert all(din[p] == (io_type, cache) for p in pasts) and all(dout[p] == (io_type, cache) for p in presents)
    ops = {n.op_type for n in dm.graph.node}
    assert ops & {"ScatterElements", "ScatterND"}, "the cache is written by index"
    assert not ops & {"GroupQueryAttention", "Attention", "MultiHeadAttention"}, "attention is decomposed"
    if man.precision.startswith("q4"):
        assert "MatMulNBits" in ops
