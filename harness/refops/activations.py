"""com.microsoft Gelu, BiasGelu, FastGelu and QuickGelu (BERT/GPT-2/CLIP-style exports).

Schema text relied on (onnxruntime 1.32.0 `get_all_operator_schema()`; docs/activations.md):
- Gelu: "Gaussian Error Linear Unit. ... The GELU nonlinearity is the expected transformation
  of a stochastic regularizer which randomly applies the identity or zero map to a neuron's
  input." That expectation is x * P(Z <= x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
  The text gives no formula, so the tanh approximation is carried as an alternate (A1).
- BiasGelu: "It takes the sum of input A and bias input B as the input of Gelu activation."
  B is "a 1D tensor": broadcast on the last axis.
- FastGelu: "Y=0.5*X*(1+tanh(0.797885*X+0.035677*X*X*X)) with an optional input of bias that
  will be added to X before GELU." The constants are used as printed (they are sqrt(2/pi) and
  0.044715*sqrt(2/pi) rounded to 6 digits; the exact constants move Y by < 5e-7 relative,
  inside every profile, so the two are not told apart).
- QuickGelu: "Compute x * Sigmoid(alpha * x)."; alpha's default is 1.702 (schema default).

Maths in float64; outputs rounded once to the input type.
"""

from __future__ import annotations

import math

import numpy as np
from onnx.reference.op_run import OpRun

_erf = np.vectorize(math.erf, otypes=[np.float64])

FAST_C1 = 0.797885
FAST_C2 = 0.035677


def gelu_erf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_tanh(x: np.ndarray, c1: float = FAST_C1, c2: float = FAST_C2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.tanh(c1 * x + c2 * x * x * x))


def quick_gelu(x: np.ndarray, alpha: float = 1.702) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / (1.0 + np.exp(-float(alpha) * x))


def fast_gelu(x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return gelu_tanh(x if bias is None else x + np.asarray(bias, dtype=np.float64))


class Gelu(OpRun):
    op_domain = "com.microsoft"

    # onnx.reference fills in the attributes of the ai.onnx op of the same name (Gelu-20's
    # `approximate`); the com.microsoft op has none, so it is accepted and ignored
    def _run(self, X, approximate=None):
        return (gelu_erf(X).astype(X.dtype),)


class BiasGelu(OpRun):
    op_domain = "com.microsoft"

    def _run(self, A, B):
        return (gelu_erf(A.astype(np.float64) + B.astype(np.float64)).astype(A.dtype),)


class FastGelu(OpRun):
    op_domain = "com.microsoft"

    def _run(self, X, bias=None):
        return (fast_gelu(X, bias).astype(X.dtype),)


class QuickGelu(OpRun):
    op_domain = "com.microsoft"

    def _run(self, X, alpha=1.702):
        return (quick_gelu(X, alpha).astype(X.dtype),)


OPS = [Gelu, BiasGelu, FastGelu, QuickGelu]
