"""GELU-family activations of BERT/GPT-2/CLIP-style exports (optimum, ORT's transformer
optimizer): com.microsoft Gelu, BiasGelu, FastGelu (bias on/off) and QuickGelu (alpha).

Inputs are N(0, 3^2), so the tails (where erf and tanh approximations and the exp of a
sigmoid differ most) are exercised. Oracle: the formula lowered to standard ops (Erf, Tanh,
Sigmoid, Mul, Add) in float64, run by onnx.reference: no code shared with harness/refops.
Gelu/BiasGelu carry the tanh-approximation form as a reading the text rules out (docs/activations.md A1):
a backend computing it is a mismatch that names it.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper

from harness import readings
from harness.case import Built, Case, dtype_name, grid
from harness.data import normal, up
from harness.families import Family, Row
from harness.graph import MS, GraphBuilder, run_reference, single_node_model
from harness.refops import activations as ref_act
from harness.tolerances import for_dtype

FAMILY = Family(
    name="activation",
    marks={"activation": "GELU-family activations: com.microsoft Gelu, BiasGelu, FastGelu, QuickGelu"},
    reference_ops=ref_act.OPS,
    rows=[Row("FastGelu with bias", "BERT/GPT-2 exports fused by ORT's transformer optimizer",
              k="activation/fastgelu-bias1")],
)

SHAPES = {"quick": [(2, 5, 64), (1, 3, 3072)], "full": [(2, 5, 64), (1, 3, 3072), (4, 7, 768), (3, 1, 1)]}
QUICKGELU_ALPHA = [None, 1.0]  # None: attribute absent (default 1.702)
FULL_ALPHA = [None, 1.0, 1.702, 0.5]


def shape_tag(shape) -> str:
    return "x".join(str(d) for d in shape)


def oracle(op: str, x: np.ndarray, bias: np.ndarray | None, alpha: float | None, form: str = "erf") -> np.ndarray:
    """The activation lowered to primitive ops, float64, via onnx.reference."""
    g = GraphBuilder(opset=18)
    xs = g.input("x", np.float64, x.shape)
    feeds = {"x": up(x)}
    if bias is not None:
        b = g.input("b", np.float64, bias.shape)
        feeds["b"] = up(bias)
        xs = g.op("Add", xs, b)
    half = g.const(np.float64(0.5))
    one = g.const(np.float64(1.0))
    if op == "quickgelu":
        a = 1.702 if alpha is None else alpha
        y = g.op("Mul", xs, g.op("Sigmoid", g.op("Mul", xs, g.const(np.float64(a)))))
    elif form == "erf":
        e = g.op("Erf", g.op("Div", xs, g.const(np.float64(math.sqrt(2.0)))))
        y = g.op("Mul", g.op("Mul", half, xs), g.op("Add", one, e))
    else:
        c1, c2 = (ref_act.FAST_C1, ref_act.FAST_C2) if form == "text" else \
            (math.sqrt(2 / math.pi), 0.044715 * math.sqrt(2 / math.pi))
        cube = g.op("Mul", g.op("Mul", xs, xs), xs)
        inner = g.op("Add", g.op("Mul", g.const(np.float64(c1)), xs), g.op("Mul", g.const(np.float64(c2)), cube))
        y = g.op("Mul", g.op("Mul", half, xs), g.op("Add", one, g.op("Tanh", inner)))
    g.output(y, rename="y")
    return run_reference(g.model(), feeds)["y"]


def _case(op: str, shape, bias: bool, alpha: float | None, dtype) -> Case:
    dt = dtype_name(dtype)
    extra = {"fastgelu": f"-bias{int(bias)}",
             "quickgelu": f"-alpha{'default' if alpha is None else f'{alpha:g}'}"}.get(op, "")
    cid = f"activation/{op}{extra}-{shape_tag(shape)}-{dt}"

    def make(rng: np.random.Generator) -> Built:
        x = normal(rng, shape, dtype, 0.0, 3.0)
        feeds = {"X": x}
        b = normal(rng, shape[-1:], dtype, 0.0, 1.0) if bias else None
        attrs = {}
        if op == "gelu":
            node_ins, name, out = ["X"], "Gelu", "Y"
        elif op == "biasgelu":
            feeds = {"A": x, "B": b}
            node_ins, name, out = ["A", "B"], "BiasGelu", "C"
        elif op == "fastgelu":
            if bias:
                feeds["bias"] = b
            node_ins, name, out = list(feeds), "FastGelu", "Y"
        else:
            node_ins, name, out = ["X"], "QuickGelu", "Y"
            if alpha is not None:
                attrs["alpha"] = alpha
        node = helper.make_node(name, node_ins, [out], domain=MS, **attrs)
        model = single_node_model(node, feeds, {out: (dtype, shape)})
        form = "text" if op == "fastgelu" else "erf"
        expected = [{out: oracle(op, x, b, alpha, form)}]
        excluded = {}
        if op in ("gelu", "biasgelu") and dt == "fp32":  # in float16 the two agree within the fp16 profile
            # A1: the tanh form is ruled out by the text; carried so a backend using it is named
            excluded[readings.GELU_TANH] = [{out: oracle(op, x, b, alpha, "tanh")}]
        return Built(model, [feeds], expected, oracle="primitive ops in float64 (onnx.reference)",
                     excluded=excluded)

    feats = {"op": op, "shape": list(shape), "dtype": dt}
    if op == "fastgelu":
        feats["bias"] = int(bias)
    if op == "quickgelu":
        feats["alpha"] = "default" if alpha is None else alpha
    marks = ("activation",) + (("fp16",) if dt == "fp16" else ())
    return Case(cid, "activation", feats, marks, for_dtype("activation", dt), make)


def cases(grid_name: str = "quick") -> list[Case]:
    out: list[Case] = []
    alphas = QUICKGELU_ALPHA if grid_name == "quick" else FULL_ALPHA
    for p in grid(shape=SHAPES[grid_name], dtype=[np.float32, np.float16]):
        s, d = p["shape"], p["dtype"]
        out.append(_case("gelu", s, False, None, d))
        out.append(_case("biasgelu", s, True, None, d))
        out += [_case("fastgelu", s, b, None, d) for b in (False, True)]
        out += [_case("quickgelu", s, False, a, d) for a in alphas]
    return out
