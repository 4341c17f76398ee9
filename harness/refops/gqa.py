"""com.microsoft.GroupQueryAttention, as ORT's schema text (onnxruntime 1.32) describes it.
The sentences relied on, and the readings chosen where the text is silent, are in
docs/gqa.md; the numbered readings (R1…) are referred to below.

Per batch entry b: T = seqlens_k[b] + 1 tokens are in the cache after the step,
Q = min(S, T) rows of the chunk are valid (right padding beyond), P = T - Q were cached
before. Valid new K/V rows go to cache rows [P, T); query row s sits at absolute position
P + s. Rows the text calls unspecified (output rows >= Q, cache rows >= T) are left zero
here and are never compared.

sliding_window_cache=1 (R12): the buffers hold the L(T) most recent positions at rows [0, L),
L(T) = T if T <= C else T - G*ceil((T - C)/G), G = C - W + 1 (the schema's formula).

Quantised KV caches (R13-R16): int8 past/present, or uint8 bytes holding two 4-bit values
stored unsigned with an offset of 8 (kv_cache_bit_width=4, R14), dequantised as q * scale with k_scale/v_scale broadcast to the
cache shape; new rows are quantised with round-half-to-even and saturation, and attention reads
the cache as stored (the quantised new rows too). Not implemented: float8 caches.

Key and value with zero rows while the query has some (R18, what KV-shared layers of Gemma-4
exports feed): no new rows are appended; past_key/past_value already hold all T = seqlens_k + 1
positions, and the query rows sit at the last Q of them.

R4: local_window_size 0 is the current key only; -1 is "unused". R6: on a first prompt (P = 0 in
every entry) position_ids[0, 0] + s rotates row s of every entry ("uses only the first element").

float16/bfloat16 (R17): the rotated (or q/k-normalised) Q and K are rounded to that type before
the Q·K product, as present_key (type T) stores K; everything else is computed in float64.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from .rotary import rotate


def _rope(x: np.ndarray, pos: np.ndarray, cos: np.ndarray, sin: np.ndarray, interleaved: bool) -> np.ndarray:
    """x: (S, N, H) float64, pos: (S,) -> rotated; the rotary dim is 2 * cos.shape[1] (R7)."""
    r = 2 * cos.shape[1]
    out = x.copy()
    c = cos[pos][:, None, :]
    s = sin[pos][:, None, :]
    out[..., :r] = rotate(x[..., :r], c, s, interleaved)
    return out


def kv_range(bits: int) -> tuple[int, int]:
    return (-8, 7) if bits == 4 else (-128, 127)


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """R14: two 4-bit values per byte along head_size, the low nibble first, each stored
    unsigned with an offset of 8 (value = nibble - 8)."""
    p = np.asarray(packed).astype(np.int16)
    lo, hi = p & 0xF, (p >> 4) & 0xF
    v = np.stack([lo, hi], axis=-1).reshape(*p.shape[:-1], p.shape[-1] * 2)
    return v - 8


def pack_int4(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values).astype(np.int16) + 8
    v = v.reshape(*v.shape[:-1], -1, 2)
    return (v[..., 0] | (v[..., 1] << 4)).astype(np.uint8)


def kv_dequant(q: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    vals = unpack_int4(q) if bits == 4 else np.asarray(q).astype(np.float64)
    return vals.astype(np.float64) * np.asarray(scale, np.float64)


def kv_quant(x: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    """R15: round half to even, saturate; returns the integer values (unpacked)."""
    lo, hi = kv_range(bits)
    return np.clip(np.round(x / np.asarray(scale, np.float64)), lo, hi)


def _scale_rows(scale: np.ndarray, nkv: int, h: int) -> np.ndarray:
    """A scale broadcastable to (B, Nkv, S, H) as (Nkv, 1, H) for rows laid out (Nkv, rows, H)."""
    s = np.broadcast_to(np.asarray(scale, np.float64).reshape((1,) * (4 - np.ndim(scale)) + np.shape(scale)),
                        (1, nkv, 1, h))
    return s[0]


def _rms(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight.astype(np.float64)


def resident(t: int, cap: int, window: int) -> int:
    """L(T): how many of the most recent positions a windowed cache of capacity C keeps."""
    if t <= cap:
        return t
    g = cap - window + 1
    return t - g * (-(-(t - cap) // g))


def window_reading(local_window_size: int) -> int | None:
    """How many keys up to and including the query's own a window lets it see (None: no window).
    R3: W > 0 is W keys including the current one. R4: 0 is a window too (only -1 is "unused"):
    the current key only, i.e. one key. Negative values are the "unused" sentinel."""
    if local_window_size < 0:
        return None
    return max(local_window_size, 1)


def first_prompt_positions(position_ids: np.ndarray, b: int, q_valid: int) -> np.ndarray:
    """R6 on a first prompt: "the kernel uses only the first element" — position_ids[0, 0], then
    consecutive, for every batch entry."""
    return int(np.asarray(position_ids).reshape(-1)[0]) + np.arange(q_valid, dtype=np.int64)


def gqa(query, key, value, past_key, past_value, seqlens_k, total_sequence_length, cos_cache, sin_cache,
        position_ids, attention_bias, head_sink, *, num_heads, kv_num_heads, scale=None, softcap=0.0,
        local_window_size=-1, do_rotary=0, rotary_interleaved=0, smooth_softmax=-1, causal=1, qk_output=0,
        query_seqlens=None, q_norm=None, k_norm=None, sliding_window_cache=0, new_rows_hook=None, keep_f64=False):
    f64 = np.float64
    low_precision = query.dtype not in (np.dtype(np.float32), np.dtype(np.float64))
    q_in = query.astype(f64)
    b_sz, s_len = q_in.shape[:2]
    n, nkv = num_heads, kv_num_heads
    if key is None:  # packed QKV (R1)
        h = q_in.shape[2] // (n + 2 * nkv)
        q_all = q_in[..., : n * h]
        k_all = q_in[..., n * h: (n + nkv) * h]
        v_all = q_in[..., (n + nkv) * h:]
    else:
        h = q_in.shape[2] // n
        q_all, k_all, v_all = q_in, key.astype(f64), value.astype(f64)
    q_all = q_all.reshape(b_sz, s_len, n, h)
    k_all = k_all.reshape(b_sz, -1, nkv, h)
    kv_from_past = k_all.shape[1] == 0 < s_len  # R18: a KV-shared layer brings no new rows
    v_all = v_all.reshape(b_sz, -1, nkv, h)
    total = int(np.asarray(total_sequence_length).reshape(-1)[0])
    seqlens = np.asarray(seqlens_k).reshape(-1).astype(np.int64)  # shape (B) or legacy (B, 1)
    past_len = 0 if past_key is None else past_key.shape[2]
    shared = past_key is not None and past_len >= total  # R2: one max-length buffer
    cap = past_len if shared else past_len + s_len
    if sliding_window_cache:
        cap = past_len
    present_k = np.zeros((b_sz, nkv, cap, h), f64)
    present_v = np.zeros((b_sz, nkv, cap, h), f64)
    out = np.zeros((b_sz, s_len, n, h), f64)
    scale = float(scale) if scale else 1.0 / np.sqrt(h)
    qk = np.zeros((b_sz, n, s_len, total), f64) if qk_output else None
    group = n // nkv
    window = window_reading(int(local_window_size))
    cos = None if cos_cache is None else cos_cache.astype(f64)
    sin = None if sin_cache is None else sin_cache.astype(f64)
    q_valids = [min(s_len, int(seqlens[b]) + 1) if query_seqlens is None else int(np.asarray(query_seqlens).reshape(-1)[b])
                for b in range(b_sz)]
    # R6: a first prompt is a step with nothing cached before it in any entry (P = 0 everywhere)
    bias = None if attention_bias is None else attention_bias.astype(f64)
    first_prompt = not kv_from_past and all(int(seqlens[b]) + 1 == q_valids[b] for b in range(b_sz))
    for b in range(b_sz):
        t = int(seqlens[b]) + 1
        q_valid = min(s_len, t) if query_seqlens is None else int(np.asarray(query_seqlens).reshape(-1)[b])
        p = t - q_valid
        cached = t if kv_from_past else p  # rows the past must already hold
        if past_key is not None and cached > past_len and not sliding_window_cache:
            raise ValueError(f"batch {b}: seqlens_k implies {cached} cached tokens but past_key holds {past_len}")
        qb, kb, vb = q_all[b, :q_valid], k_all[b, :q_valid], v_all[b, :q_valid]
        if q_norm is not None:  # R10: per-head RMS norm of the new Q and K rows, before rotary
            qb = _rms(qb, *q_norm)
            kb = _rms(kb, *k_norm)
        if do_rotary:
            if position_ids is not None and first_prompt:  # R6
                pos = first_prompt_positions(position_ids, b, q_valid)
            elif position_ids is not None:
                pos = np.asarray(position_ids)[b, :q_valid].astype(np.int64)
            else:
                pos = p + np.arange(q_valid)
            qb = _rope(qb, pos, cos, sin, bool(rotary_interleaved))
            if not kv_from_past:
                kb = _rope(kb, pos, cos, sin, bool(rotary_interleaved))
        if low_precision and (do_rotary or q_norm is not None):  # R17: materialised in T
            qb, kb = qb.astype(query.dtype).astype(f64), kb.astype(query.dtype).astype(f64)
        if new_rows_hook is not None:  # R16: a quantised cache stores (and attention reads) q * scale
            kb, vb = new_rows_hook(kb, vb)
        if sliding_window_cache:  # R12: resident rows of the past, then the new rows
            lp = resident(p, cap, int(local_window_size))
            seq_k = np.concatenate([past_key[b, :, :lp].astype(f64), np.transpose(kb, (1, 0, 2))], axis=1)
            seq_v = np.concatenate([past_value[b, :, :lp].astype(f64), np.transpose(vb, (1, 0, 2))], axis=1)
            keys = np.arange(p - lp, t)
            lt = resident(t, cap, int(local_window_size))
            present_k[b, :, :lt] = seq_k[:, len(keys) - lt:]
            present_v[b, :, :lt] = seq_v[:, len(keys) - lt:]
        else:
            if cached:
                present_k[b, :, :cached] = past_key[b, :, :cached].astype(f64)
                present_v[b, :, :cached] = past_value[b, :, :cached].astype(f64)
            if not kv_from_past:
                present_k[b, :, p:t] = np.transpose(kb, (1, 0, 2))
                present_v[b, :, p:t] = np.transpose(vb, (1, 0, 2))
            keys = np.arange(t)
            seq_k, seq_v = present_k[b, :, :t], present_v[b, :, :t]
        # one head at a time, every valid query row at once (a row per query position)
        qpos = p + np.arange(q_valid)
        allowed = np.ones((q_valid, len(keys)), bool)
        if causal:
            allowed &= keys[None, :] <= qpos[:, None]
        if window is not None:
            allowed &= keys[None, :] > (qpos - window)[:, None]
        for hq in range(n):
            hk = hq // group
            kk, vv = seq_k[hk], seq_v[hk]
            scores = (qb[:, hq] @ kk.T) * scale
            if softcap and softcap > 0:  # R5: scale, softcap, then bias and mask
                scores = softcap * np.tanh(scores / softcap)
            if qk_output == 1:
                qk[b, hq][:q_valid, keys] = scores
            if bias is not None:
                scores = scores + bias[min(b, bias.shape[0] - 1), min(hq, bias.shape[1] - 1)][:q_valid][:, keys]
            z = np.where(allowed, scores, -np.inf)
            sink = None
            if head_sink is not None:  # R8
                sink = float(head_sink.astype(f64)[hq])
            elif smooth_softmax == 1:
                sink = 0.0
            m = z.max(axis=1, keepdims=True)
            if sink is not None:
                m = np.maximum(m, sink)
            with np.errstate(invalid="ignore"):  # a row with every key masked: -inf - -inf
                e = np.where(allowed, np.exp(z - m), 0.0)
            den = e.sum(axis=1, keepdims=True) + (0.0 if sink is None else np.exp(sink - m))
            with np.errstate(invalid="ignore", divide="ignore"):
                prob = e / den
            out[b, :q_valid, hq] = prob @ vv
            if qk_output == 2:
                qk[b, hq][:q_valid, keys] = prob
    dt = query.dtype
    if keep_f64:
        return out.reshape(b_sz, s_len, n * h).astype(dt), present_k, present_v, qk
    outs = [out.reshape(b_sz, s_len, n * h).astype(dt), present_k.astype(dt), present_v.astype(dt)]
    if qk_output:
        outs.append(qk.astype(dt))
    return tuple(outs)


class GroupQueryAttention(OpRun):
    op_domain = "com.microsoft"

    def _run(self, query, key=None, value=None, past_key=None, past_value=None, seqlens_k=None,
             total_sequence_length=None, cos_cache=None, sin_cache=None, position_ids=None, attention_bias=None,
             head_sink=None, k_scale=None, v_scale=None, q_norm_weight=None, k_norm_weight=None,
             query_seqlens=None, num_heads=None, kv_num_heads=None, scale=None, softcap=0.0,
             local_window_size=-1, do_rotary=0, rotary_interleaved=0, smooth_softmax=-1, causal=1, qk_output=0,
             sliding_window_cache=0, kv_cache_bit_width=None, k_quant_type="NONE", v_quant_type="NONE",
             qk_norm_epsilon=1e-6, q_norm_epsilon=None, k_norm_epsilon=None):
        unsupported = []
        quantised = past_key is not None and past_key.dtype.kind in "iu"
        if past_key is not None and past_key.dtype.name.startswith("float8"):
            unsupported.append("float8 KV cache")
        if quantised and (k_scale is None or v_scale is None):
            raise ValueError("a quantised past_key/past_value needs k_scale and v_scale")
        if sliding_window_cache and (local_window_size <= 0 or past_key is None or past_key.shape[2] < local_window_size):
            raise ValueError("sliding_window_cache=1 needs local_window_size > 0 and a past capacity >= it")
        if (q_norm_weight is None) != (k_norm_weight is None):
            raise ValueError("q_norm_weight and k_norm_weight must be provided together")
        if unsupported:
            raise NotImplementedError("onnx-compat's GQA reference does not implement " + ", ".join(unsupported))
        if quantised:
            return self._run_quantised(query, key, value, past_key, past_value, seqlens_k, total_sequence_length,
                                       cos_cache, sin_cache, position_ids, attention_bias, head_sink, k_scale, v_scale,
                                       query_seqlens, dict(num_heads=num_heads, kv_num_heads=kv_num_heads, scale=scale,
                                                           q_norm=None if q_norm_weight is None else
                                                           (q_norm_weight, q_norm_epsilon or qk_norm_epsilon),
                                                           k_norm=None if k_norm_weight is None else
                                                           (k_norm_weight, k_norm_epsilon or qk_norm_epsilon),
                                                           softcap=softcap, local_window_size=local_window_size,
                                                           do_rotary=do_rotary, rotary_interleaved=rotary_interleaved,
                                                           smooth_softmax=smooth_softmax, causal=causal,
                                                           qk_output=qk_output, sliding_window_cache=sliding_window_cache),
                                       4 if kv_cache_bit_width == 4 else 8)
        outs = gqa(query, key, value, past_key, past_value, seqlens_k, total_sequence_length, cos_cache, sin_cache,
                   position_ids, attention_bias, head_sink, num_heads=num_heads, kv_num_heads=kv_num_heads,
                   scale=scale, softcap=softcap, local_window_size=local_window_size, do_rotary=do_rotary,
                   rotary_interleaved=rotary_interleaved, smooth_softmax=smooth_softmax, causal=causal,
                   qk_output=qk_output, query_seqlens=query_seqlens, sliding_window_cache=sliding_window_cache,
                   q_norm=None if q_norm_weight is None else (q_norm_weight, q_norm_epsilon or qk_norm_epsilon),
                   k_norm=None if k_norm_weight is None else (k_norm_weight, k_norm_epsilon or qk_norm_epsilon))
        if not qk_output:
            outs = (*outs, np.zeros((0,), dtype=query.dtype))
        return outs


    def _run_quantised(self, query, key, value, past_key, past_value, seqlens_k, total_sequence_length, cos_cache,
                       sin_cache, position_ids, attention_bias, head_sink, k_scale, v_scale, query_seqlens, attrs, bits):
        nkv = attrs["kv_num_heads"]
        h = (past_key.shape[-1] * 2) if bits == 4 else past_key.shape[-1]
        ks, vs = _scale_rows(k_scale, nkv, h), _scale_rows(v_scale, nkv, h)
        kd = kv_dequant(past_key, k_scale, bits)
        vd = kv_dequant(past_value, v_scale, bits)

        def hook(kb, vb):  # rows laid out (Q, Nkv, H)
            kt, vt = np.transpose(kb, (1, 0, 2)), np.transpose(vb, (1, 0, 2))
            kq = kv_quant(kt, ks, bits) * ks
            vq = kv_quant(vt, vs, bits) * vs
            return np.transpose(kq, (1, 0, 2)), np.transpose(vq, (1, 0, 2))

        out, pk, pv, qk = gqa(query, key, value, kd, vd, seqlens_k, total_sequence_length, cos_cache, sin_cache,
                              position_ids, attention_bias, head_sink, query_seqlens=query_seqlens, new_rows_hook=hook,
                              keep_f64=True, **attrs)
        kq = kv_quant(pk, ks[None], bits)
        vq = kv_quant(pv, vs[None], bits)
        if bits == 4:
            kq, vq = pack_int4(kq), pack_int4(vq)
        else:
            kq, vq = kq.astype(past_key.dtype), vq.astype(past_value.dtype)
        outs = [out, kq, vq]
        if attrs.get("qk_output"):
            outs.append(qk.astype(query.dtype))
        else:
            outs.append(np.zeros((0,), dtype=query.dtype))
        return tuple(outs)


OPS = [GroupQueryAttention]
