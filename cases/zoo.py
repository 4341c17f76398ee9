"""Zoo models as cases: one per shipped twin (zoo/twins/*/manifest.json), id zoo/<twin name>,
run by the teacher-forced decode loop and judged on logits at every step (docs/zoo.md).

Which zoo cases exist is the run's `--zoo` choice, passed down in ONNX_COMPAT_ZOO_MODE so
`--jobs` workers and pytest see the same set: twins (default), hub (zoo.yaml entries from the
hub cache, judged against `--oracle`), none.
"""

from __future__ import annotations

import os

from harness.families import Family
from harness.refops import matmul as ref_matmul
from harness.zoo import zoo_cases
from harness.zoo.cases import form_mark, forms

MODE_ENV = "ONNX_COMPAT_ZOO_MODE"

FAMILY = Family(reference_ops=ref_matmul.OPS,  # ORT-fused exports (transformers' ort_fusions) carry FusedMatMul
                marks={"zoo": "zoo models and their twins",
                       **{form_mark(f): f"zoo export form {f}" for f in sorted(forms())}})


def cases(grid: str):
    return zoo_cases(os.environ.get(MODE_ENV, "twins"))
