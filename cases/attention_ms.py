"""com.microsoft.Attention (GPT-2 / BERT exports through ORT's transformer optimizer): packed
QKV projection weights (bias on/off, qkv_hidden_sizes with a wider V), mask_index as raw (B, T)
and (B, S, T) masks, right-padding lengths (B,) and left-padding end/start pairs (2B),
past/present as one (2, B, N, T, H) tensor, unidirectional, attention_bias, scale.

Oracle: the projection X·W + b by a float64 MatMul/Add, then ONNX Attention-23 in float64 (both
by onnx.reference) with one additive float mask built here from the case's fields; no code
shared with harness/refops/attention_ms.py (docs/mha.md#attention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from harness import readings
from harness.case import Built, Case, dtype_name
from harness.data import normal, up
from harness.families import Family, Row
from harness.graph import MS, GraphBuilder, run_reference, single_node_model
from harness.refops import attention_ms as ref_att
from harness.tolerances import for_dtype

FAMILY = Family(
    marks={"attention_ms": "com.microsoft.Attention (packed QKV weights)"},
    reference_ops=ref_att.OPS,
    rows=[Row("com.microsoft.Attention GPT-2 decode on a past", "GPT-2 exports (ORT transformer optimizer)",
              k="attention_ms/ and past3 and uni1")],
)

MASK_FILTER = -10000.0


@dataclass(frozen=True)
class Sc:
    batch: int = 2
    s: int = 4
    past: int = 0
    heads: int = 2
    head: int = 16
    vhead: int = 0  # 0: as head (qkv_hidden_sizes omitted); else V's head size (qkv_hidden_sizes given)
    din: int = 24  # input_hidden_size
    bias: bool = True
    uni: bool = False
    mask: str = "none"  # none | raw2d (B,T) | raw3d (B,S,T) | right (B,) | left (2B,)
    abias: bool = False  # (1, N, S, T)
    scale: float = 0.0
    mfv: float = 0.0  # mask_filter_value; 0: attribute absent (-10000)

    def tag(self) -> str:
        v = f"v{self.vhead}" if self.vhead else ""
        sc = f"-scale{self.scale:g}" if self.scale else ""
        sc += f"-mfv{self.mfv:g}" if self.mfv else ""
        return (f"b{self.batch}s{self.s}past{self.past}n{self.heads}h{self.head}{v}in{self.din}-bias{int(self.bias)}"
                f"-uni{int(self.uni)}-mask{self.mask}-abias{int(self.abias)}{sc}")


def mask_input(sc: Sc) -> np.ndarray | None:
    """mask_index for the case's form; every row keeps its first key visible."""
    b, t = sc.batch, sc.past + sc.s
    if sc.mask == "raw2d":
        m = np.ones((b, t), np.int32)
        m[1:, -1] = 0
        return m
    if sc.mask == "raw3d":
        m = np.ones((b, sc.s, t), np.int32)
        m[:, :, 1::3] = 0  # every third key from the second masked, per query row as given
        m[-1, 0, :] = 1
        return m
    if sc.mask == "right":
        return np.array([t - (r % 2) * 2 for r in range(b)], np.int32)
    if sc.mask == "left":
        return np.array([t] * b + [r % 2 for r in range(b)], np.int32)
    return None


def visible(sc: Sc, m: np.ndarray | None) -> np.ndarray:
    """(B, S, T) bool: keys the text's mask form leaves visible (causality applied separately)."""
    b, s, t = sc.batch, sc.s, sc.past + sc.s
    vis = np.ones((b, s, t), bool)
    for r in range(b):
        for j in range(t):
            if sc.mask == "raw2d":
                vis[r, :, j] = m[r, j] == 1
            elif sc.mask == "raw3d":
                vis[r, :, j] = m[r, :, j] == 1
            elif sc.mask == "right":
                vis[r, :, j] = j < m[r]
            elif sc.mask == "left":
                vis[r, :, j] = m[b + r] <= j < m[r]
    return vis


