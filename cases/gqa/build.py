"""Building a case: draw the inputs, run the oracle step by step, carry the readings the text also allows."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np

from harness import readings as R
from harness.case import Built, Case, dtype_name
from harness.data import normal, rope_cache, up
from harness.tolerances import for_dtype

from .model import gqa_model
from .oracle import _cache_bytes, masks_for, oracle_step, oracle_step_kvq, oracle_step_sliding, resident_by_simulation, unpack_nibbles
from .scenario import Scenario


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


def position_grid(sc: Scenario, past: list[int], s: int) -> np.ndarray:
    """(B, S) position_ids of one step: P_b + j, or one of the R6 forms (pos_form)."""
    b = len(past)
    if sc.pos_form == "rowoffset":
        return np.array([[past[i] + j + 4 * (i + 1) for j in range(s)] for i in range(b)], np.int64)
    if sc.pos_form == "gaps":
        return np.array([[past[i] + 2 * j + i for j in range(s)] for i in range(b)], np.int64)
    return np.array([[past[i] + j for j in range(s)] for i in range(b)], np.int64)


def first_element_positions(pos: np.ndarray, which: str) -> np.ndarray:
    """R6's readings of "uses only the first element" on a first prompt: the tensor's first id for
    every row (chosen), or the row's first id (then consecutive); "every" is the reading the
    sentence rules out (each id as given)."""
    if which == "every":
        return pos
    s = pos.shape[1]
    start = pos[:, :1] if which == "row" else np.full((pos.shape[0], 1), pos[0, 0])
    return start + np.arange(s, dtype=np.int64)[None, :]


def oracle_window(local_window_size: int) -> int | None:
    """The oracle's window: how many keys up to and including the query's own are visible. R3:
    W > 0 counts W keys; R4: 0 (not the "unused" -1) is the current key only; -1: no window."""
    return None if local_window_size < 0 else 1 if local_window_size == 0 else local_window_size


def build(sc: Scenario, rng: np.random.Generator, window_override: int | None | str = "default",
          nibble_offset: int = 8, pos_reading: str = "tensor", model_only: bool = False) -> Built | onnx.ModelProto:
    """The case: feeds, the oracle's outputs per step, masks and readings; with `model_only`, just
    the model, before any oracle step runs (what coverage reads: the graph's shapes and types do
    not depend on the drawn values)."""
    n, nkv, h = sc.heads
    b = sc.batch
    window = oracle_window(sc.window) if window_override == "default" else window_override
    steps = [(list(sc.past) if sc.past else [0] * b, list(sc.qlen), sc.s)]
    if sc.phase == "multistep":
        for _ in range(sc.steps):
            prev_past, prev_q, _ = steps[-1]
            steps.append(([prev_past[i] + prev_q[i] for i in range(b)], [1] * b, 1))
    t_final = max(p + q for p, q in zip(*steps[-1][:2]))
    max_pos = t_final + 8 if not sc.pos_form else 2 * t_final + 4 * b + 8
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
        pos = position_grid(sc, past, s)
        if sc.rotary:
            feeds["cos_cache"], feeds["sin_cache"] = cos, sin
        if sc.position_ids:
            feeds["position_ids"] = pos
        if si == 0 and not sc.past:  # R6: on the first prompt the kernel uses only the first element
            pos = first_element_positions(pos, pos_reading)
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
            qk_eps, q_eps, k_eps = sc.norm_epsilons  # the schema: q/k_norm_epsilon override qk_norm_epsilon
            qk_eps = 1e-6 if qk_eps is None else qk_eps
            eps = (qk_eps if q_eps is None else q_eps, qk_eps if k_eps is None else k_eps)
            norms = ((normal(rng, (h,), sc.dtype, 1.0, 0.3), normal(rng, (h,), sc.dtype, 1.0, 0.3)), eps)
            feeds["q_norm_weight"], feeds["k_norm_weight"] = norms[0]
        cap = cur_len if (with_past and (cur_len >= tmax or sc.buffer == "sliding")) else cur_len + s
        ck = np.zeros((b, nkv, cap, h))
        cv = np.zeros((b, nkv, cap, h))
        if cache_k is not None:
            ck[:, :, :cur_len] = cache_k
            cv[:, :, :cur_len] = cache_v
        if model_only:
            return gqa_model(sc, {k2: v2 for k2, v2 in feeds.items() if v2 is not None},
                             cap if sc.phase != "multistep" else "present_sequence_length",
                             tmax if sc.phase != "multistep" else "total_sequence_length")
        if sc.kvq:
            exp = oracle_step_kvq(sc_step, q, k, v, ck, cv, past, qlens, cap, cos, sin, pos, window, k_scale, v_scale,
                                  norms=norms)
            alt = oracle_step_kvq(sc_step, q, k, v, ck, cv, past, qlens, cap, cos, sin, pos, window, k_scale, v_scale,
                                  float_new_rows=True, norms=norms)
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


def _model_only(sc: Scenario):
    return build(sc, np.random.default_rng(0), model_only=True)


def make_case(sc: Scenario) -> Case:
    def make(rng: np.random.Generator) -> Built:
        state = rng.bit_generator.state
        built = build(sc, rng)
        # R3/R4: the other readings of a window, on the same inputs. For W > 0: W preceding
        # keys plus the current one (ONNX Attention-25 left_window_size, ORT before PR
        # #25927). For W = 0: no key at all (all-masked rows -> 0); "no window" is ruled out
        # ("-1 meaning unused"), carried so a backend taking it is named in its mismatch.
        readings, ruled_out = [], []
        if sc.window > 0:
            readings = [(R.WINDOW_W_PLUS_CURRENT, sc.window + 1)]
        elif sc.window == 0:
            readings, ruled_out = [(R.WINDOW0_NO_KEY, 0)], [(R.WINDOW0_UNUSED, None)]
        for name, override in readings + ruled_out:
            rng2 = np.random.default_rng()
            rng2.bit_generator.state = state
            target = built.alternates if (name, override) in readings else built.excluded
            target[name] = build(sc, rng2, window_override=override).expected
        if sc.kvq and sc.kv_bits == 4:  # R14: the other reading of a 4-bit cache byte
            rng2 = np.random.default_rng()
            rng2.bit_generator.state = state
            built.alternates[R.INT4_SIGNED] = build(sc, rng2, nibble_offset=0).expected
        if sc.pos_form and sc.position_ids and sc.rotary and not sc.past:  # R6: "uses only the first element"
            # carried only where it changes the answer: a reading that gives the chosen (or an
            # allowed) reading's outputs is that reading, as far as any backend can tell
            seen = [built.expected]
            for name, which in [(R.POS_FIRST_OF_ROW, "row"), (R.POS_EVERY_ELEMENT, "every")]:
                rng2 = np.random.default_rng()
                rng2.bit_generator.state = state
                alt = build(sc, rng2, pos_reading=which).expected
                if all(any(not np.array_equal(a["output"], e["output"]) for a, e in zip(alt, prev)) for prev in seen):
                    (built.excluded if R.is_excluded(name) else built.alternates)[name] = alt
                    seen.append(alt)
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
                refusals=refusals, model_only=partial(_model_only, sc))
