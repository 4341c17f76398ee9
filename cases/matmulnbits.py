"""com.microsoft.MatMulNBits: every q4/int4 export multiplies through it.

Weights are initializers (as in real exports; tract requires constants). Two sources:
hand-built (bits 2/4/8, block sizes 16…512, K not a multiple of the block, zero points absent /
packed / float, g_idx, bias) and onnxruntime's own MatMulNBitsQuantizer (symmetric and
asymmetric RTN, as exporters emit). accuracy_level 0 and 4 are separate cases: level 4 lets a
kernel quantise A to int8, so it has its own tolerance profile.

Oracle: a lowering to standard ops in float64 via onnx.reference: BitShift/BitwiseAnd unpack
the packed bytes, blocked DequantizeLinear (opset 21) applies scale and zero point (an explicit
Sub/Mul with a block-index Gather for float zero points and g_idx), then MatMul (+ Add bias).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper, numpy_helper

from harness.case import Built, Case, dtype_name
from harness.data import normal, up
from harness.graph import MS, GraphBuilder, make_model, run_reference, value_info
from harness.quantize import initializer_arrays, node_attrs, ort_quantize, pack_bits
from harness.families import Family, Row
from harness.refops import quant as ref_quant

FAMILY = Family(
    marks={"matmulnbits": "com.microsoft.MatMulNBits"},
    reference_ops=[ref_quant.MatMulNBits],
    rows=[Row("MatMulNBits 4-bit, block 32", "the tract report on a Gemma-3 export: model_q4.onnx is int4 "
              "MatMulNBits, block_size 32", k="bits4 and bs32", m="matmulnbits")],
)

# (K, N): zoo projection shapes (N sliced to keep cases small), plus edges
SHAPES = {
    "qwen2-q": (896, 128), "gemma3-q": (1152, 128), "phi3-qkv": (3072, 96), "llama-q": (2048, 64),
    "edge-64": (64, 48), "edge-k80": (80, 24), "edge-k1000": (1000, 16),
}


def lower(a: np.ndarray, b: np.ndarray, scales: np.ndarray, zp: np.ndarray | None, g_idx, bias, k: int, n: int,
          bits: int, block: int) -> np.ndarray:
    kb = (k + block - 1) // block
    per = 8 // bits
    g = GraphBuilder(opset=21)
    ga = g.input("a", np.float64, a.shape)
    packed = g.op("Reshape", g.const(b), g.const(np.array([n, -1, 1], np.int64)))
    mask = g.const(np.array((1 << bits) - 1, np.uint8))
    parts = [g.op("BitwiseAnd", g.op("BitShift", packed, g.const(np.array(bits * j, np.uint8)), direction="RIGHT"), mask)
             for j in range(per)]
    q = g.op("Reshape", g.op("Concat", *parts, axis=2) if per > 1 else parts[0], g.const(np.array([n, kb * block], np.int64)))
    s32 = g.op("Cast", g.const(np.asarray(scales).reshape(n, kb)), to=1)  # float16 -> float32 is exact
    float_zp = zp is not None and np.asarray(zp).dtype != np.uint8
    packed_zq = None
    if zp is not None and not float_zp:  # unpacked in the graph, like B (shares no code with refops)
        zparts = [g.op("BitwiseAnd", g.op("BitShift", g.op("Reshape", g.const(np.asarray(zp)), g.const(np.array([n, -1, 1], np.int64))),
                                            g.const(np.array(bits * j, np.uint8)), direction="RIGHT"), mask)
                  for j in range(per)]
        zall = g.op("Reshape", g.op("Concat", *zparts, axis=2) if per > 1 else zparts[0], g.const(np.array([n, -1], np.int64)))
        packed_zq = g.op("Slice", zall, g.const(np.array([0], np.int64)), g.const(np.array([kb], np.int64)), g.const(np.array([1], np.int64)))
    if g_idx is None and not float_zp:
        zq = g.const(np.full((n, kb), 2 ** (bits - 1), np.uint8)) if zp is None else packed_zq
        w = g.op("DequantizeLinear", q, s32, zq, axis=1, block_size=block)
        w = g.op("Cast", w, to=11)
    else:  # explicit: (q - zp[block_of_k]) * scale[block_of_k]
        blocks = np.arange(kb * block) // block if g_idx is None else np.concatenate(
            [np.asarray(g_idx).astype(np.int64), np.zeros(kb * block - k, np.int64)])
        gidx = g.const(blocks.astype(np.int64))
        if packed_zq is not None:
            zp_t = g.op("Cast", packed_zq, to=11)
        else:
            zp_t = g.const(np.full((n, kb), float(2 ** (bits - 1))) if zp is None else up(zp).reshape(n, kb))
        zfull = g.op("Gather", zp_t, gidx, axis=1)
        sfull = g.op("Gather", g.op("Cast", s32, to=11), gidx, axis=1)
        w = g.op("Mul", g.op("Sub", g.op("Cast", q, to=11), zfull), sfull)
    w = g.op("Slice", w, g.const(np.array([0], np.int64)), g.const(np.array([k], np.int64)), g.const(np.array([1], np.int64)))
    y = g.op("MatMul", ga, g.op("Transpose", w, perm=[1, 0]))
    if bias is not None:
        y = g.op("Add", y, g.const(up(bias)))
    g.output(y, rename="Y")
    return run_reference(g.model(), {"a": up(a)})["Y"]


def _model(a, inits: dict[str, np.ndarray], inputs: list[str], attrs: dict[str, Any], dtype) -> Any:
    node = helper.make_node("MatMulNBits", inputs, ["Y"], domain=MS, **attrs)
    out_shape = list(a.shape[:-1]) + [attrs["N"]]
    return make_model([node], [value_info("A", a.dtype, a.shape)], [value_info("Y", dtype, out_shape)],
                      initializers=[numpy_helper.from_array(v, k) for k, v in inits.items()])


def _profile(dt: str, acc: int) -> str:
    if acc == 4:
        return "int8act-blockq-matmul"
    return f"{dt}-blockq-matmul"


def hand_case(shape: str, bits: int, block: int, zp_form: str, act: str, dtype, acc: int = 0,
              bias: bool = False, g_idx: bool = False) -> Case:
    k, n = SHAPES[shape]
    dt = dtype_name(dtype)
    extra = ("-bias" if bias else "") + ("-gidx" if g_idx else "")
    cid = f"matmulnbits/hand-{shape}-k{k}n{n}-bits{bits}-bs{block}-zp{zp_form}-acc{acc}-{act}{extra}-{dt}"

    def make(rng: np.random.Generator) -> Built:
        kb = (k + block - 1) // block
        q = rng.integers(0, 2 ** bits, size=(n, kb * block)).astype(np.uint8)
        q[:, k:] = 0  # padding columns of the last block
        b = pack_bits(q, bits).reshape(n, kb, block * bits // 8)
        half = 2 ** (bits - 1)
        scales = (rng.uniform(0.5, 1.5, size=(n, kb)) / (np.sqrt(k) * half)).astype(dtype)
        inits = {"B": b, "scales": scales}
        ins = ["A", "B", "scales"]
        zp = None
        if zp_form == "packed":
            zq = rng.integers(0, 2 ** bits, size=(n, kb)).astype(np.uint8)
            zp = pack_bits(zq, bits)
        elif zp_form == "float":
            zp = rng.uniform(0, 2 ** bits - 1, size=(n, kb)).astype(dtype)
        if zp is not None:
            inits["zero_points"] = zp
        ins.append("zero_points" if zp is not None else "")
        gi = None
        if g_idx:
            gi = (np.arange(k) // block).astype(np.int32)
            rng.shuffle(gi)  # a permuted grouping (act-order GPTQ)
            inits["g_idx"] = gi
        ins.append("g_idx" if g_idx else "")
        bb = None
        if bias:
            bb = normal(rng, (n,), dtype, 0.0, 0.5)
            inits["bias"] = bb
            ins.append("bias")
        while ins[-1] == "":
            ins.pop()
        a_shape = {"2d": (3, k), "3d": (2, 5, k), "3d-b1": (1, 1, k)}[act]
        a = normal(rng, a_shape, dtype)
        attrs = {"K": k, "N": n, "bits": bits, "block_size": block}
        if acc:
            attrs["accuracy_level"] = acc
        model = _model(a, inits, ins, attrs, dtype)
        y = lower(a, b, scales, zp, gi, bb, k, n, bits, block)
        built = Built(model, [{"A": a}], [{"Y": y}], oracle="unpack + blocked DequantizeLinear + MatMul, float64")
        if g_idx:  # "This input is deprecated": a kernel may read it as absent
            built.alternates["g_idx ignored (the input is deprecated)"] = [
                {"Y": lower(a, b, scales, zp, None, bb, k, n, bits, block)}]
        return built

    feats = {"source": "hand", "shape": shape, "K": k, "N": n, "bits": bits, "block_size": block,
             "k_multiple_of_block": int(k % block == 0), "zero_points": zp_form, "g_idx": int(g_idx),
             "bias": int(bias), "accuracy_level": acc, "activation": act, "dtype": dt}
    marks = ("quant", "matmulnbits") + (("fp16",) if dt == "fp16" else ())
    return Case(cid, "matmulnbits", feats, marks, _profile(dt, acc), make)


def tooling_case(shape: str, block: int, symmetric: bool, acc: int, act: str, dtype) -> Case:
    k, n = SHAPES[shape]
    dt = dtype_name(dtype)
    cid = f"matmulnbits/ortquant-{shape}-k{k}n{n}-bits4-bs{block}-{'sym' if symmetric else 'asym'}-acc{acc}-{act}-{dt}"

    def make(rng: np.random.Generator) -> Built:
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        a_shape = {"2d": (3, k), "3d": (2, 5, k), "3d-b1": (1, 1, k)}[act]
        a = normal(rng, a_shape, dtype)
        node = helper.make_node("MatMul", ["A", "W"], ["Y"])
        f = make_model([node], [value_info("A", np.float32, a_shape)], [value_info("Y", np.float32, [*a_shape[:-1], n])],
                       ms_opset=None, initializers=[numpy_helper.from_array(w, "W")])
        qm = ort_quantize(f, 4, block, symmetric, acc if acc else None)
        mnode = next(x for x in qm.graph.node if x.op_type == "MatMulNBits")
        inits = initializer_arrays(qm)
        at = node_attrs(mnode)
        ins = list(mnode.input) + [""] * (6 - len(mnode.input))
        if np.dtype(dtype) == np.float16:  # an fp16 export: scales in the activation type
            for nm in (ins[2], ins[3]):
                if nm and inits[nm].dtype == np.float32:
                    inits[nm] = inits[nm].astype(np.float16)
        attrs = {kk: at[kk] for kk in ("K", "N", "bits", "block_size") if kk in at}
        if at.get("accuracy_level"):
            attrs["accuracy_level"] = at["accuracy_level"]
        ins_used = [x for x in mnode.input]
        model = _model(a, {nm: inits[nm] for nm in ins_used if nm in inits}, ins_used, attrs, dtype)
        zp = inits.get(ins[3]) if ins[3] else None
        y = lower(a, inits[ins[1]], inits[ins[2]], zp, None, None, k, n, attrs.get("bits", 4), attrs["block_size"])
        return Built(model, [{"A": a}], [{"Y": y}], oracle="unpack + blocked DequantizeLinear + MatMul, float64")

    feats = {"source": "ort-quantizer", "shape": shape, "K": k, "N": n, "bits": 4, "block_size": block,
             "k_multiple_of_block": int(k % block == 0), "zero_points": "none" if symmetric else "packed",
             "g_idx": 0, "bias": 0, "accuracy_level": acc, "activation": act, "dtype": dt}
    marks = ("quant", "matmulnbits") + (("fp16",) if dt == "fp16" else ())
    return Case(cid, "matmulnbits", feats, marks, _profile(dt, acc), make)


def cases(grid_name: str = "quick") -> list[Case]:
    full = grid_name == "full"
    out: list[Case] = []
    f32, f16 = np.float32, np.float16
    # bits x block sweep on one shape (research: block 512 all-zero on ORT 1.26)
    for bits in (2, 4, 8):
        for block in (16, 32, 64, 128, 256, 512):
            out.append(hand_case("llama-q", bits, block, "none", "2d", f32))
    # zero point forms x K not a multiple of the block x dtype x activation rank
    for shape in (["edge-k80", "edge-k1000", "qwen2-q", "gemma3-q", "phi3-qkv", "edge-64"] if full
                  else ["edge-k80", "edge-k1000", "qwen2-q", "phi3-qkv"]):
        for zp in ("none", "packed", "float"):
            for dtype in (f32, f16):
                for act in (("2d", "3d", "3d-b1") if full else ("3d",)):
                    for bits in ((2, 4, 8) if full else (4,)):
                        out.append(hand_case(shape, bits, 32 if shape != "edge-k1000" else 64, zp, act, dtype))
    # accuracy_level 0 vs 4, both ORT columns (and every other)
    for shape in ("qwen2-q", "gemma3-q", "edge-k80"):
        for acc in (0, 4):
            for dtype in (f32, f16):
                out.append(hand_case(shape, 4, 32, "packed", "3d", dtype, acc=acc))
    # bias, g_idx, 8-bit and 2-bit with zero points
    out += [hand_case("edge-64", 4, 16, "packed", "2d", f32, bias=True),
            hand_case("edge-64", 4, 16, "none", "3d", f16, bias=True),
            hand_case("edge-64", 4, 16, "packed", "2d", f32, g_idx=True),
            hand_case("edge-k80", 8, 16, "packed", "2d", f32),
            hand_case("edge-k80", 2, 16, "packed", "2d", f32)]
    # what exporters emit: onnxruntime's quantizer
    for shape in (["qwen2-q", "gemma3-q", "phi3-qkv", "edge-k80"] if full else ["qwen2-q", "phi3-qkv", "edge-k80"]):
        for block in ((32, 128) if full else (32,)) if shape != "edge-k80" else (16,):
            for sym in (True, False):
                for acc in (0, 4):
                    for dtype in ((f32, f16) if full else (f32,)):
                        out.append(tooling_case(shape, block, sym, acc, "3d", dtype))
    seen: set[str] = set()
    return [c for c in out if not (c.id in seen or seen.add(c.id))]
