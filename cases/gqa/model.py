"""The model under test: one GroupQueryAttention node wired as a Scenario says."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from harness.graph import MS, single_node_model

from .scenario import Scenario


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
    for name, eps in zip(("qk_norm_epsilon", "q_norm_epsilon", "k_norm_epsilon"), sc.norm_epsilons):
        if eps is not None:
            attrs[name] = eps
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
    if sc.phase == "multistep" or sc.dims == "symbolic":  # shapes change from step to step: name those dims
        symbolic = {"query": {1: "S"}, "key": {1: "S"}, "value": {1: "S"}, "position_ids": {1: "S"},
                    "past_key": {2: "P"}, "past_value": {2: "P"}, "attention_bias": {2: "S", 3: "T"},
                    "output": {1: "S"}, "present_key": {2: "C"}, "present_value": {2: "C"},
                    "output_qk": {2: "S", 3: "T"}}
        for vi in list(model.graph.input) + list(model.graph.output):
            for axis, name in symbolic.get(vi.name, {}).items():
                vi.type.tensor_type.shape.dim[axis].dim_param = name
    return model