def oracle(sc: Sc, x, w, bias, past, m, abias, replace: bool = False) -> dict[str, np.ndarray]:
    """replace: M2's other reading, a masked score becomes mask_filter_value (not shifted by it)."""
    n, h = sc.heads, sc.head
    hv = sc.vhead or h
    t = sc.past + sc.s
    hidden = ~visible(sc, m)[:, None, :, :] & np.ones((1, n, 1, 1), bool)
    add = np.where(hidden, sc.mfv or MASK_FILTER, 0.0)
    if replace:  # fill value minus the score the masked position would have had
        proj = up(x) @ up(w) + (0.0 if bias is None else up(bias))
        qh = proj[..., :n * h].reshape(sc.batch, sc.s, n, h).transpose(0, 2, 1, 3)
        kh = proj[..., n * h:2 * n * h].reshape(sc.batch, sc.s, n, h).transpose(0, 2, 1, 3)
        if sc.past:
            kh = np.concatenate([up(past[0]), kh], axis=2)
        scores = qh @ kh.transpose(0, 1, 3, 2) * (sc.scale or 1.0 / np.sqrt(h))
        add = np.where(hidden, (sc.mfv or MASK_FILTER) - scores - (0.0 if abias is None else up(abias)), 0.0)
    if abias is not None:
        add = add + up(abias)
    if sc.uni:
        for i in range(sc.s):
            add[:, :, i, sc.past + i + 1:] = -np.inf
    g = GraphBuilder(opset=23)
    feeds = {"x": up(x), "w": up(w), "mask": add}
    proj = g.op("MatMul", g.input("x", np.float64, x.shape), g.input("w", np.float64, w.shape))
    if bias is not None:
        proj = g.op("Add", proj, g.const(up(bias)))
    dq = n * h
    parts = g.op("Split", proj, g.const(np.array([dq, dq, n * hv], np.int64)), axis=2, outputs=3)
    heads = []
    for part, hh in zip(parts, (h, h, hv)):
        r = g.op("Reshape", part, g.const(np.array([sc.batch, sc.s, n, hh], np.int64)))
        heads.append(g.op("Transpose", r, perm=[0, 2, 1, 3]))
    ins = heads + [g.input("mask", np.float64, add.shape)]
    if sc.past:
        feeds["pk"], feeds["pv"] = up(past[0]), up(past[1])
        ins += [g.input("pk", np.float64, past[0].shape), g.input("pv", np.float64, past[1].shape)]
    attrs = {"scale": float(sc.scale)} if sc.scale else {}
    y, pk, pv = g.op("Attention", *ins, outputs=3, **attrs)
    out = g.op("Reshape", g.op("Transpose", y, perm=[0, 2, 1, 3]), g.const(np.array([sc.batch, sc.s, n * hv], np.int64)))
    g.output(out, rename="output")
    if sc.past:
        g.output(g.op("Concat", g.op("Unsqueeze", pk, g.const(np.array([0], np.int64))),
                      g.op("Unsqueeze", pv, g.const(np.array([0], np.int64))), axis=0), rename="present")
    return run_reference(g.model(), feeds)


