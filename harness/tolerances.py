"""Named tolerance profiles, by dtype and op class. Never by backend.

A cell passes when, on every compared element, |actual - expected| <= atol + rtol * |expected|
(NumPy's allclose rule) and, per output, NMSE = sum((a-b)^2) / sum(b^2) <= max_nmse.
The oracle is computed in float64 from the same (already rounded) inputs, so a bound only
has to cover the backend's own arithmetic: rounding of intermediates in the case's dtype,
a different summation order, and fast transcendental functions. A backend that needs more
than its profile allows has a finding, not a pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

FP32_EPS = 2.0**-23  # 1.19e-7
FP16_EPS = 2.0**-10  # 9.77e-4
BF16_EPS = 2.0**-7  # 7.81e-3


#: fp32-activation: the largest absolute error of a gate g in [0, 1] (erf/tanh/sigmoid) that a
#: standard float32 approximation makes (16 ulp of 1), and the largest |x| the grid draws
ACT_GATE_ERR = 16 * 2.0**-24  # 9.5e-7
ACT_MAX_ABS_X = 16.0


@dataclass(frozen=True)
class Tolerance:
    name: str
    atol: float
    rtol: float
    max_nmse: float
    reason: str
    #: bound for integer-typed outputs (a quantised KV cache), in quantisation steps; the NMSE
    #: bound does not apply to them
    int_atol: float = 0.0
    #: added to atol in units of the expected output's RMS (compare.effective_atol), for errors
    #: that scale with the data rather than with each element
    atol_rms: float = 0.0

    def as_record(self) -> dict:
        """The bounds as a cell records them: a fresh dict each call (a record is the caller's to
        change), copied from one made once per profile (every cell of every column asks)."""
        return dict(self._record)

    @functools.cached_property
    def _record(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "reason")}
        d["profile"] = self.name
        return d


QKV_REASON = (" Integer outputs (a quantised KV cache) may differ by one quantisation step where k/scale "
              "lands on a rounding tie: the text does not fix the rounding mode.")


def _p(name: str, atol: float, rtol: float, max_nmse: float, reason: str) -> Tolerance:
    if name.endswith("-attention"):
        return Tolerance(name, atol, rtol, max_nmse, reason + QKV_REASON, int_atol=1.0)
    return Tolerance(name, atol, rtol, max_nmse, reason)


PROFILES: dict[str, Tolerance] = {
    t.name: t
    for t in [
        _p("fp32-pointwise", 1e-6, 1e-5, 1e-10,
           "Rotary and other per-element maths: each output is a couple of products and one "
           "sum of float32 values of magnitude ~1-4, so a correct kernel is within a few ulp "
           "(rtol 1e-5 = ~80 ulp, atol 1e-6 for results that cancel to ~0)."),
        _p("fp32-activation", ACT_GATE_ERR * ACT_MAX_ABS_X, 1e-5, 1e-10,
           "GELU-family activations y = x*g(x), g in [0, 1] a gate built on erf, tanh or exp (Gelu, "
           "BiasGelu, FastGelu, QuickGelu). Kernels evaluate g with a standard float32 approximation "
           "(a rational tanh clamped at |u| = 9, exp by 2^n times a polynomial, erf by Abramowitz-Stegun "
           "7.1.26), whose error is bounded absolutely in g, not relatively in y: near y = 0 (x << 0, "
           "g -> 0) it is |x|*dg while |y| is ~0, so no rtol covers it. With |dg| <= 16 ulp of 1 "
           "(9.5e-7; the approximations emulated in tests/float32_kernels.py err by 0.9e-7-4.6e-7, tract "
           "0.23.9 by up to 4.5e-7) and |x| <= 16 (the grids draw N(0, 3^2) plus an N(0, 1) bias: max |x| is "
           "13.5 quick, 14.8 full), atol = 16 * 9.5e-7 = 1.5e-5; rtol 1e-5 for the product's rounding where g ~ 1. "
           "Semantic errors stay far outside: the erf form for the tanh form (or back) moves y by 4.7e-4, "
           "alpha 1.702 -> 1.7 by 3.0e-4, 0.044715 -> 0.04 by 2.8e-3, a dropped bias by > 1; each also "
           "fails NMSE 1e-10 (they give >= 7e-9; float noise gives ~1e-13)."),
        _p("fp16-activation", 1e-3, 2e-3, 1e-6,
           "float16 GELU-family outputs: rounding the output costs half an ulp (4.9e-4 relative) and one "
           "intermediate rounding doubles it (as fp16-pointwise); a float32 gate's error (<= 1.5e-5, "
           "fp32-activation) is 60x below that."),
        _p("fp32-reduction", 1e-5, 1e-4, 1e-9,
           "Norms: a mean of squares over up to 4096 float32 values, then rsqrt. Summation "
           "order and a fast rsqrt move the result by ~sqrt(n)*eps ~ 1e-5 relative; 1e-4 "
           "leaves a 10x margin, far below any semantic error (a dropped epsilon or a "
           "subtracted mean moves results by >1e-2)."),
        _p("fp32-layernorm", 1e-4, 1e-4, 1e-9,
           "LayerNorm (SkipLayerNormalization) subtracts a mean: a float32 sum of n <= 2048 values of "
           "magnitude |mean| <= ~6 (inputs with a large mean are in the grid on purpose), in any order, errs "
           "by ~sqrt(n)*eps*|mean|*few ~ 3e-5 on the mean; that error shifts every output by itself times "
           "inv_std*|gamma| (<= ~2), absolutely, so rtol does not cover outputs near zero (ORT CPU: max "
           "|d| 1.4e-5 at n = 2048). atol 1e-4 keeps a 3x margin; a dropped mean moves outputs by "
           "|mean|/std ~ 4, a wrong epsilon or variance by > 1e-2 relative."),
        _p("fp32-attention", 2e-5, 1e-3, 1e-8,
           "Attention: two matmuls over head_size / kv length (up to 512) and a softmax with "
           "exp; float32 accumulation in any order plus a vectorised exp drift ~1e-5 relative "
           "on outputs of magnitude ~1. rtol 1e-3 is the bound ORT's own fp32 GQA tests use."),
        _p("fp32-blockq-matmul", 1e-4, 1e-3, 1e-8,
           "MatMulNBits / dequantize+MatMul, float32 activations: the dequantised weights are "
           "exact in float32, so only the K-long float32 dot product (K <= 4096) rounds; "
           "outputs are O(1) by construction, so ~sqrt(K)*eps*|x||w| < 1e-4."),
        Tolerance("int8act-blockq-matmul", 0.0, 1e-3, 1e-4,
                  "MatMulNBits with accuracy_level=4: \"input A can be quantized with the same block_size "
                  "to int8 internally\". Symmetric round-to-nearest int8 per block of A has step "
                  "s = max|A_block|/127 and error uniform in +-s/2 (variance s^2/12) on every element, so "
                  "the output's NMSE is E[s^2]/12 over the mean square of A, whatever the weights: for "
                  "Gaussian activations 2.4e-5 (block 16), 3.0e-5 (32), 4.2e-5 (128), 5.5e-5 (512). "
                  "Measured: ORT CPU 1.8e-5-3.6e-5, a numpy emulation of that quantisation 1.8e-5-3.6e-5 "
                  "on the same cases (tests/test_int8act_bound.py). max_nmse 1e-4 is 1.8x the block-512 "
                  "prediction; one block's zero points off by one (every column) gives 1.3e-4-5.7e-3 "
                  "and fails. The error of one output element is a sum of K such roundings, ~Gaussian with "
                  "sd sqrt(NMSE) * RMS(y) <= 0.01 RMS(y) at the bound, so the element bound is 6 sd: "
                  "atol_rms 0.06 (it scales with the data: large intermediate activations in --locate "
                  "get a proportionally larger bound); rtol 1e-3 for float16 output rounding.",
                  atol_rms=0.06),
        _p("fp32-gather", 0.0, 1e-6, 1e-12,
           "Dequantising a gathered row is one subtract and one multiply per element: a "
           "correct kernel is exact or within 1 ulp."),
        _p("fp16-pointwise", 1e-3, 2e-3, 1e-6,
           "float16 results: rounding the output alone costs half an ulp (4.9e-4 relative); "
           "one intermediate rounding doubles it. rtol 2e-3 = 2 ulp, atol 1e-3 for values "
           "near zero."),
        _p("fp16-reduction", 2e-3, 5e-3, 1e-5,
           "float16 norms: ORT upcasts to float32 for the reduction, then rounds the output "
           "(0.5 ulp) after a multiply by a float16 scale (another 0.5 ulp); 5 ulp bound."),
        _p("fp16-layernorm", 2e-3, 5e-3, 1e-5,
           "float16 LayerNorm: the statistics in float32 (fp32-layernorm's mean error is ~1e-5, far below "
           "float16 resolution), then the output rounded after a multiply by a float16 gamma and an add of a "
           "float16 beta: 5 ulp, as fp16-reduction."),
        _p("fp16-attention", 5e-3, 5e-3, 1e-5,
           "float16 attention: the probabilities and the P·V product may be rounded to float16 "
           "(flash kernels do); ORT's own fp16 GQA tests use rtol = atol = 5e-3."),
        _p("fp16-blockq-matmul", 1e-2, 1e-2, 1e-5,
           "float16 activations and scales: dequantised weights are rounded to float16 (0.5 ulp "
           "each) and the dot product may accumulate in float16 on some kernels; outputs O(1)."),
        _p("fp16-gather", 1e-3, 1e-3, 1e-6,
           "float16 dequantised rows: (q - zp) * scale rounded once to float16 (0.5 ulp)."),
        _p("bf16-attention", 1e-2, 5e-2, 1e-4,
           "bfloat16 attention: 8-bit mantissa (eps 7.8e-3); ORT's own bf16 tests use rtol "
           "5e-2, atol 1e-2."),
        _p("fp32-logits", 1e-4, 1e-3, 1e-8,
           "Zoo logits, float32 activations, against PyTorch eager float32 on the same weights (a "
           "quantised twin's own dequantised weights, so quantisation is not counted): both sides "
           "round in float32 over a few layers of K <= ~512 dot products, norms and softmax, in "
           "different orders and with different fast exp/tanh, so logits O(1-10) agree to ~1e-6 "
           "relative. rtol 1e-3 / NMSE 1e-8 leave >100x margin and still flag a wrong cache row, "
           "position or rotary (NMSE > 1e-3)."),
        _p("int8act-logits", 0.5, 0.1, 1e-2,
           "Zoo logits of a graph with MatMulNBits accuracy_level=4: the schema lets every such "
           "matmul quantise its activations to int8 per block (~3e-5 NMSE each, at most 1e-4: see "
           "int8act-blockq-matmul), and a model chains ~30 (twins) to ~200 (Phi-3) of them along "
           "the residual stream, so errors add up to ~1e-2 NMSE; a wrong cache, position or weight "
           "gives NMSE ~1. The per-logit error is a sum of many independent roundings, so its tail "
           "over ~10^4 logits reaches ~5 sigma: measured on the Gemma-3 builder q4 twins (ORT CPU; "
           "with accuracy_level set to 0 the same graphs match eager to NMSE 5e-13, so all of it is "
           "the int8 path) NMSE 3.4e-4..4.4e-4 and max |Δ| 0.144 at logit RMS 1.64 (4.8 sigma); "
           "at the NMSE bound, 5 sigma of RMS-1.6 logits is 0.8, hence atol 0.5 + rtol 0.1."),
        _p("fp16-logits", 0.05, 0.05, 1e-4,
           "Zoo logits of a float16 graph (q4f16, fp16; float32 I/O) against float32 eager: every "
           "intermediate is rounded to float16 (eps 9.8e-4), ~20 roundings along the residual "
           "stream give ~2e-3 relative RMS (NMSE ~5e-6); 1e-4 leaves 20x margin."),
        _p("onnx-node", 1e-7, 1e-3, 1.0,
           "ONNX's own node test cases, judged with the suite's own bounds (onnx.backend.test "
           "expect(): rtol 1e-3, atol 1e-7), so a cell means what the ONNX scoreboard means. "
           "NMSE is not part of that rule, so it is not bounded here."),
        _p("onnx-node-fp16", 1e-3, 5e-3, 1.0,
           "ONNX node cases whose outputs are float16/bfloat16: the expected values were "
           "computed in float32 by onnx.reference and rounded, so one output rounding (and "
           "an fp16 intermediate) must be allowed: 5 ulp."),
    ]
}


def get(name: str) -> Tolerance:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown tolerance profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None


def for_dtype(op_class: str, dtype_name: str) -> str:
    """Profile name for an op class and a dtype short name ('fp32', 'fp16', 'bf16')."""
    name = f"{dtype_name}-{op_class}"
    if name not in PROFILES:
        name = f"fp32-{op_class}" if dtype_name == "fp64" else name
    get(name)
    return name
