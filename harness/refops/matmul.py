"""com.microsoft.FusedMatMul, from ORT's schema text: "Matrix product that behaves like
numpy.matmul"; "alpha: Scalar multiplier for the product of the input tensors"; "transA/transB:
Whether A/B should be transposed on the last two dimensions before doing multiplication".
ORT's graph optimiser emits it (MatMul + Transpose/Mul fusions), so fused exports carry it.

transBatchA/transBatchB ("transposed on the 1st dimension and batch dimensions (dim-1 to
dim-rank-2)") admit more than one reading of which axes move where; the reference refuses them
rather than pick one (no export here uses them)."""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun


class FusedMatMul(OpRun):
    op_domain = "com.microsoft"

    def _run(self, a, b, alpha=1.0, transA=0, transB=0, transBatchA=0, transBatchB=0):
        if transBatchA or transBatchB:
            raise NotImplementedError("onnx-compat's FusedMatMul reference does not implement transBatchA/transBatchB")
        x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if transA:
            x = np.swapaxes(x, -1, -2)
        if transB:
            y = np.swapaxes(y, -1, -2)
        return ((float(alpha) * np.matmul(x, y)).astype(a.dtype),)


OPS = [FusedMatMul]
