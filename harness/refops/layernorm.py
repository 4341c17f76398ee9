"""com.microsoft.SkipLayerNormalization (BERT/GPT-2 exports: residual add fused with LayerNorm).

Schema text relied on (onnxruntime 1.32.0; docs/activations.md):
- "Skip and Layer Normalization Fusion"; inputs input (B, S, H), skip "(batch_size,
  sequence_length, hidden_size) or (1, sequence_length, hidden_size) or (sequence_length,
  hidden_size)", gamma (H), optional beta (H), optional bias (H); epsilon (default 1e-12).
- outputs: output, optional mean ("Saved mean"), optional inv_std_var ("Saved inverse standard
  variance"), optional input_skip_bias_sum: "Sum of the input and skip inputs (and bias if it
  exists)".

Readings: s = input + skip (+ bias); output = (s - mean(s)) / sqrt(var(s) + epsilon) * gamma
(+ beta), over the last axis, variance the population one (LayerNormalization's). mean and
inv_std_var have the input's shape with the last axis set to 1 (as LayerNormalization-17's
saved statistics; the text gives no shape).
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun


def skip_layer_norm(input, skip, gamma, beta=None, bias=None, epsilon=1e-12):  # noqa: A002 - schema name
    """(output, mean, inv_std_var, input_skip_bias_sum) in float64."""
    s = input.astype(np.float64) + skip.astype(np.float64)
    if bias is not None:
        s = s + bias.astype(np.float64)
    mean = s.mean(axis=-1, keepdims=True)
    var = ((s - mean) ** 2).mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt(var + float(epsilon))
    y = (s - mean) * inv * gamma.astype(np.float64)
    if beta is not None:
        y = y + beta.astype(np.float64)
    return y, mean, inv, s


class SkipLayerNormalization(OpRun):
    op_domain = "com.microsoft"

    def _run(self, input, skip, gamma, beta=None, bias=None, epsilon=1e-12):  # noqa: A002 - schema name
        y, mean, inv, s = skip_layer_norm(input, skip, gamma, beta, bias, epsilon)
        dt = input.dtype
        return y.astype(dt), mean.astype(np.float32), inv.astype(np.float32), s.astype(dt)


OPS = [SkipLayerNormalization]
