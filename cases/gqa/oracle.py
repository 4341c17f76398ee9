"""The oracle: the same step lowered to standard ops (Attention-23, RotaryEmbedding-23, ScatterND/GatherND) run by onnx.reference in float64, independent of harness/refops."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from harness.data import up
from harness.graph import GraphBuilder, run_reference

from .scenario import Scenario


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
        (qw, kw), (q_eps, k_eps) = norms
        gq = g.op("RMSNormalization", gq, g.const(up(qw)), axis=-1, epsilon=q_eps)
        gk = g.op("RMSNormalization", gk, g.const(up(kw)), axis=-1, epsilon=k_eps)
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
    """The shared epilogue: Attention-23 (softcap, the explicit additive mask), then
    BNSH -> (B, S, N*H) as the graph output `output`; returns the name of the qk output.

    The scale multiplies Q here, in float64, and Attention runs with scale 1: an attribute is
    float32, and onnx.reference's Attention applies sqrt(scale) to Q and K computed from it in
    float32, so a scale like 1/8 or 1/sqrt(40) moved every logit by up to ~1e-7 relative (outputs
    by ~5e-8). Scaling Q first is the same product (softcap and qk_output see scale * q.k)."""
    n, _, h = sc.heads
    scale = float(sc.scale) if sc.scale else 1.0 / np.sqrt(h)
    qt = g.op("Mul", qt, g.const(np.array(scale, np.float64)))
    attrs: dict[str, Any] = {"is_causal": 0, "scale": 1.0}
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
                    cos, sin, pos, window: int | None, k_scale, v_scale, float_new_rows: bool = False, norms=None):
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
    g, feeds, gck, gcv, qt, kt, vt = _graph_inputs(sc, q, k, v, cache_k, cache_v, cos, sin, pos, norms)
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