def _case(sc: Sc, dtype) -> Case:
    dt = dtype_name(dtype)
    cid = f"attention_ms/{sc.tag()}-{dt}"

    def make(rng: np.random.Generator) -> Built:
        n, h = sc.heads, sc.head
        hv = sc.vhead or h
        width = 2 * n * h + n * hv
        x = normal(rng, (sc.batch, sc.s, sc.din), dtype)
        w = normal(rng, (sc.din, width), dtype, 0.0, 1.0 / np.sqrt(sc.din))
        feeds = {"input": x, "weights": w}
        ins = ["input", "weights", "", "", "", ""]
        bias = past = ab = None
        if sc.bias:
            bias = normal(rng, (width,), dtype, 0.0, 0.3)
            feeds["bias"], ins[2] = bias, "bias"
        m = mask_input(sc)
        if m is not None:
            feeds["mask_index"], ins[3] = m, "mask_index"
        if sc.past:
            past = normal(rng, (2, sc.batch, n, sc.past, h), dtype)
            feeds["past"], ins[4] = past, "past"
        if sc.abias:
            ab = normal(rng, (1, n, sc.s, sc.past + sc.s), dtype)
            feeds["attention_bias"], ins[5] = ab, "attention_bias"
        while ins[-1] == "":
            ins.pop()
        attrs = {"num_heads": n}
        if sc.uni:
            attrs["unidirectional"] = 1
        if sc.vhead:
            attrs["qkv_hidden_sizes"] = [n * h, n * h, n * hv]
        if sc.scale:
            attrs["scale"] = sc.scale
        if sc.mfv:
            attrs["mask_filter_value"] = sc.mfv
        outs = ["output", "present"] if sc.past else ["output"]
        node = helper.make_node("Attention", ins, outs, domain=MS, **attrs)
        types = {"output": (dtype, (sc.batch, sc.s, n * hv)),
                 "present": (dtype, (2, sc.batch, n, sc.past + sc.s, h))}
        model = single_node_model(node, feeds, {o: types[o] for o in outs})
        o = oracle(sc, x, w, bias, past, m, ab)
        built = Built(model, [feeds], [{k: o[k] for k in outs}],
                      oracle="MatMul projection + Attention-23, float64 (onnx.reference)")
        if sc.mfv and m is not None:  # M2's other reading
            r = oracle(sc, x, w, bias, past, m, ab, replace=True)
            built.alternates[readings.MASK_FILTER_REPLACES] = [{k: r[k] for k in outs}]
        return built

    feats = {"op": "Attention (com.microsoft)", "batch": sc.batch, "q_len": sc.s, "past": sc.past,
             "num_heads": sc.heads, "head_size": sc.head, "v_head_size": sc.vhead or sc.head,
             "input_hidden": sc.din, "bias": int(sc.bias), "unidirectional": int(sc.uni), "mask_index": sc.mask,
             "attention_bias": int(sc.abias), "scale": sc.scale or "default", "dtype": dt}
    if sc.mfv:
        feats["mask_filter_value"] = sc.mfv
    marks = ("attention", "attention_ms") + (("fp16",) if dt == "fp16" else ())
    return Case(cid, "attention_ms", feats, marks, for_dtype("attention", dt), make)


QUICK = [
    Sc(), Sc(bias=False), Sc(uni=True), Sc(s=1, past=3, uni=True), Sc(s=2, past=3, uni=True, mask="raw2d"),
    Sc(mask="raw2d"), Sc(mask="raw3d"), Sc(mask="right"), Sc(mask="left"), Sc(abias=True),
    Sc(vhead=24), Sc(scale=0.5), Sc(batch=1, s=5, heads=4, head=64, din=64, uni=True),
    Sc(mask="raw2d", mfv=-2.0),
]
FULL_EXTRA = [
    Sc(s=1, past=9, uni=True, mask="raw2d", abias=True), Sc(mask="left", uni=True), Sc(mask="right", uni=True),
    Sc(s=3, past=2, uni=True, scale=0.25), Sc(batch=3, s=6, heads=4, head=32, din=96, mask="raw3d"),
]


#: the mask forms at the lengths real prompts reach (issue 22), full grid only: every form of this
#: op already crashes one quick column (ORT-node without a bias, tract with one), and a crash at
#: these sizes costs seconds per column. Appended last so no earlier id moves.
LONG_FULL = [
    Sc(batch=2, s=128, heads=4, head=64, din=64, uni=True, mask="right"),
    Sc(batch=2, s=1, past=600, heads=4, head=64, din=64, uni=True, mask="raw2d"),
    Sc(batch=2, s=64, past=64, heads=4, head=64, din=64, uni=True, mask="left"),
    Sc(batch=2, s=96, heads=4, head=64, din=64, mask="raw3d"),
]


def cases(grid_name: str = "quick") -> list[Case]:
    out = [_case(sc, np.float32) for sc in QUICK]
    out += [_case(sc, np.float16) for sc in (QUICK[0], QUICK[3])]
    if grid_name == "full":
        out += [_case(sc, np.float32) for sc in FULL_EXTRA]
        out += [_case(sc, np.float16) for sc in QUICK[1:3] + QUICK[4:] + FULL_EXTRA]
    if grid_name == "full":
        out += [_case(sc, np.float32) for sc in LONG_FULL]
        out += [_case(sc, np.float16) for sc in LONG_FULL[:2]]
    return out
