"""com.microsoft.MultiHeadAttention as optimum / ORT's transformer optimizer emit it (BERT-style
encoders, Whisper/T5 cross-attention, GPT-style decoders with a KV cache): separate 3D Q/K/V,
bias on/off, past/present, unidirectional or not, key_padding_mask as 0/1 per key or as key
lengths, attention_bias (per batch or broadcast over it), a custom scale, cross-attention.

Oracle: ONNX Attention-23 in float64 by onnx.reference, on heads split with Reshape/Transpose,
the bias added by Add, the causal and padding masks given as one additive float mask built
here from the case's fields (docs/mha.md): no code shared with harness/refops/mha.py.
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
from harness.refops import mha as ref_mha
from harness.tolerances import for_dtype

FAMILY = Family(
    marks={"mha": "com.microsoft.MultiHeadAttention"},
    reference_ops=ref_mha.OPS,
    rows=[Row("MultiHeadAttention decode on a past", "GPT-style decoders through ORT's optimizer",
              k="mha/ and past3 and uni1")],
)

MASK_FILTER = -10000.0


@dataclass(frozen=True)
class Sc:
    """One MultiHeadAttention configuration; the id is made of these fields."""

    batch: int = 2
    s: int = 4  # query length
    kv: int = 4  # new key/value length (== s for self-attention)
    past: int = 0
    heads: int = 2
    head: int = 16
    bias: bool = False
    uni: bool = False
    mask: str = "none"  # none | pad2d (B, T) 0/1 | lens (B,) key lengths
    abias: str = "none"  # none | b1st (B, 1, S, T) | 1nst (1, N, S, T)
    scale: float = 0.0  # 0: the default 1/sqrt(head_size)
    mfv: float = 0.0  # mask_filter_value; 0: attribute absent (-10000)

    def tag(self) -> str:
        sc = f"-scale{self.scale:g}" if self.scale else ""
        sc += f"-mfv{self.mfv:g}" if self.mfv else ""
        return (f"b{self.batch}s{self.s}kv{self.kv}past{self.past}n{self.heads}h{self.head}-bias{int(self.bias)}"
                f"-uni{int(self.uni)}-mask{self.mask}-abias{self.abias}{sc}")


def additive_mask(sc: Sc, mask: np.ndarray | None, abias: np.ndarray | None) -> np.ndarray:
    """(B, N, S, T) float64: attention_bias + mask_filter_value on padded keys + -inf on later keys."""
    t = sc.past + sc.kv
    m = np.zeros((sc.batch, sc.heads, sc.s, t))
    if abias is not None:
        m = m + up(abias)
    if mask is not None:
        for b in range(sc.batch):
            for j in range(t):
                padded = (j >= mask[b]) if mask.ndim == 1 else (mask[b, j] == 0)
                if padded:
                    m[b, :, :, j] += sc.mfv or MASK_FILTER
    if sc.uni:
        for i in range(sc.s):
            m[:, :, i, sc.past + i + 1:] = -np.inf
    return m


def replace_mask(sc: Sc, q, k, bias, pk, mask, abias) -> np.ndarray:
    """M2's other reading as an additive mask: padded scores become mask_filter_value exactly
    (mask_filter_value - scale * q.k), computed from the case's own projections in numpy."""
    n, h = sc.heads, sc.head
    d = n * h
    qq, kk = up(q), up(k)
    if bias is not None:
        qq, kk = qq + up(bias)[:d], kk + up(bias)[d:2 * d]
    qh = qq.reshape(sc.batch, sc.s, n, h).transpose(0, 2, 1, 3)
    kh = kk.reshape(sc.batch, sc.kv, n, h).transpose(0, 2, 1, 3)
    if sc.past:
        kh = np.concatenate([up(pk), kh], axis=2)
    scores = qh @ kh.transpose(0, 1, 3, 2) * (sc.scale or 1.0 / np.sqrt(h))
    m = additive_mask(replace_fields(sc), None, abias)
    for b in range(sc.batch):
        for j in range(sc.past + sc.kv):
            if (j >= mask[b]) if mask.ndim == 1 else (mask[b, j] == 0):
                m[b, :, :, j] = sc.mfv - scores[b, :, :, j] - (0 if abias is None else up(abias)[min(b, abias.shape[0] - 1), :, :, j])
    return m


