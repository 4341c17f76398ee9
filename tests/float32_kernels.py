"""Float32 emulations of how real kernels evaluate transcendental functions, for tests that show a
tolerance profile passes correct implementations and fails semantic errors.

Every operation is rounded to float32 (numpy float32 arithmetic), and each function is a standard
approximation of the kind vectorised libraries use — not the correctly rounded libm value:

- `exp_poly`: Cody–Waite range reduction x = n·ln2 + r, |r| <= ln2/2, 2^n by exponent scaling and
  e^r by its degree-6 Taylor polynomial (truncation error < 2e-7 relative), Horner in float32.
- `tanh_rational`: tanh(x) ≈ x·P(u)/Q(u), u = x²/81, degrees 6/6, fitted here by linear least squares
  on [0, 9] (float64 fit, float32 evaluation), clamped to ±1 beyond |x| = 9 (where float32
  tanh is 1 within 3e-8). The same family as the 13/6 rational interpolants of Eigen and tract.
- `tanh_via_exp`: 1 − 2/(e^{2|x|} + 1) with `exp_poly`, sign restored.
- `erf_as`: Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7 in exact arithmetic).
- `sigmoid_exp`: 1 / (1 + e^{−z}) with `exp_poly`.
"""

from __future__ import annotations

import math

import numpy as np

F = np.float32


def exp_poly(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, F), F(-87.0), F(88.0))
    n = np.round(x * F(1.0 / math.log(2.0)))
    hi, lo = F(0.693359375), F(-2.12194440e-4)  # ln 2 split so n*hi is exact for |n| < 2^8
    r = (x - n * hi) - n * lo
    p = F(1.0 / 720)
    for c in (1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1.0, 1.0):
        p = p * r + F(c)
    return np.ldexp(p, n.astype(np.int32)).astype(F)


def _fit_tanh_rational(deg: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """P, Q in powers of u = x²/81 minimising |x·P(u) − tanh(x)·Q(u)| on [0, 9] (Chebyshev nodes,
    weighted to relative error), Q(0) = 1."""
    x = 4.5 + 4.5 * np.cos(np.linspace(0.0, np.pi, 6000))
    x = x[x > 1e-4]
    t, u = np.tanh(x), x * x / 81.0
    cols = [x * u**i for i in range(deg + 1)] + [-t * u**i for i in range(1, deg + 1)]
    a = np.stack(cols, axis=1) / t[:, None]
    coef, *_ = np.linalg.lstsq(a, t / t, rcond=None)
    return coef[: deg + 1], np.concatenate([[1.0], coef[deg + 1:]])


_P, _Q = _fit_tanh_rational()


def tanh_rational(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, F)
    xc = np.clip(x, F(-9.0), F(9.0))
    s = xc * xc * F(1.0 / 81.0)
    p, q = F(_P[-1]), F(_Q[-1])
    for c in _P[-2::-1]:
        p = p * s + F(c)
    for c in _Q[-2::-1]:
        q = q * s + F(c)
    return np.clip(xc * p / q, F(-1.0), F(1.0)).astype(F)


def tanh_via_exp(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, F)
    e = exp_poly(F(2.0) * np.abs(x))
    return (np.sign(x) * (F(1.0) - F(2.0) / (e + F(1.0)))).astype(F)


def erf_as(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, F)
    a = np.abs(x)
    t = F(1.0) / (F(1.0) + F(0.3275911) * a)
    poly = F(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly = poly * t + F(c)
    return (np.sign(x) * (F(1.0) - poly * t * exp_poly(-a * a))).astype(F)


def sigmoid_exp(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, F)
    return (F(1.0) / (F(1.0) + exp_poly(-z))).astype(F)


# ---- the GELU family in float32, correct and broken -------------------------------------------


def gelu_erf(x, erf=erf_as):
    x = np.asarray(x, F)
    return (F(0.5) * x * (F(1.0) + erf(x * F(1.0 / math.sqrt(2.0))))).astype(F)


def gelu_tanh(x, tanh=tanh_rational, c1=0.797885, c2=0.035677):
    """FastGelu's text: 0.5x(1 + tanh(0.797885x + 0.035677x³))."""
    x = np.asarray(x, F)
    return (F(0.5) * x * (F(1.0) + tanh(F(c1) * x + F(c2) * x * x * x))).astype(F)


def quick_gelu(x, alpha=1.702, sigmoid=sigmoid_exp):
    x = np.asarray(x, F)
    return (x * sigmoid(F(alpha) * x)).astype(F)
