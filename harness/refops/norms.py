"""SimplifiedLayerNormalization (default domain, as ORT registers it) and
com.microsoft.SkipSimplifiedLayerNormalization.

Schema text relied on:
- SimplifiedLayerNormalization: "axis: The first normalization dimension: normalization will
  be performed along dimensions axis : rank(inputs)"; epsilon default 1e-5; outputs Y and
  optional inv_std_var ("Saved inverse standard variance"). "Simplified" = RMS norm: no mean
  is subtracted: Y = X / sqrt(mean(X^2) + epsilon) * scale.
- SkipSimplifiedLayerNormalization: input, skip, gamma, optional bias; epsilon default 1e-12;
  outputs output, optional mean, optional inv_std_var, optional input_skip_bias_sum: "Sum of
  the input and skip inputs (and bias if it exists)".

Readings chosen where the text is silent:
- inv_std_var has the input's shape with the normalised axes set to 1 (as LayerNormalization-17).
- SkipSimplified's `mean` output: an RMS norm has no mean; the schema keeps the output for
  training. It is left unspecified (returned as zeros, never compared).
- input_skip_bias_sum includes the bias, as the schema says. (tract's source notes ORT >= 1.19
  excludes it: if a backend does, the matrix shows it as a finding on that output.)
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun


def rms_normalize(x: np.ndarray, scale: np.ndarray, axis: int, epsilon: float):
    x64 = x.astype(np.float64)
    axis = axis % x.ndim
    axes = tuple(range(axis, x.ndim))
    ms = np.mean(x64 * x64, axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(ms + float(epsilon))
    y = x64 * inv * scale.astype(np.float64)
    return y, inv


class SimplifiedLayerNormalization(OpRun):
    op_domain = ""

    def _run(self, X, scale, axis=-1, epsilon=1e-5, stash_type=1):
        y, inv = rms_normalize(X, scale, axis, epsilon)
        return y.astype(scale.dtype), inv.astype(np.float32)


class SkipSimplifiedLayerNormalization(OpRun):
    op_domain = "com.microsoft"

    def _run(self, input, skip, gamma, bias=None, epsilon=1e-12):  # noqa: A002 - schema name
        s = input.astype(np.float64) + skip.astype(np.float64)
        if bias is not None:
            s = s + bias.astype(np.float64)
        y, inv = rms_normalize(s, gamma, -1, epsilon)
        mean = np.zeros_like(inv)
        return y.astype(input.dtype), mean.astype(np.float32), inv.astype(np.float32), s.astype(input.dtype)


OPS = [SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization]
