"""Zoo models as cases: one per shipped twin (zoo/twins/*/manifest.json), id zoo/<twin name>,
run by the teacher-forced decode loop and judged on logits at every step (docs/zoo.md).

Which zoo cases exist is the run's `--zoo` choice, passed down in ONNX_COMPAT_ZOO_MODE so
`--jobs` workers and pytest see the same set: twins (default), hub (zoo.yaml entries from the
hub cache, judged against `--oracle`), none.
"""

from __future__ import annotations

import os

from harness.families import Family, Row
from harness.refops import matmul as ref_matmul
from harness.zoo import zoo_cases
from harness.zoo.cases import form_mark, forms

MODE_ENV = "ONNX_COMPAT_ZOO_MODE"

_FUSED_ROTARY = "zoo_ortgenai_gqa_fused_rotary or zoo_ortgenai_gqa_fused_rotary_windowed or zoo_mobius_gemma4_gqa"
_GQA_OTHER = ("zoo_ortgenai_gqa_separate_rotary or zoo_transformers_export_ort_cpu_fused or "
              "zoo_transformers_export_multi_token_decode_ort_cpu_fused")
_GEMMA4_REQUEST = "the ORT-GenAI request for Gemma-4 (PLE, variable head dims, KV sharing)"
_PLE = "Gemma-4 per-layer inputs (PLE)"
_HEADS = "Gemma-4 variable head size (sliding 256 / full 512)"
_SHARED = "Gemma-4 KV caches shared across layers (15 of 35 in E2B)"

FAMILY = Family(reference_ops=ref_matmul.OPS,  # ORT-fused exports (transformers' ort_fusions) carry FusedMatMul
                marks={"zoo": "zoo models and their twins",
                       **{form_mark(f): f"zoo export form {f}" for f in sorted(forms())}},
                rows=[  # the same names as the op rows they merge with (harness/families.py)
                    Row("GQA do_rotary=1", "", m=_FUSED_ROTARY),
                    Row("GQA past KV (decode / chunk / multi-step)", "", m=f"{_FUSED_ROTARY} or {_GQA_OTHER}"),
                    Row("GatherBlockQuantized", "", k="zoo/gemma3-genai-current-q4"),
                    Row("MatMulNBits 4-bit, block 32", "", k="zoo/ and q4"),
                    Row(_PLE, _GEMMA4_REQUEST, k="zoo/gemma4"),
                    Row(_HEADS, _GEMMA4_REQUEST, k="zoo/gemma4"),
                    Row(_SHARED, _GEMMA4_REQUEST, k="zoo/gemma4"),
                    Row("Static KV cache with a prefill/decode split",
                        "the hand-built Gemma export with a static KV cache and a prefill/decode split",
                        m="zoo_statickv_irbuilt or zoo_statickv_torchexport"),
                ])


def cases(grid: str):
    return zoo_cases(os.environ.get(MODE_ENV, "twins"))
