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

from harness.families import Family, Row
from harness.refops import gqa as ref_gqa

from .build import build, make_case
from .grid import cases, scenarios
from .scenario import LAYOUTS, Scenario

__all__ = ["FAMILY", "LAYOUTS", "Scenario", "build", "cases", "make_case", "scenarios"]

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
        "gqa_symbolic_dims": "GQA single steps whose graph names the sequence, past and present lengths (S, P, C, T), "
                             "as real exports declare them, beside the same steps with every dim static",
        "gqa_long": "GQA at real prompt lengths: S or past in the tens to hundreds, windows up to 512, "
                    "uniform shared-buffer decodes (issue 22)",
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
        Row("Gemma-4 variable head size (sliding 256 / full 512)",
            "the ORT-GenAI request for Gemma-4 (PLE, variable head dims, KV sharing)", k="gemma4g or gemma4s", m="gqa"),
        Row("GQA sliding head 256 (Gemma-4 sliding layers)",
            "the ORT-GenAI request for Gemma-4: sliding (256) vs full attention (512)", k="gemma4s", m="gqa"),
        Row("GQA decode on a concatenating past, batch 1 (present = past + new rows)",
            "the optimum / transformers exports' cache form; OpenVINO 2026.4 writes the new rows past the end "
            "of a past-sized buffer (issue 21)", k="b1", m="gqa_decode and not gqa_shared_buffer "
            "and not gqa_sliding_cache"),
        Row("Static KV cache buffer (shared past/present)",
            "the hand-built Gemma export with a static KV cache and a prefill/decode split", m="gqa_shared_buffer"),
    ],
)
