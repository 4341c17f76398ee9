"""The quick and full grids of scenarios."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from harness.case import Case

from .build import make_case
from .lengths import length_scenarios
from .scenario import LAYOUTS, Scenario


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
    """Rows the source reports name explicitly."""
    f16 = np.float16
    out = [
        # the tract report on a Gemma-3 GenAI export (model_q4's GQA node): do_rotary, past, seqlens_k, window 512
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
        Scenario("qwen2", "decode", past=(9,), qlen=(1,), qknorm=1, rotary=1, kvq="int8-channel"),
        # position_ids beyond P + s (R6): per-entry offsets and gaps, on a first prompt (where the
        # "first element" sentence applies: alternates) and on a past (where it does not)
        Scenario("edge1", "prefill", qlen=(5, 5), rotary=1, position_ids=1, pos_form="gaps"),
        Scenario("edge1", "prefill", qlen=(5, 5), rotary=1, position_ids=1, pos_form="rowoffset"),
        Scenario("qwen2", "chunk", past=(5,), qlen=(3,), rotary=1, position_ids=1, pos_form="gaps"),
        Scenario("edge1", "decode", past=(3, 8), qlen=(1, 1), rotary=1, position_ids=1, pos_form="rowoffset"),
        # the norm epsilons: qk_norm_epsilon alone, and q/k_norm_epsilon overriding it
        Scenario("edge1", "decode", past=(3, 8), qlen=(1, 1), qknorm=1, qknorm_eps="qk"),
        Scenario("edge1", "decode", past=(3, 8), qlen=(1, 1), qknorm=1, qknorm_eps="over", rotary=1),
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


def _symbolic_dims_variants(scs: list[Scenario], full: bool) -> list[Scenario]:
    """The single steps on a concatenating past at batch 1, fp32, again with the sequence, past and
    present lengths named as real exports declare them: a runtime that compiles for static dims
    (OpenVINO) can fail the static graph alone, and these cells say whether a real export would.
    One per shape (layout, phase, past, query length): the static dims are the question, not the
    options; the quick grid keeps the first three shapes."""
    shapes: dict[tuple, Scenario] = {}
    for sc in scs:
        if (sc.phase in ("decode", "chunk") and sc.buffer == "concat" and sc.batch == 1
                and np.dtype(sc.dtype) == np.float32 and not sc.dims):
            shapes.setdefault((sc.layout, sc.phase, sc.past, sc.qlen, sc.s), replace(sc, dims="symbolic"))
    out = list(shapes.values())
    return out if full else out[:3]


def scenarios(grid_name: str) -> list[Scenario]:
    full = grid_name == "full"
    scs = _dtype_variants(_base_scenarios(full), full) + _named_scenarios(full) + length_scenarios(full)
    scs += _symbolic_dims_variants(scs, full)
    at: dict[str, int] = {}
    out: list[Scenario] = []
    for sc in scs:
        cid = sc.case_id()
        if cid not in at:
            at[cid] = len(out)
            out.append(sc)
        elif sc.long and not out[at[cid]].long:  # the same case, also one of the length sweep's: its mark stays
            out[at[cid]] = replace(out[at[cid]], long=True)
    return out


def cases(grid_name: str = "quick") -> list[Case]:
    return [make_case(sc) for sc in scenarios(grid_name)]