def replace_fields(sc: Sc) -> Sc:
    from dataclasses import replace

    return replace(sc, mask="none")


def oracle(sc: Sc, q, k, v, bias, pk, pv, mask_add) -> dict[str, np.ndarray]:
    g = GraphBuilder(opset=23)
    n, h = sc.heads, sc.head
    feeds = {"q": up(q), "k": up(k), "v": up(v), "mask": mask_add}
    x = {nm: g.input(nm, np.float64, feeds[nm].shape) for nm in ("q", "k", "v")}
    if bias is not None:
        d = n * h
        bb = up(bias)
        x = {nm: g.op("Add", x[nm], g.const(bb[i * d:(i + 1) * d])) for i, nm in enumerate(("q", "k", "v"))}
    heads = {}
    for nm, length in (("q", sc.s), ("k", sc.kv), ("v", sc.kv)):
        r = g.op("Reshape", x[nm], g.const(np.array([sc.batch, length, n, h], np.int64)))
        heads[nm] = g.op("Transpose", r, perm=[0, 2, 1, 3])
    msk = g.input("mask", np.float64, mask_add.shape)
    ins = [heads["q"], heads["k"], heads["v"], msk]
    if sc.past:
        feeds["pk"], feeds["pv"] = up(pk), up(pv)
        ins += [g.input("pk", np.float64, pk.shape), g.input("pv", np.float64, pv.shape)]
    attrs = {"scale": float(sc.scale)} if sc.scale else {}
    y, pres_k, pres_v = g.op("Attention", *ins, outputs=3, **attrs)
    out = g.op("Reshape", g.op("Transpose", y, perm=[0, 2, 1, 3]), g.const(np.array([sc.batch, sc.s, n * h], np.int64)))
    g.output(out, rename="output")
    g.output(pres_k, rename="present_key")
    g.output(pres_v, rename="present_value")
    return run_reference(g.model(), feeds)


def _case(sc: Sc, dtype) -> Case:
    dt = dtype_name(dtype)
    cid = f"mha/{sc.tag()}-{dt}"

    def make(rng: np.random.Generator) -> Built:
        d = sc.heads * sc.head
        t = sc.past + sc.kv
        q = normal(rng, (sc.batch, sc.s, d), dtype)
        k = normal(rng, (sc.batch, sc.kv, d), dtype)
        v = normal(rng, (sc.batch, sc.kv, d), dtype)
        feeds = {"query": q, "key": k, "value": v}
        ins = ["query", "key", "value", "", "", "", "", ""]
        b = pk = pv = mask = ab = None
        if sc.bias:
            b = normal(rng, (3 * d,), dtype, 0.0, 0.5)
            feeds["bias"], ins[3] = b, "bias"
        if sc.mask == "pad2d":  # right padding of one key on every row but the first; never all keys
            mask = np.ones((sc.batch, t), np.int32)
            for r in range(1, sc.batch):
                mask[r, t - r:] = 0
            feeds["key_padding_mask"], ins[4] = mask, "key_padding_mask"
        elif sc.mask == "lens":
            mask = np.array([t - (r % t) for r in range(sc.batch)], np.int32)
            feeds["key_padding_mask"], ins[4] = mask, "key_padding_mask"
        if sc.abias != "none":
            shape = (sc.batch, 1, sc.s, t) if sc.abias == "b1st" else (1, sc.heads, sc.s, t)
            ab = normal(rng, shape, dtype, 0.0, 1.0)
            feeds["attention_bias"], ins[5] = ab, "attention_bias"
        if sc.past:
            pk = normal(rng, (sc.batch, sc.heads, sc.past, sc.head), dtype)
            pv = normal(rng, (sc.batch, sc.heads, sc.past, sc.head), dtype)
            feeds["past_key"], feeds["past_value"] = pk, pv
            ins[6], ins[7] = "past_key", "past_value"
        while ins[-1] == "":
            ins.pop()
        outs = ["output", "present_key", "present_value"] if sc.past else ["output"]
        attrs = {"num_heads": sc.heads}
        if sc.uni:
            attrs["unidirectional"] = 1
        if sc.scale:
            attrs["scale"] = sc.scale
        if sc.mfv:
            attrs["mask_filter_value"] = sc.mfv
        node = helper.make_node("MultiHeadAttention", ins, outs, domain=MS, **attrs)
        pres = (dtype, (sc.batch, sc.heads, t, sc.head))
        types = {"output": (dtype, (sc.batch, sc.s, d)), "present_key": pres, "present_value": pres}
        model = single_node_model(node, feeds, {o: types[o] for o in outs})
        o = oracle(sc, q, k, v, b, pk, pv, additive_mask(sc, mask, ab))
        built = Built(model, [feeds], [{n: o[n] for n in outs}], oracle="Attention-23 lowering, float64 (onnx.reference)")
        if sc.mfv and mask is not None:  # M2: the padded key's score replaced by the value, not shifted by it
            built.alternates[readings.MASK_FILTER_REPLACES] = [
                {n: v_ for n, v_ in oracle(sc, q, k, v, b, pk, pv, replace_mask(sc, q, k, b, pk, mask, ab)).items()
                 if n in outs}]
        return built

    feats = {"op": "MultiHeadAttention", "batch": sc.batch, "q_len": sc.s, "kv_len": sc.kv, "past": sc.past,
             "num_heads": sc.heads, "head_size": sc.head, "bias": int(sc.bias), "unidirectional": int(sc.uni),
             "key_padding_mask": sc.mask, "attention_bias": sc.abias, "scale": sc.scale or "default", "dtype": dt}
    if sc.mfv:
        feats["mask_filter_value"] = sc.mfv
    marks = ("attention", "mha") + (("fp16",) if dt == "fp16" else ())
    return Case(cid, "mha", feats, marks, for_dtype("attention", dt), make)


