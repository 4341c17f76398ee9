"""com.microsoft.GroupQueryAttention: the op the fused LLM exports live or die on.

Each case is a `Scenario`: head layout (from a zoo model or an edge shape), phase (first
prompt, right-padded batch prompt, decode on a past, chunk on a past, ragged batch,
shared max-length buffer with slack, multi-step prefill + decodes feeding present back as
past), features (do_rotary, window, softcap, sinks, bias, packed QKV, qk_output, …) and dtype.

Oracle: an independent lowering to standard ONNX ops run by onnx.reference in float64 —
RotaryEmbedding-23 for rotary, ScatterND to place new rows in the cache, Attention-23 for the
attention itself (GQA head broadcast, scale, softcap) with an explicit additive mask for
causality, windows, ragged lengths and attention_bias, and a zero key/value column whose mask
entry is the sink logit for smooth_softmax/head_sink. Output rows and cache rows the schema
calls unspecified are masked out of the comparison. Where the schema text is ambiguous the
case also carries the other reading, and a backend matching it is named in its cell.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from onnx import helper

from harness.case import Built, Case, dtype_name
from harness.data import normal, rope_cache, up
from harness.graph import MS, GraphBuilder, run_reference, single_node_model
from harness import readings as R
from harness.tolerances import for_dtype
from harness.families import Family, Row
from harness.refops import gqa as ref_gqa

_TRACT_GEMMA3 = "the tract report on a Gemma-3 ORT-GenAI export"
FAMILY = Family(
    marks={
        "gqa": "com.microsoft.GroupQueryAttention, any phase",
        "gqa_prefill": "GroupQueryAttention, first prompt (no past)",
        "gqa_decode": "GroupQueryAttention with past KV: decode steps and later chunks",
        "gqa_multistep": "GroupQueryAttention prefill then decodes, present fed back as past",
        "gqa_rotary": "GQA with do_rotary=1",
        "gqa_window": "GQA with local_window_size",
        "gqa_softcap": "GQA with softcap",
        "gqa_ragged": "GQA with per-batch seqlens_k that differ",
        "gqa_packed": "GQA with packed QKV",
        "gqa_shared_buffer": "GQA with past/present in one max-length buffer",
        "gqa_sink": "GQA with smooth_softmax or head_sink",
        "gqa_bias": "GQA with attention_bias",
        "gqa_qk_output": "GQA with the output_qk output",
        "gqa_position_ids": "GQA with do_rotary and explicit position_ids",
        "gqa_query_seqlens": "GQA with query_seqlens (right-padded chunks, idle entries)",
        "gqa_qk_norm": "GQA with q_norm_weight/k_norm_weight",
        "gqa_kv_quant": "GQA with a quantised KV cache (int8 / int4, per-tensor / per-channel scales)",
        "gqa_sliding_cache": "GQA with sliding_window_cache=1 (window-sized KV buffers, internal eviction)",
    },
    reference_ops=ref_gqa.OPS,
    rows=[
        Row("GQA do_rotary=1", f"{_TRACT_GEMMA3}: 'internal rotary (do_rotary) is unsupported'", m="gqa_rotary"),
        Row("GQA past KV (decode / chunk / multi-step)",
            f"{_TRACT_GEMMA3}: 'any past_key/past_value rejected (prefill only)'", m="gqa_decode"),
        Row("GQA positions from seqlens_k (ragged batch)",
            f"{_TRACT_GEMMA3}: 'indexes cos/sin at positions derived from the per-batch length'", m="gqa_ragged"),
        Row("GQA do_rotary + past + window 512, Gemma-3 1B layout",
            f"{_TRACT_GEMMA3}: the exact GQA node of model_q4.onnx", k="gemma3 and win512", m="gqa_rotary"),
        Row("GQA head 512 / scale 1.0 (Gemma-4 global layers)",
            "the ORT-GenAI request for Gemma-4: variable head dims 256/512", k="gemma4g", m="gqa"),
        Row("GQA sliding head 256 (Gemma-4 sliding layers)",
            "the ORT-GenAI request for Gemma-4: sliding (256) vs full attention (512)", k="gemma4s", m="gqa"),
        Row("Static KV cache buffer (shared past/present)",
            "the hand-built Gemma export with a static KV cache and a prefill/decode split", m="gqa_shared_buffer"),
    ],
)

# (q heads, kv heads, head size, description) of the zoo models, plus edge shapes
LAYOUTS: dict[str, tuple[int, int, int]] = {
    "gemma3": (4, 1, 256),  # Gemma-3 1B: window 512, do_rotary
    "gemma4s": (8, 1, 256),  # Gemma-4 E2B sliding layers
    "gemma4g": (8, 1, 512),  # Gemma-4 E2B global layers: head 512, scale 1.0
    "phi3": (32, 32, 96),  # Phi-3 mini: MHA, packed QKV
    "qwen2": (14, 2, 64),  # Qwen2.5-0.5B
    "llama": (32, 8, 128),  # Llama-style 8B
    "edge1": (2, 1, 16),
    "edge2": (6, 3, 40),
}


@dataclass(frozen=True)
class Scenario:
    layout: str
    phase: str  # prefill | prefill-padded | decode | chunk | multistep
    past: tuple[int, ...] = ()  # P_b per batch entry (decode/chunk); empty for a first prompt
    qlen: tuple[int, ...] = (7,)  # valid query rows per batch entry
    seq: int = 0  # S (padded chunk length); 0 -> max(qlen)
    buffer: str = "concat"  # concat | shared (max-length buffer)
    slack: int = 0  # extra capacity of the shared buffer
    steps: int = 0  # decode steps after the prefill (multistep)
    rotary: int = 0  # 0 none, 1 half-split, 2 interleaved
    position_ids: int = 0
    window: int = -1
    softcap: float = 0.0
    sink: str = ""  # "" | smooth | head
    bias: int = 0
    scale: float = 0.0
    packed: int = 0
    causal: int = 1
    qk_output: int = 0
    qseqlens: int = 0  # feed query_seqlens (right-padded chunks, idle entries)
    qknorm: int = 0  # q_norm_weight/k_norm_weight (Qwen3-style per-head RMS norm)
    kvq: str = ""  # quantised KV cache: int8-tensor | int8-channel | int4-tensor | int4-channel
    dtype: Any = np.float32
    #: R17, float16/bfloat16 only (oracle only, not part of the id): "rounded" (chosen): the
    #: rotated/normalised Q and K are computed exactly and rounded once to the dtype; "q-unrounded":
    #: only K is (present_key stores it); "t-arithmetic": the rotation runs in the dtype's own
    #: arithmetic (each product and sum rounded, as RotaryEmbedding on T inputs computes)
    precision: str = "rounded"

    @property
    def kv_bits(self) -> int:
        return 4 if self.kvq.startswith("int4") else 8

    @property
    def heads(self):
        return LAYOUTS[self.layout]

    @property
    def batch(self) -> int:
        return len(self.qlen)

    @property
    def s(self) -> int:
        return self.seq or max(self.qlen)

    def case_id(self) -> str:
        n, nkv, h = self.heads
        parts = [self.phase]
        if self.buffer == "shared":
            parts.append(f"shared{self.slack}")
        if self.buffer == "sliding":
            parts.append(f"slidingcache{self.slack}")
        feats = []
        if self.rotary:
            feats.append("rotary" if self.rotary == 1 else "rotaryinter")
        if self.position_ids:
            feats.append("posids")
        if self.window >= 0:
            feats.append(f"win{self.window}")
        if self.softcap:
            feats.append(f"softcap{self.softcap:g}")
        if self.sink:
            feats.append(f"sink{self.sink}")
        if self.bias:
            feats.append("bias")
        if self.scale:
            feats.append(f"scale{self.scale:g}")
        if self.packed:
            feats.append("packed")
        if not self.causal:
            feats.append("bidir")
        if self.qk_output:
            feats.append(f"qk{self.qk_output}")
        if self.qseqlens:
            feats.append("qseqlens")
        if self.qknorm:
            feats.append("qknorm")
        if self.kvq:
            feats.append(f"kv{self.kvq}")
        parts += feats or ["plain"]
        ragged = len(set(self.qlen)) > 1 or (self.past and len(set(self.past)) > 1)
        if ragged:
            parts.append("ragged")
        shape = f"b{self.batch}-{self.layout}-h{n}kv{nkv}-d{h}"
        if self.phase == "multistep":
            shape += f"-s{self.s}x{self.steps}"
        else:
            shape += f"-s{self.s}"
        if self.past:
            shape += "-past" + "_".join(map(str, self.past))
        return f"gqa/{'-'.join(parts)}-{shape}-{dtype_name(self.dtype)}"

    def features(self) -> dict[str, Any]:
        n, nkv, h = self.heads
        return {"phase": self.phase, "layout": self.layout, "num_heads": n, "kv_num_heads": nkv, "head_size": h,
                "batch": self.batch, "seq": self.s, "past": list(self.past) or 0, "qlen": list(self.qlen),
                "buffer": self.buffer, "do_rotary": int(bool(self.rotary)), "rotary_interleaved": int(self.rotary == 2),
                "position_ids": self.position_ids, "local_window_size": self.window, "softcap": self.softcap,
                "sink": self.sink or "none", "attention_bias": self.bias, "scale": self.scale or "default",
                "packed_qkv": self.packed, "causal": self.causal, "qk_output": self.qk_output,
                "query_seqlens": self.qseqlens, "qk_norm": self.qknorm, "kv_quant": self.kvq or "none",
                "ragged": int(len(set(self.qlen)) > 1 or bool(self.past and len(set(self.past)) > 1)),
                "steps": self.steps + 1 if self.phase == "multistep" else 1, "dtype": dtype_name(self.dtype)}

    def marks(self) -> tuple[str, ...]:
        m = ["gqa", "attention"]
        m.append("gqa_prefill" if self.phase in ("prefill", "prefill-padded") else "gqa_decode")
        if self.phase == "multistep":
            m += ["gqa_multistep", "gqa_prefill"]
        for flag, mark in [(self.rotary, "gqa_rotary"), (self.window >= 0, "gqa_window"), (self.softcap, "gqa_softcap"),
                           (self.sink, "gqa_sink"), (self.bias, "gqa_bias"), (self.packed, "gqa_packed"),
                           (self.buffer == "shared", "gqa_shared_buffer"), (self.qk_output, "gqa_qk_output"),
                           (self.position_ids, "gqa_position_ids"), (self.features()["ragged"], "gqa_ragged"),
                           (self.qseqlens, "gqa_query_seqlens"), (self.qknorm, "gqa_qk_norm"),
                           (self.buffer == "sliding", "gqa_sliding_cache"), (self.kvq, "gqa_kv_quant")]:
            if flag:
                m.append(mark)
        if np.dtype(self.dtype) == np.float16:
            m.append("fp16")
        if dtype_name(self.dtype) == "bf16":
            m.append("bf16")
        if self.layout == "gemma3" and self.rotary and self.past:
            m.append("seed_gap")
        return tuple(dict.fromkeys(m))


# ------------------------------------------------------------------------------------------
# the model under test


def gqa_node(sc: Scenario, with_past: bool, has_cos: bool) -> helper.NodeProto:
    n, nkv, _ = sc.heads
    ins = ["query", "" if sc.packed else "key", "" if sc.packed else "value",
           "past_key" if with_past else "", "past_value" if with_past else "", "seqlens_k", "total_sequence_length",
           "cos_cache" if has_cos else "", "sin_cache" if has_cos else "", "position_ids" if sc.position_ids else "",
           "attention_bias" if sc.bias else "", "head_sink" if sc.sink == "head" else "",
           "k_scale" if sc.kvq else "", "v_scale" if sc.kvq else "",
           "q_norm_weight" if sc.qknorm else "", "k_norm_weight" if sc.qknorm else "",
           "query_seqlens" if sc.qseqlens else ""]
    while ins and ins[-1] == "":
        ins.pop()
    outs = ["output", "present_key", "present_value"] + (["output_qk"] if sc.qk_output else [])
    attrs: dict[str, Any] = {"num_heads": n, "kv_num_heads": nkv}
    if sc.rotary:
        attrs.update(do_rotary=1, rotary_interleaved=int(sc.rotary == 2))
    if sc.window >= 0:
        attrs["local_window_size"] = sc.window
    if sc.softcap:
        attrs["softcap"] = float(sc.softcap)
    if sc.sink == "smooth":
        attrs["smooth_softmax"] = 1
    if sc.scale:
        attrs["scale"] = float(sc.scale)
    if not sc.causal:
        attrs["causal"] = 0
    if sc.qk_output:
        attrs["qk_output"] = sc.qk_output
    if sc.buffer == "sliding":
        attrs["sliding_window_cache"] = 1
    if sc.kvq:
        mode = "PER_TENSOR" if sc.kvq.endswith("tensor") else "PER_CHANNEL"
        attrs.update(k_quant_type=mode, v_quant_type=mode, kv_cache_bit_width=sc.kv_bits)
    return helper.make_node("GroupQueryAttention", ins, outs, domain=MS, **attrs)


def gqa_model(sc: Scenario, feeds: dict[str, np.ndarray], present_len: int | str, total: int | str) -> Any:
    n, nkv, h = sc.heads
    node = gqa_node(sc, "past_key" in feeds, "cos_cache" in feeds)
    b = sc.batch
    cache_dt, cache_h = sc.dtype, h
    if sc.kvq:
        cache_dt, cache_h = (np.uint8, h // 2) if sc.kv_bits == 4 else (np.int8, h)
    outs = {"output": (sc.dtype, [b, sc.s, n * h]), "present_key": (cache_dt, [b, nkv, present_len, cache_h]),
            "present_value": (cache_dt, [b, nkv, present_len, cache_h])}
    if sc.qk_output:
        outs["output_qk"] = (sc.dtype, [b, n, sc.s, total])
    model = single_node_model(node, feeds, outs)
    if sc.phase == "multistep":  # shapes change from step to step: name those dims
        symbolic = {"query": {1: "S"}, "key": {1: "S"}, "value": {1: "S"}, "position_ids": {1: "S"},
                    "past_key": {2: "P"}, "past_value": {2: "P"}, "attention_bias": {2: "S", 3: "T"},
                    "output": {1: "S"}, "present_key": {2: "C"}, "present_value": {2: "C"},
                    "output_qk": {2: "S", 3: "T"}}
        for vi in list(model.graph.input) + list(model.graph.output):
            for axis, name in symbolic.get(vi.name, {}).items():
                vi.type.tensor_type.shape.dim[axis].dim_param = name
    return model


# ------------------------------------------------------------------------------------------
# the oracle: standard ops, float64, onnx.reference


def _graph_inputs(sc: Scenario, q, k, v, cache_k, cache_v, cos, sin, pos, norms=None):
    """The shared prologue of the oracle graphs: float64 inputs, the optional q/k RMS norm
    (RMSNormalization-23, before rotary), BSNH -> BNSH, RotaryEmbedding-23 at positions `pos`,
    then (R17) the transformed K — and Q, unless `sc.round_q` is off — rounded to a float16 or
    bfloat16 case's dtype: the rotated K is materialised in present_key of that type, and the
    attention over the cache reads it as stored."""
    g = GraphBuilder(opset=23)
    gq, gk, gv = (g.input(nm, np.float64, a.shape) for nm, a in (("q", q), ("k", k), ("v", v)))
    gck = g.input("cache_k", np.float64, cache_k.shape)
    gcv = g.input("cache_v", np.float64, cache_v.shape)
    feeds = {"q": up(q), "k": up(k), "v": up(v), "cache_k": up(cache_k), "cache_v": up(cache_v)}
    if norms is not None:
        (qw, kw), eps = norms
        gq = g.op("RMSNormalization", gq, g.const(up(qw)), axis=-1, epsilon=eps)
        gk = g.op("RMSNormalization", gk, g.const(up(kw)), axis=-1, epsilon=eps)
    qt, kt, vt = (g.op("Transpose", x, perm=[0, 2, 1, 3]) for x in (gq, gk, gv))
    low_precision = np.dtype(sc.dtype) != np.float32
    low = helper.np_dtype_to_tensor_dtype(np.dtype(sc.dtype))
    f64 = helper.np_dtype_to_tensor_dtype(np.dtype(np.float64))
    if sc.rotary:
        gcos, gsin = g.input("cos", np.float64, cos.shape), g.input("sin", np.float64, sin.shape)
        gpos = g.input("pos", np.int64, pos.shape)
        feeds.update(cos=up(cos), sin=up(sin), pos=pos)
        if low_precision and sc.precision == "t-arithmetic":  # onnx.reference computes in the input's dtype
            gcos, gsin = g.op("Cast", gcos, to=low), g.op("Cast", gsin, to=low)
            qt, kt = (g.op("Cast", g.op("RotaryEmbedding", g.op("Cast", x, to=low), gcos, gsin, gpos,
                                        interleaved=int(sc.rotary == 2)), to=f64) for x in (qt, kt))
        else:
            qt = g.op("RotaryEmbedding", qt, gcos, gsin, gpos, interleaved=int(sc.rotary == 2))
            kt = g.op("RotaryEmbedding", kt, gcos, gsin, gpos, interleaved=int(sc.rotary == 2))
    if low_precision and (sc.rotary or norms is not None) and sc.precision != "t-arithmetic":  # R17
        kt = g.op("Cast", g.op("Cast", kt, to=low), to=f64)
        if sc.precision == "rounded":
            qt = g.op("Cast", g.op("Cast", qt, to=low), to=f64)
    return g, feeds, gck, gcv, qt, kt, vt


def _attend(g: GraphBuilder, sc: Scenario, qt: str, keys: str, values: str, mask: str, qk_mode: int | None = None) -> str:
    """The shared epilogue: Attention-23 (scale, softcap, the explicit additive mask), then
    BNSH -> (B, S, N*H) as the graph output `output`; returns the name of the qk output."""
    n, _, h = sc.heads
    attrs: dict[str, Any] = {"is_causal": 0, "scale": float(sc.scale) if sc.scale else float(1.0 / np.sqrt(h))}
    if sc.softcap:
        attrs["softcap"] = float(sc.softcap)
    if qk_mode is not None:
        attrs["qk_matmul_output_mode"] = qk_mode
    y, _, _, qk = g.op("Attention", qt, keys, values, mask, outputs=4, **attrs)
    out = g.op("Reshape", g.op("Transpose", y, perm=[0, 2, 1, 3]), g.const(np.array([sc.batch, sc.s, n * h], np.int64)))
    g.output(out, rename="output")
    return qk


def oracle_step(sc: Scenario, q, k, v, cache_k, cache_v, past: list[int], qlens: list[int], cap: int,
                cos, sin, pos, bias, sinks, window: int | None, norms=None) -> dict[str, np.ndarray]:
    """q: (B,S,N,H), k/v: (B,S,Nkv,H); cache_*: (B,Nkv,cap,H) holding the true past rows."""
    n, nkv, h = sc.heads
    b, s = sc.batch, sc.s
    total = [past[i] + qlens[i] for i in range(b)]
    tmax = max(total)
    # scatter indices: new row j of entry i goes to cache row past[i] + j (rows >= T are unspecified)
    idx = np.zeros((b, nkv, s, 4), np.int64)
    for i in range(b):
        for hk in range(nkv):
            for j in range(s):
                idx[i, hk, j] = (i, hk, min(past[i] + j, cap - 1), 0)
    idx = idx[..., :3]
    # additive mask over the cache columns (B, N, S, cap[+1 sink column])
    mask = np.full((b, n, s, cap), -np.inf)
    keys = np.arange(cap)
    for i in range(b):
        for j in range(qlens[i]):
            qpos = past[i] + j
            allowed = keys < total[i]
            if sc.causal:
                allowed &= keys <= qpos
            if window is not None:
                allowed &= keys > qpos - window
            mask[i, :, j, allowed] = 0.0
            if bias is not None:
                bb = up(bias)
                for hq in range(n):
                    mask[i, hq, j, : total[i]] += bb[min(i, bb.shape[0] - 1), min(hq, bb.shape[1] - 1), j, : total[i]]
    g = GraphBuilder(opset=23)
    g, feeds, gck, gcv, qt, kt, vt = _graph_inputs(sc, q, k, v, cache_k, cache_v, cos, sin, pos, norms)
    gidx = g.input("idx", np.int64, idx.shape)
    gmask = g.input("mask", np.float64, None)
    feeds["idx"] = idx
    present_k = g.op("ScatterND", gck, gidx, kt)
    present_v = g.op("ScatterND", gcv, gidx, vt)
    att_k, att_v = present_k, present_v
    if sinks is not None:  # a zero key/value column whose additive mask is the sink logit
        zeros = g.const(np.zeros((b, nkv, 1, h)))
        att_k = g.op("Concat", present_k, zeros, axis=2)
        att_v = g.op("Concat", present_v, zeros, axis=2)
        col = np.broadcast_to(up(sinks).reshape(1, n, 1, 1), (b, n, s, 1))
        mask = np.concatenate([mask, col], axis=3)
    feeds["mask"] = mask
    qk = _attend(g, sc, qt, att_k, att_v, gmask, qk_mode=3 if sc.qk_output == 2 else None)
    g.output(present_k, rename="present_key")
    g.output(present_v, rename="present_value")
    g.output(qk, rename="qk")
    r = run_reference(g.model(), feeds)
    result = {"output": r["output"], "present_key": r["present_key"], "present_value": r["present_value"]}
    if sc.qk_output:
        qkv = r["qk"][..., :cap]
        full = np.zeros((b, n, s, tmax))
        full[..., : min(cap, tmax)] = qkv[..., : min(cap, tmax)]
        result["output_qk"] = full
    return result


def resident_by_simulation(t: int, cap: int, window: int) -> int:
    """The oracle's own count of resident positions: append tokens one at a time and evict
    G = C - W + 1 positions whenever the buffer overflows (the schema's description, simulated;
    the reference uses the closed form)."""
    g, n = cap - window + 1, 0
    for _ in range(t):
        n += 1
        if n > cap:
            n -= g
    return n


def oracle_step_sliding(sc: Scenario, q, k, v, cache_k, cache_v, past: list[int], qlens: list[int], cap: int,
                        cos, sin, pos, window: int) -> dict[str, np.ndarray]:
    """sliding_window_cache=1: scatter the resident past rows and the new rows into a buffer indexed
    by absolute position (plus one never-read dump row), attend with an explicit mask, and gather
    the L(T) most recent positions back into rows [0, L) of present (GatherND)."""
    resident = resident_by_simulation
    n, nkv, h = sc.heads
    b, s = sc.batch, sc.s
    total = [past[i] + qlens[i] for i in range(b)]
    abs_len = max(total)
    dump = abs_len
    old_idx = np.zeros((b, nkv, cap, 3), np.int64)
    new_idx = np.zeros((b, nkv, s, 3), np.int64)
    gather_idx = np.zeros((b, nkv, cap, 3), np.int64)
    mask = np.full((b, n, s, abs_len + 1), -np.inf)
    for i in range(b):
        lp = resident(past[i], cap, window)
        lt = resident(total[i], cap, window)
        for hk in range(nkv):
            for r in range(cap):
                old_idx[i, hk, r] = (i, hk, past[i] - lp + r if r < lp else dump)
                gather_idx[i, hk, r] = (i, hk, total[i] - lt + r if r < lt else dump)
            for j in range(s):
                new_idx[i, hk, j] = (i, hk, past[i] + j if j < qlens[i] else dump)
        keys = np.arange(abs_len + 1)
        for j in range(qlens[i]):
            qpos = past[i] + j
            allowed = (keys < total[i]) & (keys >= past[i] - lp) & (keys <= qpos) & (keys > qpos - window)
            mask[i, :, j, allowed] = 0.0
    g, feeds, gck, gcv, qt, kt, vt = _graph_inputs(sc, q, k, v, cache_k, cache_v, cos, sin, pos)
    zeros = g.const(np.zeros((b, nkv, abs_len + 1, h)))
    full_k = g.op("ScatterND", g.op("ScatterND", zeros, g.const(old_idx), gck), g.const(new_idx), kt)
    full_v = g.op("ScatterND", g.op("ScatterND", zeros, g.const(old_idx), gcv), g.const(new_idx), vt)
    _attend(g, sc, qt, full_k, full_v, g.const(mask))
    g.output(g.op("GatherND", full_k, g.const(gather_idx)), rename="present_key")
    g.output(g.op("GatherND", full_v, g.const(gather_idx)), rename="present_value")
    return run_reference(g.model(), feeds)


def pack_nibbles(values: np.ndarray, offset: int = 0) -> np.ndarray:
    """The oracle's own 4-bit packing (arithmetic, not bit operations): byte = lo + 16 * hi.
    offset 8 (R14's chosen reading): nibble = value + 8; offset 0: the other reading, each nibble
    the two's complement of a value in [-8, 7]."""
    v = np.mod(np.asarray(values).astype(np.int64) + offset, 16)
    return (v[..., 0::2] + 16 * v[..., 1::2]).astype(np.uint8)


def unpack_nibbles(data: np.ndarray, offset: int = 0) -> np.ndarray:
    d = np.asarray(data).astype(np.int64)
    n = np.stack([d % 16, d // 16], axis=-1).reshape(*d.shape[:-1], d.shape[-1] * 2)
    return (n - offset if offset else np.where(n >= 8, n - 16, n)).astype(np.float64)


def oracle_step_kvq(sc: Scenario, q, k, v, cache_k, cache_v, past: list[int], qlens: list[int], cap: int,
                    cos, sin, pos, window: int | None, k_scale, v_scale, float_new_rows: bool = False):
    """Quantised cache: the cache holds integers (unpacked, float64 here); new rows are
    quantised with Div/Round/Clip (ONNX Round is half-to-even), placed with ScatterND, and the
    attention reads Mul(cache, scale). With `float_new_rows`, the other reading: attention reads
    the new rows before quantisation."""
    n, nkv, h = sc.heads
    b, s = sc.batch, sc.s
    total = [past[i] + qlens[i] for i in range(b)]
    lo, hi = (-8.0, 7.0) if sc.kv_bits == 4 else (-128.0, 127.0)
    idx = np.array([[[(i, hk, min(past[i] + j, cap - 1)) for j in range(s)] for hk in range(nkv)] for i in range(b)],
                   np.int64)
    mask = np.full((b, n, s, cap), -np.inf)
    keys = np.arange(cap)
    for i in range(b):
        for j in range(qlens[i]):
            qpos = past[i] + j
            allowed = (keys < total[i]) & (keys <= qpos)
            if window is not None:
                allowed &= keys > qpos - window
            mask[i, :, j, allowed] = 0.0
    g, feeds, gck, gcv, qt, kt, vt = _graph_inputs(sc, q, k, v, cache_k, cache_v, cos, sin, pos)
    gks = g.const(np.asarray(k_scale, np.float64).reshape(1, -1, 1, h) if np.size(k_scale) > 1 else np.float64(np.asarray(k_scale).ravel()[0]))
    gvs = g.const(np.asarray(v_scale, np.float64).reshape(1, -1, 1, h) if np.size(v_scale) > 1 else np.float64(np.asarray(v_scale).ravel()[0]))
    lo_c, hi_c = g.const(np.float64(lo)), g.const(np.float64(hi))
    kq = g.op("Clip", g.op("Round", g.op("Div", kt, gks)), lo_c, hi_c)
    vq = g.op("Clip", g.op("Round", g.op("Div", vt, gvs)), lo_c, hi_c)
    gidx = g.const(idx)
    pk, pv = g.op("ScatterND", gck, gidx, kq), g.op("ScatterND", gcv, gidx, vq)
    if float_new_rows:
        att_k = g.op("ScatterND", g.op("Mul", gck, gks), gidx, kt)
        att_v = g.op("ScatterND", g.op("Mul", gcv, gvs), gidx, vt)
    else:
        att_k, att_v = g.op("Mul", pk, gks), g.op("Mul", pv, gvs)
    _attend(g, sc, qt, att_k, att_v, g.const(mask))
    g.output(pk, rename="present_key")
    g.output(pv, rename="present_value")
    return run_reference(g.model(), feeds)


def _cache_bytes(sc: Scenario, ints: np.ndarray, offset: int = 0) -> np.ndarray:
    return pack_nibbles(ints, offset) if sc.kv_bits == 4 else np.asarray(ints).astype(np.int8)


def masks_for(sc: Scenario, past, qlens, cap, window) -> dict[str, np.ndarray]:
    n, nkv, h = sc.heads
    b, s = sc.batch, sc.s
    total = [past[i] + qlens[i] for i in range(b)]
    out = np.zeros((b, s, n * h), bool)
    pk = np.zeros((b, nkv, cap, h), bool)
    qk = np.zeros((b, n, s, max(total)), bool)
    for i in range(b):
        out[i, : qlens[i]] = True
        if sc.buffer == "sliding":
            pk[i, :, : resident_by_simulation(total[i], cap, sc.window)] = True
        else:
            pk[i, :, : total[i]] = True
        for j in range(qlens[i]):
            qpos = past[i] + j
            keys = np.arange(max(total))
            if sc.qk_output == 2:
                qk[i, :, j, : total[i]] = True
            else:  # R9: before softmax, only the keys the query may see are specified
                allowed = keys < total[i]
                if sc.causal:
                    allowed &= keys <= qpos
                if window is not None:
                    allowed &= keys > qpos - window
                qk[i, :, j] = allowed
    if sc.kvq and sc.kv_bits == 4:
        pk = pk[..., 0::2]
    m = {"output": out, "present_key": pk, "present_value": pk}
    if sc.qk_output:
        m["output_qk"] = qk
    return m


# ------------------------------------------------------------------------------------------
# building a case


def _draw_step(rng, sc: Scenario, s: int):
    n, nkv, h = sc.heads
    b = sc.batch
    q = normal(rng, (b, s, n, h), sc.dtype)
    k = normal(rng, (b, s, nkv, h), sc.dtype)
    v = normal(rng, (b, s, nkv, h), sc.dtype)
    return q, k, v


def _qkv_feeds(sc: Scenario, q, k, v) -> dict[str, np.ndarray]:
    b, s = q.shape[:2]
    if sc.packed:
        return {"query": np.concatenate([q.reshape(b, s, -1), k.reshape(b, s, -1), v.reshape(b, s, -1)], axis=2)}
    return {"query": q.reshape(b, s, -1), "key": k.reshape(b, s, -1), "value": v.reshape(b, s, -1)}


def build(sc: Scenario, rng: np.random.Generator, window_override: int | None | str = "default",
          nibble_offset: int = 8) -> Built:
    n, nkv, h = sc.heads
    b = sc.batch
    window = (sc.window if sc.window > 0 else None) if window_override == "default" else window_override
    steps = [(list(sc.past) if sc.past else [0] * b, list(sc.qlen), sc.s)]
    if sc.phase == "multistep":
        for _ in range(sc.steps):
            prev_past, prev_q, _ = steps[-1]
            steps.append(([prev_past[i] + prev_q[i] for i in range(b)], [1] * b, 1))
    t_final = max(p + q for p, q in zip(*steps[-1][:2]))
    max_pos = t_final + 8
    cos, sin = rope_cache(max_pos, h, sc.dtype) if sc.rotary else (None, None)
    with_past = (bool(sc.past) or sc.buffer in ("shared", "sliding") or sc.phase == "multistep" or bool(sc.qseqlens)
                 or bool(sc.kvq))
    if sc.buffer == "shared":
        cap0 = t_final + sc.slack
    elif sc.buffer == "sliding":
        cap0 = sc.window + sc.slack
    else:
        cap0 = max(steps[0][0]) if sc.past else 0
    # the true cache, carried by the oracle across steps
    true_k = normal(rng, (b, nkv, cap0, h), sc.dtype) if with_past else None
    true_v = normal(rng, (b, nkv, cap0, h), sc.dtype) if with_past else None
    k_scale = v_scale = None
    if sc.kvq:  # integer cache contents and scales that keep N(0, 1) keys mostly in range
        lim = 7 if sc.kv_bits == 4 else 100
        true_k = rng.integers(-lim, lim + 1, size=(b, nkv, cap0, h)).astype(np.float64)
        true_v = rng.integers(-lim, lim + 1, size=(b, nkv, cap0, h)).astype(np.float64)
        base = 0.5 if sc.kv_bits == 4 else 0.04
        shape = (1,) if sc.kvq.endswith("tensor") else (1, nkv, 1, h)
        k_scale = rng.uniform(0.8 * base, 1.2 * base, size=shape).astype(np.float32)
        v_scale = rng.uniform(0.8 * base, 1.2 * base, size=shape).astype(np.float32)
    if with_past:  # rows at/after each entry's past are stale garbage a correct kernel never reads
        for i in range(b):
            live = steps[0][0][i]
            if sc.buffer == "sliding":
                live = resident_by_simulation(live, cap0, sc.window)
            if sc.buffer in ("shared", "sliding"):
                true_k[i, :, live:] = 1e3 if not sc.kvq else 99.0
                true_v[i, :, live:] = 1e3 if not sc.kvq else 99.0
    feeds_list, expected_list, masks_list, alt_steps = [], [], [], []
    first_model = None
    cache_k, cache_v = (up(true_k), up(true_v)) if with_past else (None, None)
    if sc.kvq and sc.kv_bits == 4 and nibble_offset:  # the same bytes, read the other way
        cache_k = unpack_nibbles(_cache_bytes(sc, true_k), nibble_offset)
        cache_v = unpack_nibbles(_cache_bytes(sc, true_v), nibble_offset)
    for si, (past, qlens, s) in enumerate(steps):
        sc_step = replace(sc, seq=s, qlen=tuple(qlens))
        q, k, v = _draw_step(rng, sc_step, s)
        total = [past[i] + qlens[i] for i in range(b)]
        tmax = max(total)
        feeds = _qkv_feeds(sc, q, k, v)
        if with_past:
            if si == 0:
                feeds["past_key"], feeds["past_value"] = ((_cache_bytes(sc, true_k), _cache_bytes(sc, true_v))
                                                          if sc.kvq else (true_k, true_v))
            else:
                feeds["past_key"] = feeds["past_value"] = None  # carried from the backend's own present
        feeds["seqlens_k"] = np.array([t - 1 for t in total], np.int32)
        if sc.qseqlens:
            feeds["query_seqlens"] = np.array(qlens, np.int32)
        cur_len = cache_k.shape[2] if cache_k is not None else 0
        # with query_seqlens, total_sequence_length is "only an upper bound … (for example the
        # KV cache capacity)", and the padded chunk must fit: P + S <= C
        total_feed = (cur_len if cur_len >= tmax else cur_len + s) if sc.qseqlens else tmax
        feeds["total_sequence_length"] = np.array(total_feed, np.int32)
        pos = np.array([[past[i] + j for j in range(s)] for i in range(b)], np.int64)
        if sc.rotary:
            feeds["cos_cache"], feeds["sin_cache"] = cos, sin
        if sc.position_ids:
            feeds["position_ids"] = pos
        bias = None
        if sc.bias:
            bias = normal(rng, (b, 1, s, total_feed), sc.dtype, 0.0, 0.5)
            feeds["attention_bias"] = bias
        sinks = None
        if sc.sink == "head":
            sinks = normal(rng, (n,), sc.dtype, 0.0, 1.0)
            feeds["head_sink"] = sinks
        elif sc.sink == "smooth":
            sinks = np.zeros(n)
        if sc.kvq:
            feeds["k_scale"], feeds["v_scale"] = k_scale, v_scale
        norms = None
        if sc.qknorm:
            norms = ((normal(rng, (h,), sc.dtype, 1.0, 0.3), normal(rng, (h,), sc.dtype, 1.0, 0.3)), 1e-6)
            feeds["q_norm_weight"], feeds["k_norm_weight"] = norms[0]
        cap = cur_len if (with_past and (cur_len >= tmax or sc.buffer == "sliding")) else cur_len + s
        ck = np.zeros((b, nkv, cap, h))
        cv = np.zeros((b, nkv, cap, h))
        if cache_k is not None:
            ck[:, :, :cur_len] = cache_k
            cv[:, :, :cur_len] = cache_v
        if sc.kvq:
            exp = oracle_step_kvq(sc_step, q, k, v, ck, cv, past, qlens, cap, cos, sin, pos, window, k_scale, v_scale)
            alt = oracle_step_kvq(sc_step, q, k, v, ck, cv, past, qlens, cap, cos, sin, pos, window, k_scale, v_scale,
                                  float_new_rows=True)
            alt_steps.append({"output": alt["output"], "present_key": _cache_bytes(sc, alt["present_key"], nibble_offset),
                              "present_value": _cache_bytes(sc, alt["present_value"], nibble_offset)})
        elif sc.buffer == "sliding":
            exp = oracle_step_sliding(sc_step, q, k, v, ck, cv, past, qlens, cap, cos, sin, pos, sc.window)
        else:
            exp = oracle_step(sc_step, q, k, v, ck, cv, past, qlens, cap, cos, sin, pos, bias, sinks, window, norms)
        masks = masks_for(sc_step, past, qlens, cap, window)
        cache_k, cache_v = exp["present_key"], exp["present_value"]
        if sc.kvq:
            exp = {"output": exp["output"], "present_key": _cache_bytes(sc, exp["present_key"], nibble_offset),
                   "present_value": _cache_bytes(sc, exp["present_value"], nibble_offset)}
        if si == 0:
            model_feeds = {k2: v2 for k2, v2 in feeds.items() if v2 is not None}
            first_model = gqa_model(sc, model_feeds, cap if sc.phase != "multistep" else "present_sequence_length",
                                    tmax if sc.phase != "multistep" else "total_sequence_length")
        feeds_list.append({k2: v2 for k2, v2 in feeds.items() if v2 is not None})
        expected_list.append(exp)
        masks_list.append(masks)
    carry = {"present_key": "past_key", "present_value": "past_value"} if len(steps) > 1 else {}
    built = Built(first_model, feeds_list, expected_list, masks_list, carry,
                  oracle="Attention-23 + RotaryEmbedding-23 + ScatterND lowering, float64 (onnx.reference)")
    if alt_steps:  # R16: the other reading of a quantised cache
        built.alternates[R.KVQ_FLOAT_NEW_ROWS] = alt_steps
    return built


def make_case(sc: Scenario) -> Case:
    def make(rng: np.random.Generator) -> Built:
        state = rng.bit_generator.state
        built = build(sc, rng)
        # R3/R4: the other readings of a window, on the same inputs. For W > 0: W preceding
        # keys plus the current one (ONNX Attention-25 left_window_size, ORT before PR
        # #25927). For W = 0: the current key only, or no key at all (all-masked rows -> 0).
        readings = []
        if sc.window > 0:
            readings = [(R.WINDOW_W_PLUS_CURRENT, sc.window + 1)]
        elif sc.window == 0:
            readings = [(R.WINDOW0_CURRENT_ONLY, 1), (R.WINDOW0_NO_KEY, 0)]
        for name, override in readings:
            rng2 = np.random.default_rng()
            rng2.bit_generator.state = state
            built.alternates[name] = build(sc, rng2, window_override=override).expected
        if sc.kvq and sc.kv_bits == 4:  # R14: the other reading of a 4-bit cache byte
            rng2 = np.random.default_rng()
            rng2.bit_generator.state = state
            built.alternates[R.INT4_SIGNED] = build(sc, rng2, nibble_offset=0).expected
        if np.dtype(sc.dtype) != np.float32 and (sc.rotary or sc.qknorm):  # R17: other precisions
            for name, precision in [(R.ROTATED_Q_UNROUNDED, "q-unrounded"), (R.ROTARY_IN_T, "t-arithmetic")]:
                if precision == "t-arithmetic" and not sc.rotary:
                    continue
                rng2 = np.random.default_rng()
                rng2.bit_generator.state = state
                built.alternates[name] = build(replace(sc, precision=precision), rng2).expected
        return built

    # R10: "other EPs must reject the node" when q_norm_weight is set: their refusal is conformant
    refusals = (R.QK_NORM_CPU.id,) if sc.qknorm else ()
    return Case(sc.case_id(), "gqa", sc.features(), sc.marks(), for_dtype("attention", dtype_name(sc.dtype)), make,
                refusals=refusals)


# ------------------------------------------------------------------------------------------
# the grids


def _base_scenarios(full: bool) -> list[Scenario]:
    out: list[Scenario] = []
    layouts = list(LAYOUTS)
    phases = [
        dict(phase="prefill", qlen=(7,)),
        dict(phase="prefill-padded", qlen=(6, 3)),
        dict(phase="decode", past=(1,), qlen=(1,)),
        dict(phase="decode", past=(13,), qlen=(1,)),
        dict(phase="decode", past=(0,), qlen=(1,)),
        dict(phase="decode", past=(5, 9, 2), qlen=(1, 1, 1)),
        dict(phase="chunk", past=(9,), qlen=(4,)),
        dict(phase="decode", past=(4, 11), qlen=(1, 1), buffer="shared", slack=5),
        dict(phase="prefill", qlen=(5, 2), buffer="shared", slack=3),
        dict(phase="multistep", qlen=(5, 3), steps=3),
        dict(phase="multistep", qlen=(4, 4), steps=2, buffer="shared", slack=2),
    ]
    if full:
        phases += [dict(phase="decode", past=(257,), qlen=(1,)), dict(phase="chunk", past=(3,), qlen=(8,)),
                   dict(phase="prefill", qlen=(33,)), dict(phase="decode", past=(0, 6, 1, 17), qlen=(1, 1, 1, 1))]
    features = [
        dict(),
        dict(rotary=1),
        dict(rotary=2),
        dict(window=3),
        dict(softcap=1.5),
        dict(sink="smooth"),
        dict(sink="head"),
        dict(bias=1),
        dict(rotary=1, window=4, softcap=50.0),
        dict(rotary=1, position_ids=1),
        dict(packed=1, rotary=1),
    ]
    if full:
        features += [dict(scale=1.0), dict(qk_output=2), dict(qk_output=1), dict(rotary=2, window=2, sink="head"),
                     dict(window=0), dict(softcap=50.0), dict(packed=1), dict(bias=1, softcap=1.5)]
    for li, layout in enumerate(layouts):
        for pi, ph in enumerate(phases):
            for fi, ft in enumerate(features):
                # rotate layouts through the (phase, feature) grid, llama.cpp/ORT style: every
                # phase x feature pair runs on two layouts; the full grid runs every layout
                if not full and (pi + fi) % len(layouts) not in (li, (li + 3) % len(layouts)):
                    continue
                out.append(Scenario(layout=layout, **ph, **ft))
    return out


def _named_scenarios(full: bool) -> list[Scenario]:
    """Rows the seeds and the research name explicitly."""
    f16 = np.float16
    out = [
        # seed 000: Gemma-3 1B q4 GQA node: do_rotary, past, seqlens_k positions, window 512
        Scenario("gemma3", "decode", past=(600,), qlen=(1,), rotary=1, window=512, scale=0.0625),
        Scenario("gemma3", "decode", past=(600, 37), qlen=(1, 1), rotary=1, window=512, scale=0.0625),
        Scenario("gemma3", "prefill", qlen=(9,), rotary=1, window=512, scale=0.0625),
        Scenario("gemma3", "multistep", qlen=(6, 4), steps=3, rotary=1, window=512, scale=0.0625),
        Scenario("gemma3", "multistep", qlen=(6, 4), steps=3, rotary=1, window=512, scale=0.0625, buffer="shared", slack=4),
        # Gemma-4 E2B global layer: head 512, scale 1.0, softcap 50, window 128 (ORT #28195: fp16 NaN)
        Scenario("gemma4g", "prefill", qlen=(8,), scale=1.0, rotary=1, dtype=f16),
        Scenario("gemma4g", "decode", past=(20,), qlen=(1,), scale=1.0, rotary=1, dtype=f16),
        Scenario("gemma4g", "decode", past=(20,), qlen=(1,), scale=1.0, softcap=50.0, dtype=f16),
        Scenario("gemma4s", "decode", past=(150,), qlen=(1,), window=128, scale=1.0, softcap=50.0, rotary=1, dtype=f16),
        # window counting: S=8, W=3 (research item 1); W=0 (item 2)
        Scenario("edge1", "prefill", qlen=(8,), window=3),
        Scenario("edge1", "prefill", qlen=(8,), window=0),
        Scenario("edge1", "decode", past=(7,), qlen=(1,), window=0),
        # gpt-oss style: sliding window + sinks
        Scenario("qwen2", "decode", past=(40,), qlen=(1,), window=16, sink="head", rotary=1),
        # bidirectional (causal=0)
        Scenario("edge2", "prefill", qlen=(6,), causal=0),
        Scenario("edge2", "prefill-padded", qlen=(6, 2), causal=0),
        # qk_output
        Scenario("edge1", "prefill", qlen=(5,), qk_output=1),
        Scenario("edge1", "prefill", qlen=(5,), qk_output=2),
        Scenario("edge1", "decode", past=(6,), qlen=(1,), qk_output=2),
        # custom scale
        Scenario("qwen2", "decode", past=(10,), qlen=(1,), scale=1.0),
        # batch > 1 decode without shared buffer (ORT PR #20521 NaNs)
        Scenario("llama", "decode", past=(8, 8, 8), qlen=(1, 1, 1), rotary=1),
        # Phi-3 packed QKV with rotary on a past
        Scenario("phi3", "decode", past=(12,), qlen=(1,), packed=1, rotary=1),
        # query_seqlens: right-padded chunks of a fixed S, batched, with an idle entry (Q = 0)
        Scenario("qwen2", "chunk", past=(5, 9), qlen=(3, 1), seq=4, qseqlens=1),
        Scenario("qwen2", "chunk", past=(5, 9), qlen=(3, 1), seq=4, qseqlens=1, rotary=1),
        Scenario("edge1", "chunk", past=(6, 4), qlen=(4, 0), seq=4, qseqlens=1),
        Scenario("llama", "decode", past=(7,), qlen=(1,), qseqlens=1, rotary=1),
        Scenario("edge2", "prefill-padded", qlen=(5, 2), seq=6, qseqlens=1),
        # sliding_window_cache: window-sized buffers with internal eviction (C = W as CUDA needs,
        # and C > W, which amortises compaction), prompts longer than C, ragged resident ranges
        Scenario("edge1", "decode", past=(9,), qlen=(1,), buffer="sliding", slack=2, window=4),
        Scenario("gemma3", "decode", past=(9, 5), qlen=(1, 1), buffer="sliding", slack=0, window=4, rotary=1),
        Scenario("qwen2", "multistep", qlen=(6,), steps=4, buffer="sliding", slack=1, window=4, rotary=1),
        Scenario("edge2", "chunk", past=(8,), qlen=(3,), buffer="sliding", slack=3, window=3),
        Scenario("gemma4s", "multistep", qlen=(3, 2), steps=5, buffer="sliding", slack=2, window=3, scale=1.0),
        # quantised KV cache: int8 and packed int4, per-tensor and per-channel scales
        Scenario("qwen2", "decode", past=(9,), qlen=(1,), kvq="int8-tensor"),
        Scenario("qwen2", "decode", past=(9, 4), qlen=(1, 1), kvq="int8-channel", rotary=1),
        Scenario("llama", "decode", past=(6,), qlen=(1,), kvq="int4-tensor"),
        Scenario("edge1", "decode", past=(5, 8), qlen=(1, 1), kvq="int4-channel"),
        Scenario("edge1", "prefill", qlen=(6,), kvq="int8-tensor"),
        Scenario("gemma3", "multistep", qlen=(4, 2), steps=3, kvq="int8-channel", rotary=1),
        Scenario("edge2", "decode", past=(3, 7), qlen=(1, 1), buffer="shared", slack=2, kvq="int8-tensor"),
        # q/k RMS norm inside the op (Qwen3 exports after ORT's fusion); CPU must reject it
        Scenario("qwen2", "prefill", qlen=(6,), qknorm=1, rotary=1),
        Scenario("qwen2", "decode", past=(9,), qlen=(1,), qknorm=1, rotary=1),
        Scenario("edge1", "decode", past=(3, 8), qlen=(1, 1), qknorm=1),
    ]
    return out


def _dtype_variants(scs: list[Scenario], full: bool) -> list[Scenario]:
    import ml_dtypes

    out = list(scs)
    for i, sc in enumerate(scs):
        if np.dtype(sc.dtype) != np.float32:
            continue
        if full or i % 2 == 0:
            out.append(replace(sc, dtype=np.float16))
        if full or i % 13 == 0:
            out.append(replace(sc, dtype=ml_dtypes.bfloat16))
    return out


def scenarios(grid_name: str) -> list[Scenario]:
    full = grid_name == "full"
    scs = _dtype_variants(_base_scenarios(full), full) + _named_scenarios(full)
    seen, out = set(), []
    for sc in scs:
        cid = sc.case_id()
        if cid not in seen:
            seen.add(cid)
            out.append(sc)
    return out


def cases(grid_name: str = "quick") -> list[Case]:
    return [make_case(sc) for sc in scenarios(grid_name)]
