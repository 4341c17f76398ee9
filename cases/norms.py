"""RMS-style norms as LLM exports use them.

- `SimplifiedLayerNormalization` (default domain, as ORT registers it): the Gemma/Llama
  pre-norm of ORT-GenAI exports.
- `com.microsoft.SkipSimplifiedLayerNormalization`: residual add fused with the norm, optional
  bias, optional outputs.
- `RMSNormalization` (opset 23): the standard op.

Inputs with a large non-zero mean are in the grid on purpose: an implementation that
subtracts the mean (a LayerNorm) is indistinguishable from an RMS norm on centred data.
Oracle: the same maths lowered to primitive ONNX ops (Mul, ReduceMean, Add, Sqrt, Div) in
float64, run by onnx.reference: independent of the refops code and of onnx's RMSNormalization.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from harness.case import Built, Case, dtype_name, grid
from harness.data import normal, up
from harness.graph import MS, GraphBuilder, run_reference, single_node_model
from harness.tolerances import for_dtype
from harness.families import Family, Row
from harness.refops import norms as ref_norms

FAMILY = Family(
    name="norm",
    reference_ops=ref_norms.OPS,
    rows=[
        Row("SimplifiedLayerNormalization on non-centred input",
            "tract >= 0.23.4 maps it to its mean-subtracting LayerNorm (tract PR #2409)",
            k="norm/simplified and largemean"),
        Row("SkipSimplifiedLayerNormalization with bias",
            "tract's importer note: 'ORT >= 1.19 does NOT apply the optional bias' to input_skip_bias_sum",
            k="norm/skipsimplified and not nobias"),
    ],
)

SHAPES = {"quick": [(2, 5, 64), (1, 3, 2048)], "full": [(2, 5, 64), (1, 3, 2048), (3, 1, 1152), (1, 7, 896), (4, 2, 16)]}
DISTS = {"centred": (0.0, 1.0), "largemean": (5.0, 1.0)}


def shape_tag(shape) -> str:
    return "x".join(str(d) for d in shape)


def rms_oracle(x: np.ndarray, scale: np.ndarray, axis: int, eps: float, bias_inputs=()) -> dict[str, np.ndarray]:
    """Y, inv_std_var (and the residual sum when skip inputs are given) by primitive ops in float64."""
    g = GraphBuilder(opset=18)
    xs = g.input("x", np.float64, x.shape)
    sc = g.input("scale", np.float64, scale.shape)
    feeds = {"x": up(x), "scale": up(scale)}
    s = xs
    for i, extra in enumerate(bias_inputs):
        name = g.input(f"add{i}", np.float64, extra.shape)
        feeds[name] = up(extra)
        s = g.op("Add", s, name)
    axis = axis % x.ndim
    axes = g.const(np.arange(axis, x.ndim, dtype=np.int64))
    ms = g.op("ReduceMean", g.op("Mul", s, s), axes, keepdims=1)
    rms = g.op("Sqrt", g.op("Add", ms, g.const(np.float64(eps))))
    inv = g.op("Div", g.const(np.float64(1.0)), rms)
    y = g.op("Mul", g.op("Mul", s, inv), sc)
    g.output(y, rename="Y")
    g.output(inv, rename="inv_std_var")
    if bias_inputs:
        g.output(s, rename="sum")
    return run_reference(g.model(), feeds)


def _simplified(op: str, shape, axis: int, dist: str, dtype) -> Case:
    dt = dtype_name(dtype)
    fam = "norm"
    cid = f"norm/{op}-axis{axis}-{shape_tag(shape)}-{dist}-{dt}"
    eps = 1e-6

    def make(rng: np.random.Generator) -> Built:
        mean, std = DISTS[dist]
        x = normal(rng, shape, dtype, mean, std)
        rank = len(shape)
        norm_shape = shape[axis % rank:]
        scale = normal(rng, norm_shape, dtype, 1.0, 0.2)
        feeds = {"X": x, "scale": scale}
        stat_shape = [d if i < axis % rank else 1 for i, d in enumerate(shape)]
        if op == "simplified":
            node = helper.make_node("SimplifiedLayerNormalization", ["X", "scale"], ["Y", "inv_std_var"],
                                    axis=axis, epsilon=eps)
            outs = {"Y": (dtype, shape), "inv_std_var": (np.float32, stat_shape)}
            model = single_node_model(node, feeds, outs, opset=21)
        else:
            node = helper.make_node("RMSNormalization", ["X", "scale"], ["Y"], axis=axis, epsilon=eps)
            model = single_node_model(node, feeds, {"Y": (dtype, shape)}, opset=23)
        o = rms_oracle(x, scale, axis, eps)
        expected = {"Y": o["Y"]}
        if op == "simplified":
            expected["inv_std_var"] = o["inv_std_var"]
        return Built(model, [feeds], [expected], oracle="primitive ops in float64 (onnx.reference)")

    marks = ("norm",) + (("fp16",) if dt == "fp16" else ())
    return Case(cid, fam, {"op": op, "axis": axis, "shape": list(shape), "input": dist, "dtype": dt},
                marks, for_dtype("reduction", dt), make)


OUTPUT_SETS = {
    "out": ["output"],
    "invstd": ["output", "", "inv_std_var"],
    "sum": ["output", "", "", "input_skip_bias_sum"],
}


def _skip(shape, bias: bool, outputs: str, dist: str, dtype) -> Case:
    dt = dtype_name(dtype)
    cid = f"norm/skipsimplified-{'bias' if bias else 'nobias'}-{outputs}-{shape_tag(shape)}-{dist}-{dt}"
    eps = 1e-6

    def make(rng: np.random.Generator) -> Built:
        mean, std = DISTS[dist]
        hidden = shape[-1]
        x = normal(rng, shape, dtype, mean, std)
        skip = normal(rng, shape, dtype, 0.0, 1.0)
        gamma = normal(rng, (hidden,), dtype, 1.0, 0.2)
        feeds = {"input": x, "skip": skip, "gamma": gamma}
        ins = ["input", "skip", "gamma"]
        extra = [skip]
        if bias:
            b = normal(rng, (hidden,), dtype, 0.0, 0.5)
            feeds["bias"] = b
            ins.append("bias")
            extra.append(b)
        outs = OUTPUT_SETS[outputs]
        node = helper.make_node("SkipSimplifiedLayerNormalization", ins, outs, domain=MS, epsilon=eps)
        stat = list(shape[:-1]) + [1]
        types = {"output": (dtype, shape), "inv_std_var": (np.float32, stat), "input_skip_bias_sum": (dtype, shape)}
        model = single_node_model(node, feeds, {o: types[o] for o in outs if o})
        o = rms_oracle(x, gamma, -1, eps, bias_inputs=extra)
        expected = {"output": o["Y"]}
        if "inv_std_var" in outs:
            expected["inv_std_var"] = o["inv_std_var"]
        if "input_skip_bias_sum" in outs:
            expected["input_skip_bias_sum"] = o["sum"]
        return Built(model, [feeds], [expected], oracle="primitive ops in float64 (onnx.reference)")

    marks = ("norm",) + (("fp16",) if dt == "fp16" else ())
    return Case(cid, "norm", {"op": "skipsimplified", "bias": int(bias), "outputs": outputs, "shape": list(shape),
                              "input": dist, "dtype": dt}, marks, for_dtype("reduction", dt), make)


def cases(grid_name: str = "quick") -> list[Case]:
    out: list[Case] = []
    for p in grid(op=["simplified", "rms23"], shape=SHAPES[grid_name], axis=[-1, 1], dist=list(DISTS),
                  dtype=[np.float32, np.float16]):
        if p["axis"] == 1 and p["shape"][-1] > 1024 and grid_name == "quick":
            continue
        out.append(_simplified(p["op"], p["shape"], p["axis"], p["dist"], p["dtype"]))
    for p in grid(shape=SHAPES[grid_name], bias=[False, True], outputs=list(OUTPUT_SETS), dist=list(DISTS),
                  dtype=[np.float32, np.float16]):
        out.append(_skip(p["shape"], p["bias"], p["outputs"], p["dist"], p["dtype"]))
    return out