QUICK = [
    Sc(), Sc(bias=True), Sc(uni=True), Sc(uni=True, bias=True),
    Sc(s=1, kv=1, past=3, uni=True), Sc(s=1, kv=1, past=3), Sc(s=4, kv=4, past=3, uni=True, bias=True),
    Sc(mask="pad2d"), Sc(mask="lens"), Sc(s=1, kv=1, past=3, uni=True, mask="pad2d"),
    Sc(abias="b1st"), Sc(abias="1nst", uni=True), Sc(scale=0.5), Sc(s=3, kv=7), Sc(s=3, kv=7, mask="pad2d"),
    Sc(batch=1, s=5, kv=5, heads=4, head=64, uni=True),
    Sc(mask="pad2d", mfv=-2.0),
]
FULL_EXTRA = [
    Sc(s=1, kv=1, past=15, uni=True, bias=True, mask="pad2d", abias="1nst"), Sc(batch=3, s=2, kv=2, past=5, uni=True),
    Sc(s=3, kv=7, abias="b1st", bias=True), Sc(mask="lens", uni=True), Sc(batch=1, s=9, kv=9, heads=8, head=32, uni=True),
    Sc(s=1, kv=1, past=3, scale=0.25, uni=True), Sc(batch=2, s=6, kv=6, heads=4, head=128, bias=True),
]


#: the masks at the lengths real prompts reach (issue 22): causal + key padding over a 128-token
#: prompt, a chunk on a past, decode on a 600-long past; appended last so no earlier id moves
LONG_QUICK = [Sc(batch=2, s=128, kv=128, heads=4, head=64, uni=True, mask="pad2d")]
LONG_FULL = [
    Sc(batch=1, s=600, kv=600, heads=4, head=64, uni=True),
    Sc(batch=2, s=64, kv=64, past=64, heads=4, head=64, uni=True, mask="lens"),
    Sc(batch=2, s=1, kv=1, past=600, heads=4, head=64, uni=True, mask="pad2d"),
    Sc(batch=2, s=128, kv=128, heads=4, head=64, uni=True, abias="b1st"),
]


def cases(grid_name: str = "quick") -> list[Case]:
    out = [_case(sc, np.float32) for sc in QUICK]
    out += [_case(sc, np.float16) for sc in QUICK[4:8]]
    if grid_name == "full":
        out += [_case(sc, np.float32) for sc in FULL_EXTRA]
        out += [_case(sc, np.float16) for sc in QUICK[:4] + QUICK[8:] + FULL_EXTRA]
    out += [_case(sc, np.float32) for sc in LONG_QUICK]
    if grid_name == "full":
        out += [_case(sc, np.float32) for sc in LONG_FULL]
        out += [_case(sc, np.float16) for sc in LONG_QUICK + LONG_FULL[1:3]]
    return out
