"""com.microsoft.SkipLayerNormalization: the residual add + LayerNorm of BERT/GPT-2-style
exports fused by ORT's transformer optimizer. Skip in each of the three shapes the text names,
beta and bias each present or absent, each optional output.

Inputs with a large mean are the default: a backend that drops the mean subtraction (an RMS
norm) is then wrong on every element. Oracle: Add + ai.onnx LayerNormalization-17 (its Mean
and InvStdDev outputs) in float64 by onnx.reference, independent of harness/refops/layernorm.py.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from harness import readings
from harness.case import Built, Case, dtype_name, grid
from harness.data import normal, up
from harness.families import Family, Row
from harness.graph import MS, GraphBuilder, run_reference, single_node_model
from harness.refops import layernorm as ref_ln
from harness.tolerances import for_dtype

FAMILY = Family(
    name="layernorm",
    marks={"layernorm": "com.microsoft.SkipLayerNormalization"},
    reference_ops=ref_ln.OPS,
    rows=[Row("SkipLayerNormalization with beta and bias", "BERT/GPT-2 exports (ORT transformer optimizer)",
              k="layernorm/skip-beta1-bias1")],
)

SHAPES = {"quick": [(2, 5, 64)], "full": [(2, 5, 64), (1, 3, 2048), (3, 1, 768)]}
DISTS = {"centred": (0.0, 1.0), "largemean": (5.0, 1.0)}
SKIP_FORMS = ("bsh", "1sh", "sh")
OUTPUT_SETS = {
    "out": ["output"],
    "mean": ["output", "mean"],
    "invstd": ["output", "", "inv_std_var"],
    "sum": ["output", "", "", "input_skip_bias_sum"],
    "all": ["output", "mean", "inv_std_var", "input_skip_bias_sum"],
}
EPS = 1e-5


def skip_shape(shape, form: str):
    b, s, h = shape
    return {"bsh": (b, s, h), "1sh": (1, s, h), "sh": (s, h)}[form]


def oracle(x, skip, gamma, beta, bias, eps: float) -> dict[str, np.ndarray]:
    g = GraphBuilder(opset=18)
    feeds = {"x": up(x), "skip": up(skip), "gamma": up(gamma)}
    s = g.op("Add", g.input("x", np.float64, x.shape), g.input("skip", np.float64, skip.shape))
    if bias is not None:
        feeds["bias"] = up(bias)
        s = g.op("Add", s, g.input("bias", np.float64, bias.shape))
    gm = g.input("gamma", np.float64, gamma.shape)
    bt = None
    if beta is not None:
        feeds["beta"] = up(beta)
        bt = g.input("beta", np.float64, beta.shape)
    y, mean, inv = g.op("LayerNormalization", s, gm, bt, outputs=3, axis=-1, epsilon=eps)
    g.output(y, rename="output")
    g.output(mean, rename="mean")
    g.output(inv, rename="inv_std_var")
    g.output(s, rename="input_skip_bias_sum")
    return run_reference(g.model(), feeds)


def _case(shape, form: str, beta: bool, bias: bool, outputs: str, dist: str, dtype) -> Case:
    dt = dtype_name(dtype)
    cid = (f"layernorm/skip-beta{int(beta)}-bias{int(bias)}-skip{form}-{outputs}-"
           f"{'x'.join(map(str, shape))}-{dist}-{dt}")

    def make(rng: np.random.Generator) -> Built:
        mean, std = DISTS[dist]
        h = shape[-1]
        x = normal(rng, shape, dtype, mean, std)
        skip = normal(rng, skip_shape(shape, form), dtype, 0.0, 1.0)
        gamma = normal(rng, (h,), dtype, 1.0, 0.2)
        b_ = normal(rng, (h,), dtype, 0.0, 0.5) if beta else None
        bi = normal(rng, (h,), dtype, 0.0, 0.5) if bias else None
        feeds = {"input": x, "skip": skip, "gamma": gamma}
        ins = ["input", "skip", "gamma", "", ""]
        if beta:
            feeds["beta"], ins[3] = b_, "beta"
        if bias:
            feeds["bias"], ins[4] = bi, "bias"
        while ins[-1] == "":
            ins.pop()
        outs = OUTPUT_SETS[outputs]
        node = helper.make_node("SkipLayerNormalization", ins, outs, domain=MS, epsilon=EPS)
        stat = list(shape[:-1]) + [1]
        types = {"output": (dtype, shape), "mean": (np.float32, stat), "inv_std_var": (np.float32, stat),
                 "input_skip_bias_sum": (dtype, shape)}
        model = single_node_model(node, feeds, {o: types[o] for o in outs if o})
        o = oracle(x, skip, gamma, b_, bi, EPS)
        expected = {n: o[n] for n in outs if n}
        alternates = {}
        if dt != "fp32":  # in float32 the two readings differ by < 1 ulp of the output
            s = (up(x) + up(skip)).astype(dtype)  # the unfused graph: Add (rounded), Add (rounded)
            s = s if bi is None else (up(s) + up(bi)).astype(dtype)
            r = oracle(s, np.zeros_like(s), gamma, b_, None, EPS)
            alternates[readings.SKIP_SUM_IN_T] = [{n: r[n] for n in outs if n}]
        return Built(model, [feeds], [expected], oracle="Add + LayerNormalization-17 in float64 (onnx.reference)",
                     alternates=alternates)

    feats = {"op": "SkipLayerNormalization", "beta": int(beta), "bias": int(bias), "skip": form,
             "outputs": outputs, "shape": list(shape), "input": dist, "dtype": dt}
    marks = ("layernorm",) + (("fp16",) if dt == "fp16" else ())
    return Case(cid, "layernorm", feats, marks, for_dtype("layernorm", dt), make)


def cases(grid_name: str = "quick") -> list[Case]:
    out: list[Case] = []
    full = grid_name == "full"
    for p in grid(shape=SHAPES[grid_name], form=SKIP_FORMS, beta=[False, True], bias=[False, True],
                  outputs=list(OUTPUT_SETS), dist=list(DISTS), dtype=[np.float32, np.float16]):
        if not full and (p["dist"] != "largemean" or p["outputs"] not in ("out", "all")
                         or (p["dtype"] == np.float16 and (p["form"] != "bsh" or p["outputs"] != "all"))):
            continue
        out.append(_case(p["shape"], p["form"], p["beta"], p["bias"], p["outputs"], p["dist"], p["dtype"]))
    return out
