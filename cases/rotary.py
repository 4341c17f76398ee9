"""Rotary embeddings: com.microsoft.RotaryEmbedding (ORT-GenAI / optimum exports) and
ai.onnx RotaryEmbedding (opset 23).

The two differ in input order (contrib: input, position_ids, cos, sin; ai.onnx: input, cos,
sin, position_ids) and the contrib op's position_ids may be a shape-(1) start offset.
Oracles: the contrib op is lowered to ai.onnx RotaryEmbedding-23 (offset expanded with
Range/Add) and run by onnx.reference in float64; the ai.onnx op is checked against rotation
by complex multiplication in numpy (a different formulation from both implementations).
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from harness import readings
from harness.case import Built, Case, dtype_name, grid
from harness.data import normal, rope_cache, up
from harness.graph import MS, GraphBuilder, run_reference, single_node_model
from harness.tolerances import for_dtype
from harness.families import Family
from harness.refops import rotary as ref_rotary

FAMILY = Family(reference_ops=ref_rotary.OPS)

SHAPES = {
    "quick": [(2, 5, 4, 16), (1, 7, 8, 64)],
    "full": [(2, 5, 4, 16), (1, 7, 8, 64), (1, 1, 4, 256), (3, 9, 14, 64), (1, 4, 32, 96)],
}
MAX_POS = 64


def tag(b, s, n, h) -> str:
    return f"b{b}s{s}h{n}d{h}"


def complex_rotary(x_bsnh: np.ndarray, pos: np.ndarray, cos: np.ndarray, sin: np.ndarray, rdim: int,
                   interleaved: bool) -> np.ndarray:
    """Rotation as z * e^{iθ} on complex pairs, float64: an oracle with no shared code."""
    x = up(x_bsnh)
    out = x.copy()
    xr = x[..., :rdim]
    if interleaved:
        z = xr[..., 0::2] + 1j * xr[..., 1::2]
    else:
        z = xr[..., : rdim // 2] + 1j * xr[..., rdim // 2:]
    c = up(cos)[pos][:, :, None, : rdim // 2]
    s = up(sin)[pos][:, :, None, : rdim // 2]
    w = z * (c + 1j * s)
    if interleaved:
        out[..., 0:rdim:2], out[..., 1:rdim:2] = w.real, w.imag
    else:
        out[..., : rdim // 2], out[..., rdim // 2: rdim] = w.real, w.imag
    return out


def _contrib(shape, layout: str, interleaved: int, partial: bool, pos_form: str, heads_attr: str, dtype) -> Case:
    b, s, n, h = shape
    dt = dtype_name(dtype)
    rdim = h // 2 if partial else h
    cid = (f"rotary/ms-{layout}-interleaved{interleaved}-rotdim{rdim if partial else 0}-pos{pos_form}"
           f"-heads{heads_attr}-{tag(*shape)}-{dt}")

    def make(rng: np.random.Generator) -> Built:
        x_bsnh = normal(rng, (b, s, n, h), dtype)
        x = x_bsnh.reshape(b, s, n * h) if layout == "3d" else np.ascontiguousarray(np.transpose(x_bsnh, (0, 2, 1, 3)))
        cos, sin = rope_cache(MAX_POS, rdim, dtype)
        if pos_form == "offset":
            pos_ids = np.array([int(rng.integers(0, MAX_POS - s))], dtype=np.int64)
            pos = pos_ids[0] + np.broadcast_to(np.arange(s), (b, s))
        else:
            pos_ids = rng.integers(0, MAX_POS, size=(b, s)).astype(np.int64)
            pos = pos_ids
        feeds = {"input": x, "position_ids": pos_ids, "cos_cache": cos, "sin_cache": sin}
        attrs = {"interleaved": interleaved}
        if partial:
            attrs.update(rotary_embedding_dim=rdim, num_heads=n)
        elif heads_attr == "given":
            attrs["num_heads"] = n
        node = helper.make_node("RotaryEmbedding", list(feeds), ["output"], domain=MS, **attrs)
        model = single_node_model(node, feeds, {"output": (dtype, x.shape)})
        # oracle: ai.onnx RotaryEmbedding-23 on (B, S, N, H) -> lowered graph in float64
        g = GraphBuilder(opset=23)
        gx = g.input("x", np.float64, (b, s, n, h))
        gc = g.input("cos", np.float64, cos.shape)
        gs = g.input("sin", np.float64, sin.shape)
        gp = g.input("pos", np.int64, (b, s))
        g.output(g.op("RotaryEmbedding", g.op("Transpose", gx, perm=[0, 2, 1, 3]), gc, gs, gp,
                      interleaved=interleaved, rotary_embedding_dim=rdim if partial else 0), rename="y")
        lowered = g.model()

        def oracle(at: np.ndarray) -> np.ndarray:
            y = run_reference(lowered, {"x": up(x_bsnh), "cos": up(cos), "sin": up(sin),
                                        "pos": np.ascontiguousarray(at, dtype=np.int64)})["y"]  # (B, N, S, H)
            return y if layout == "4d" else np.transpose(y, (0, 2, 1, 3)).reshape(b, s, n * h)

        alternates = {}
        if pos_form == "offset":  # the other reading of a shape-(1) position_ids (harness/readings.py, P1)
            alternates[readings.ROTARY_POS1_BROADCAST] = [{"output": oracle(np.full((b, s), pos_ids[0]))}]
        return Built(model, [feeds], [{"output": oracle(pos)}], alternates=alternates,
                     oracle="ai.onnx RotaryEmbedding-23 via onnx.reference, float64")

    marks = ("rotary",) + (("fp16",) if dt == "fp16" else ())
    feats = {"op": "com.microsoft.RotaryEmbedding", "layout": layout, "interleaved": interleaved,
             "rotary_dim": "partial" if partial else "full", "position_ids": pos_form, "num_heads": heads_attr,
             "shape": tag(*shape), "dtype": dt}
    return Case(cid, "rotary", feats, marks, for_dtype("pointwise", dt), make)


def _standard(shape, layout: str, interleaved: int, partial: bool, pos_form: str, dtype) -> Case:
    b, s, n, h = shape
    dt = dtype_name(dtype)
    rdim = h // 2 if partial else h
    cid = f"rotary/onnx23-{layout}-interleaved{interleaved}-rotdim{rdim if partial else 0}-pos{pos_form}-{tag(*shape)}-{dt}"

    def make(rng: np.random.Generator) -> Built:
        x_bsnh = normal(rng, (b, s, n, h), dtype)
        x = x_bsnh.reshape(b, s, n * h) if layout == "3d" else np.ascontiguousarray(np.transpose(x_bsnh, (0, 2, 1, 3)))
        cos_full, sin_full = rope_cache(MAX_POS, rdim, dtype)
        pos = rng.integers(0, MAX_POS, size=(b, s)).astype(np.int64)
        if pos_form == "ids":
            feeds = {"X": x, "cos_cache": cos_full, "sin_cache": sin_full, "position_ids": pos}
            cos_o, sin_o, pos_o = cos_full, sin_full, pos
        else:  # caches already gathered per token: (B, S, r/2)
            feeds = {"X": x, "cos_cache": cos_full[pos], "sin_cache": sin_full[pos]}
            cos_o = cos_full[pos].reshape(b * s, -1)
            sin_o = sin_full[pos].reshape(b * s, -1)
            pos_o = np.arange(b * s).reshape(b, s)
        attrs = {"interleaved": interleaved}
        if partial:
            attrs["rotary_embedding_dim"] = rdim
        if layout == "3d":
            attrs["num_heads"] = n
        node = helper.make_node("RotaryEmbedding", list(feeds), ["Y"], **attrs)
        model = single_node_model(node, feeds, {"Y": (dtype, x.shape)}, opset=23)
        y = complex_rotary(x_bsnh, pos_o, cos_o, sin_o, rdim, bool(interleaved))
        expected = y.reshape(b, s, n * h) if layout == "3d" else np.transpose(y, (0, 2, 1, 3))
        return Built(model, [feeds], [{"Y": expected}], oracle="complex multiplication in numpy, float64")

    marks = ("rotary",) + (("fp16",) if dt == "fp16" else ())
    feats = {"op": "ai.onnx.RotaryEmbedding-23", "layout": layout, "interleaved": interleaved,
             "rotary_dim": "partial" if partial else "full", "position_ids": pos_form, "shape": tag(*shape), "dtype": dt}
    return Case(cid, "rotary", feats, marks, for_dtype("pointwise", dt), make)


def cases(grid_name: str = "quick") -> list[Case]:
    out: list[Case] = []
    for p in grid(shape=SHAPES[grid_name], layout=["3d", "4d"], interleaved=[0, 1], partial=[False, True],
                  pos=["2d", "offset"], heads=["given", "inferred"], dtype=[np.float32, np.float16]):
        if p["heads"] == "inferred" and (p["layout"] == "4d" or p["partial"]):
            continue  # num_heads only matters for 3D input, and partial rotary requires it
        if grid_name == "quick" and p["dtype"] == np.float16 and p["shape"] != SHAPES["quick"][0]:
            continue
        out.append(_contrib(p["shape"], p["layout"], p["interleaved"], p["partial"], p["pos"], p["heads"], p["dtype"]))
    for p in grid(shape=SHAPES[grid_name], layout=["3d", "4d"], interleaved=[0, 1], partial=[False, True],
                  pos=["ids", "gathered"], dtype=[np.float32, np.float16]):
        if grid_name == "quick" and p["dtype"] == np.float16 and p["shape"] != SHAPES["quick"][0]:
            continue
        out.append(_standard(p["shape"], p["layout"], p["interleaved"], p["partial"], p["pos"], p["dtype"]))
    return out
