"""ONNX Attention-24 and -25 with the attributes the node-test grid leaves at their defaults:
3D inputs with q_num_heads / kv_num_heads (MHA, GQA and MQA head counts), a custom `scale`,
`softcap`, alone and with `is_causal`. Attention-23 exports (optimum, torch.onnx) move to these
opsets as exporters follow ONNX.

Text relied on (onnx 1.23 `onnx.defs`): "scale: Scaling factor applied to Q*K^T. Default value
is 1/sqrt(head_size)"; Attention-25 "softcap: Soft cap for attention logits, applied as
softcap * tanh(logits / softcap) ... applied before mask / bias addition and softmax";
"q_num_heads / kv_num_heads: Must be used with 3D inputs of Q, K and V"; GQA "q_num_heads >
kv_num_heads, q_num_heads % kv_num_heads == 0" (query head i reads KV head i // group);
is_causal without a cache: "the standard lower-triangular mask". Attention-24's own softcap
text ("Softcap value for attention weights") names no formula; the -25 sentence is read for
both (the op did not change meaning between the two versions).

The reference column is onnx.reference's own Attention; the oracle is the formula in numpy,
float64, written here.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from harness.case import Built, Case, dtype_name
from harness.data import normal, up
from harness.families import Family
from harness.graph import single_node_model
from harness.tolerances import for_dtype

FAMILY = Family(marks={"onnx_attention": "ai.onnx Attention-24/25: q/kv_num_heads, scale, softcap"})

LAYOUTS = {"mha": (2, 2), "gqa": (4, 2), "mqa": (4, 1)}
HEAD = 16
OPTIONS = {"plain": {}, "scale": {"scale": 0.5}, "softcap": {"softcap": 2.0},
           "causal-softcap-scale": {"is_causal": 1, "softcap": 2.0, "scale": 0.5}}
#: options only the long cases use (is_causal alone, which a runtime without softcap can run)
LONG_OPTIONS = {"causal": {"is_causal": 1}}


def oracle(q, k, v, nq: int, nkv: int, scale: float | None, softcap: float, causal: bool) -> np.ndarray:
    b, s, _ = q.shape
    t = k.shape[1]
    qh = up(q).reshape(b, s, nq, HEAD)
    kh = up(k).reshape(b, t, nkv, HEAD)
    vh = up(v).reshape(b, t, nkv, HEAD)
    out = np.zeros((b, s, nq, HEAD))
    sc = scale if scale else 1.0 / np.sqrt(HEAD)
    group = nq // nkv
    for bi in range(b):
        for hq in range(nq):
            hk = hq // group
            logits = (qh[bi, :, hq] @ kh[bi, :, hk].T) * sc
            if softcap:
                logits = softcap * np.tanh(logits / softcap)
            if causal:
                logits = logits + np.triu(np.full((s, t), -np.inf), 1)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            out[bi, :, hq] = (p / p.sum(axis=1, keepdims=True)) @ vh[bi, :, hk]
    return out.reshape(b, s, nq * HEAD)


def _case(opset: int, layout: str, option: str, dtype, s: int = 5) -> Case:
    """s: the sequence length (5 unless a long case says otherwise; only then is it in the id)."""
    nq, nkv = LAYOUTS[layout]
    dt = dtype_name(dtype)
    length = f"-s{s}" if s != 5 else ""
    cid = f"onnx_attention/attention{opset}-3d-{layout}-q{nq}kv{nkv}-{option}{length}-{dt}"
    attrs = dict({**OPTIONS, **LONG_OPTIONS}[option])

    def make(rng: np.random.Generator) -> Built:
        b = 2
        q = normal(rng, (b, s, nq * HEAD), dtype)
        k = normal(rng, (b, s, nkv * HEAD), dtype)
        v = normal(rng, (b, s, nkv * HEAD), dtype)
        feeds = {"Q": q, "K": k, "V": v}
        node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], q_num_heads=nq, kv_num_heads=nkv, **attrs)
        model = single_node_model(node, feeds, {"Y": (dtype, (b, s, nq * HEAD))}, opset=opset)
        y = oracle(q, k, v, nq, nkv, attrs.get("scale"), attrs.get("softcap", 0.0), bool(attrs.get("is_causal")))
        return Built(model, [feeds], [{"Y": y}], oracle="the formula in numpy, float64")

    feats = {"op": f"Attention-{opset}", "layout": layout, "q_num_heads": nq, "kv_num_heads": nkv,
             "option": option, "dtype": dt}
    if s != 5:
        feats["seq"] = s
    marks = ("attention", "onnx_attention") + (("fp16",) if dt == "fp16" else ())
    return Case(cid, "onnx_attention", feats, marks, for_dtype("attention", dt), make)


def cases(grid_name: str = "quick") -> list[Case]:
    full = grid_name == "full"
    out = [_case(24, lay, opt, np.float32) for lay in LAYOUTS for opt in OPTIONS]
    out += [_case(25, lay, opt, np.float32) for lay in LAYOUTS for opt in (OPTIONS if full else ("scale", "softcap"))]
    out += [_case(op, "gqa", "causal-softcap-scale", np.float16) for op in ((24, 25) if full else (24,))]
    # is_causal at the lengths real prompts reach (issue 22)
    out += [_case(24, "mqa", "causal", np.float32, s=128)]
    if full:
        out += [_case(op, lay, opt, np.float32, s=s) for op in (24, 25) for lay in ("gqa", "mqa")
                for opt in ("causal", "causal-softcap-scale") for s in (64, 600)]
    return out
