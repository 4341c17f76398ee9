"""A GQA case as data: the head layouts, and the Scenario whose axes name the case, its features and its marks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from harness.case import dtype_name


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


QKNORM_EPS = {"": (None, None, None), "qk": (0.5, None, None), "over": (1.0, 0.25, 0.0625)}


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
    #: position_ids forms beyond P + s (R6): "" contiguous | "rowoffset": each entry's ids shifted by
    #: its own offset (positions differ from cache rows) | "gaps": ids with gaps inside a row
    pos_form: str = ""
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
    qknorm_eps: str = ""  # "" default epsilons | "qk": qk_norm_epsilon set | "over": q/k_norm_epsilon override it
    kvq: str = ""  # quantised KV cache: int8-tensor | int8-channel | int4-tensor | int4-channel
    #: "" the graph declares every dim as the feeds have it | "symbolic": sequence, past and
    #: present lengths named (S, P, C, T), as real exports declare them (multistep always is)
    dims: str = ""
    dtype: Any = np.float32
    #: R17, float16/bfloat16 only (oracle only, not part of the id): "rounded" (chosen): the
    #: rotated/normalised Q and K are computed exactly and rounded once to the dtype; "q-unrounded":
    #: only K is (present_key stores it); "t-arithmetic": the rotation runs in the dtype's own
    #: arithmetic (each product and sum rounded, as RotaryEmbedding on T inputs computes)
    precision: str = "rounded"
    #: issue 22's length sweep (cases/gqa/lengths.py): carries the mark gqa_long; not part of the id
    #: or the features: a sweep scenario equal to an older one is that one, marked gqa_long (grid.py)
    long: bool = False

    @property
    def norm_epsilons(self) -> tuple[float | None, float | None, float | None]:
        """(qk_norm_epsilon, q_norm_epsilon, k_norm_epsilon) as the node sets them (None: not set).
        Large values on purpose: on inputs of unit RMS they move the norm by 10-40%."""
        return QKNORM_EPS[self.qknorm_eps]

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

    @property
    def ragged(self) -> bool:
        """Batch entries with different query lengths or pasts (positions differ per entry)."""
        return len(set(self.qlen)) > 1 or bool(self.past and len(set(self.past)) > 1)

    def case_id(self) -> str:
        n, nkv, h = self.heads
        words = [a.word(self) for a in AXES]
        buffer = [w for a, w in zip(AXES, words) if w and a.group == "buffer"]
        options = [w for a, w in zip(AXES, words) if w and a.group == "option"] or ["plain"]
        parts = [self.phase, *buffer, *options] + (["ragged"] if self.ragged else [])
        shape = f"b{self.batch}-{self.layout}-h{n}kv{nkv}-d{h}"
        shape += f"-s{self.s}x{self.steps}" if self.phase == "multistep" else f"-s{self.s}"
        if self.past:
            shape += "-past" + "_".join(map(str, self.past))
        return f"gqa/{'-'.join(parts)}-{shape}-{dtype_name(self.dtype)}"

    def features(self) -> dict[str, Any]:
        n, nkv, h = self.heads
        out = {"phase": self.phase, "layout": self.layout, "num_heads": n, "kv_num_heads": nkv, "head_size": h,
               "batch": self.batch, "seq": self.s, "past": list(self.past) or 0, "qlen": list(self.qlen),
               "ragged": int(self.ragged), "steps": self.steps + 1 if self.phase == "multistep" else 1,
               "dtype": dtype_name(self.dtype)}
        for a in AXES:
            out.update(a.features(self))
        return out

    def marks(self) -> tuple[str, ...]:
        m = ["gqa", "attention"]
        m.append("gqa_prefill" if self.phase in ("prefill", "prefill-padded") else "gqa_decode")
        if self.phase == "multistep":
            m += ["gqa_multistep", "gqa_prefill"]
        m += [a.mark for a in AXES if a.mark and a.word(self)]
        if self.ragged:
            m.append("gqa_ragged")
        dt = dtype_name(self.dtype)
        if dt in ("fp16", "bf16"):
            m.append(dt)
        if self.long:
            m.append("gqa_long")
        if self.layout == "gemma3" and self.rotary and self.past:
            m.append("seed_gap")
        return tuple(dict.fromkeys(m))


@dataclass(frozen=True)
class Axis:
    """One optional feature of a scenario, declared once: the word it adds to the case id when it
    is not at its default (None when it is), the features it reports, and the mark it carries
    when its word is present. `group` orders the words: buffer kinds, then options."""

    word: Callable[[Scenario], str | None]
    features: Callable[[Scenario], dict[str, Any]]
    mark: str | None = None
    group: str = "option"


def _when(cond: bool, word: str) -> str | None:
    return word if cond else None


AXES: list[Axis] = [
    Axis(lambda s: _when(s.buffer == "shared", f"shared{s.slack}"), lambda s: {"buffer": s.buffer},
         "gqa_shared_buffer", "buffer"),
    Axis(lambda s: _when(s.buffer == "sliding", f"slidingcache{s.slack}"), lambda s: {},
         "gqa_sliding_cache", "buffer"),
    Axis(lambda s: {1: "rotary", 2: "rotaryinter"}.get(s.rotary),
         lambda s: {"do_rotary": int(bool(s.rotary)), "rotary_interleaved": int(s.rotary == 2)}, "gqa_rotary"),
    Axis(lambda s: _when(s.position_ids, "posids"), lambda s: {"position_ids": s.position_ids}, "gqa_position_ids"),
    Axis(lambda s: _when(bool(s.pos_form), s.pos_form), lambda s: {"position_ids_form": s.pos_form} if s.pos_form else {}),
    Axis(lambda s: _when(s.window >= 0, f"win{s.window}"), lambda s: {"local_window_size": s.window}, "gqa_window"),
    Axis(lambda s: _when(s.softcap, f"softcap{s.softcap:g}"), lambda s: {"softcap": s.softcap}, "gqa_softcap"),
    Axis(lambda s: _when(s.sink, f"sink{s.sink}"), lambda s: {"sink": s.sink or "none"}, "gqa_sink"),
    Axis(lambda s: _when(s.bias, "bias"), lambda s: {"attention_bias": s.bias}, "gqa_bias"),
    Axis(lambda s: _when(s.scale, f"scale{s.scale:g}"), lambda s: {"scale": s.scale or "default"}),
    Axis(lambda s: _when(s.packed, "packed"), lambda s: {"packed_qkv": s.packed}, "gqa_packed"),
    Axis(lambda s: _when(not s.causal, "bidir"), lambda s: {"causal": s.causal}),
    Axis(lambda s: _when(s.qk_output, f"qk{s.qk_output}"), lambda s: {"qk_output": s.qk_output}, "gqa_qk_output"),
    Axis(lambda s: _when(s.qseqlens, "qseqlens"), lambda s: {"query_seqlens": s.qseqlens}, "gqa_query_seqlens"),
    Axis(lambda s: _when(s.qknorm, "qknorm"), lambda s: {"qk_norm": s.qknorm}, "gqa_qk_norm"),
    Axis(lambda s: _when(bool(s.qknorm_eps), f"qkeps{s.qknorm_eps}"),
         lambda s: {"qk_norm_epsilons": s.qknorm_eps} if s.qknorm_eps else {}),
    Axis(lambda s: _when(bool(s.kvq), f"kv{s.kvq}"), lambda s: {"kv_quant": s.kvq or "none"}, "gqa_kv_quant"),
    Axis(lambda s: _when(s.dims == "symbolic", "symdims"), lambda s: {"dims": s.dims} if s.dims else {},
         "gqa_symbolic_dims"),
]
