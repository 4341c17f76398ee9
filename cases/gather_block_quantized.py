"""com.microsoft.GatherBlockQuantized: the quantised embedding lookup of newer ORT-GenAI
exports (one of the seeds' named tract gaps).

Data is an initializer (the schema: "Input `data` is a constant"). Forms: uint8 packed 4-bit
along the last axis (ORT-GenAI builder), typed uint4 (onnxruntime's quantizer), typed int4,
uint8 8-bit; zero points present or absent (the default differs by type: 0 for int4/uint4,
2^(bits-1) for uint8); block sizes 16…128 including a quantised axis that is not a multiple
of the block; int32 and int64 indices, negative and out-of-range indices, 2-D index tensors.

Oracle: unpack with BitShift/BitwiseAnd, blocked DequantizeLinear (opset 21) along
quantize_axis, Gather on the wrapped indices, and a Where that zeroes out-of-range rows;
float64 via onnx.reference.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import helper, numpy_helper

from harness.case import Built, Case, dtype_name
from harness.graph import MS, GraphBuilder, make_model, run_reference, value_info
from harness.quantize import initializer_arrays, node_attrs, ort_quantize, pack_bits
from harness.families import Family, Row
from harness.refops import quant as ref_quant

FAMILY = Family(
    marks={"gather_block_quantized": "com.microsoft.GatherBlockQuantized"},
    reference_ops=[ref_quant.GatherBlockQuantized],
    rows=[Row("GatherBlockQuantized", "the tract report on a Gemma-3 export: the quantized embedding lookup "
              "is 'also unhandled'", m="gather_block_quantized")],
)

TABLES = {"vocab1k-h64": (1000, 64), "qwen2-slice": (512, 896), "gemma3-slice": (256, 1152), "k48": (100, 48),
          "small": (40, 32)}


def lower(data, scales, zp, indices, bits: int, block: int, qaxis: int, gaxis: int, typed: str) -> np.ndarray:
    g = GraphBuilder(opset=21)
    if typed == "uint8" and bits < 8:
        per = 8 // bits
        mask = g.const(np.array((1 << bits) - 1, np.uint8))
        d = g.op("Unsqueeze", g.const(data), g.const(np.array([-1], np.int64)))
        parts = [g.op("BitwiseAnd", g.op("BitShift", d, g.const(np.array(bits * j, np.uint8)), direction="RIGHT"), mask)
                 for j in range(per)]
        shape = list(data.shape[:-1]) + [data.shape[-1] * per]
        q = g.op("Reshape", g.op("Concat", *parts, axis=-1), g.const(np.array(shape, np.int64)))
        if zp is None:
            z = g.const(np.full(scales.shape, 2 ** (bits - 1), np.uint8))
        else:
            zd = g.op("Unsqueeze", g.const(zp), g.const(np.array([-1], np.int64)))
            zparts = [g.op("BitwiseAnd", g.op("BitShift", zd, g.const(np.array(bits * j, np.uint8)), direction="RIGHT"), mask)
                      for j in range(per)]
            zs = list(zp.shape[:-1]) + [zp.shape[-1] * per]
            z = g.op("Reshape", g.op("Concat", *zparts, axis=-1), g.const(np.array(zs, np.int64)))
            z = g.op("Slice", z, g.const(np.zeros(len(zs), np.int64)), g.const(np.array(scales.shape, np.int64)))
    else:
        q = g.const(data)
        default = {"uint8": np.uint8(2 ** (bits - 1))}.get(typed)
        z = g.const(zp) if zp is not None else (g.const(np.full(scales.shape, default, np.uint8)) if default is not None else None)
    s32 = g.op("Cast", g.const(scales), to=1)
    deq = g.op("DequantizeLinear", q, s32, z, axis=qaxis, block_size=block) if z else \
        g.op("DequantizeLinear", q, s32, axis=qaxis, block_size=block)
    table = g.op("Cast", deq, to=11)
    size = (data.shape[gaxis] * (8 // bits if typed == "uint8" and bits < 8 and gaxis == data.ndim - 1 else 1))
    valid = (indices >= -size) & (indices < size)
    safe = np.where(valid, np.where(indices < 0, indices + size, indices), 0)
    out = g.op("Gather", table, g.const(safe.astype(np.int64)), axis=gaxis)
    vshape = [1] * (data.ndim - 1 + indices.ndim)
    vshape[gaxis: gaxis + indices.ndim] = indices.shape
    out = g.op("Where", g.const(valid.reshape(vshape)), out, g.const(np.float64(0.0)))
    g.output(out, rename="out")
    return run_reference(g.model(), {})["out"]


def _model(inits: dict, idx: np.ndarray, attrs: dict, out_dtype, out_shape, has_zp: bool):
    ins = ["data", "indices", "scales"] + (["zero_points"] if has_zp else [])
    node = helper.make_node("GatherBlockQuantized", ins, ["output"], domain=MS, **attrs)
    return make_model([node], [value_info("indices", idx.dtype, idx.shape)], [value_info("output", out_dtype, out_shape)],
                      initializers=[numpy_helper.from_array(v, k) for k, v in inits.items()])


def hand_case(table: str, form: str, block: int, zp: bool, idx_kind: str, dtype, qaxis: int = 1, gaxis: int = 0) -> Case:
    v, d = TABLES[table]
    dt = dtype_name(dtype)
    cid = f"gather_block_quantized/{form}-{table}-bs{block}-zp{int(zp)}-q{qaxis}g{gaxis}-idx{idx_kind}-{dt}"

    def make(rng: np.random.Generator) -> Built:
        bits = 8 if form == "uint8-8bit" else 4
        typed = {"uint8-4bit": "uint8", "uint8-8bit": "uint8", "uint4": "uint4", "int4": "int4"}[form]
        shape = (v, d)
        nblk = -(-shape[qaxis] // block)
        sshape = list(shape)
        sshape[qaxis] = nblk
        if typed == "int4":
            q = rng.integers(-8, 8, size=shape)
        else:
            q = rng.integers(0, 2 ** bits, size=shape)
        scales = rng.uniform(0.01, 0.1, size=sshape).astype(dtype)
        zq = rng.integers(-8 if typed == "int4" else 0, 8 if typed == "int4" else 2 ** bits, size=sshape) if zp else None
        if typed == "uint8" and bits < 8:
            data = pack_bits(q, bits)
            zarr = pack_bits(zq, bits) if zp else None
        else:
            npt = {"uint8": np.uint8, "uint4": ml_dtypes.uint4, "int4": ml_dtypes.int4}[typed]
            data = q.astype(npt)
            zarr = zq.astype(npt) if zp else None
        size = shape[gaxis]
        n_idx = {"int64": (5,), "int32": (5,), "neg": (6,), "2d": (2, 3), "oob": (5,)}[idx_kind]
        idx = rng.integers(0, size, size=n_idx)
        if idx_kind == "neg":
            idx[::2] -= size  # same rows, negative form
        if idx_kind == "oob":
            idx[1], idx[3] = size, -size - 2
        idx = idx.astype(np.int32 if idx_kind == "int32" else np.int64)
        inits = {"data": data, "scales": scales}
        if zp:
            inits["zero_points"] = zarr
        attrs = {"block_size": block, "quantize_axis": qaxis, "gather_axis": gaxis}
        if bits != 4:
            attrs["bits"] = bits
        out_shape = list(shape[:gaxis]) + list(idx.shape) + list(shape[gaxis + 1:])
        model = _model(inits, idx, attrs, dtype, out_shape, zp)
        exp = lower(data, scales, zarr, idx.astype(np.int64), bits, block, qaxis, gaxis, typed)
        return Built(model, [{"indices": idx}], [{"output": exp}],
                     oracle="unpack + blocked DequantizeLinear + Gather/Where, float64")

    feats = {"source": "hand", "data": form, "table": table, "rows": v, "cols": d, "block_size": block,
             "quantized_axis_multiple_of_block": int((v, d)[qaxis] % block == 0), "zero_points": int(zp),
             "quantize_axis": qaxis, "gather_axis": gaxis, "indices": idx_kind, "dtype": dt}
    marks = ("quant", "gather_block_quantized") + (("fp16",) if dt == "fp16" else ()) + \
        (("seed_gap",) if form == "uint8-4bit" and table == "gemma3-slice" else ())
    return Case(cid, "gather_block_quantized", feats, marks, f"{dt}-gather", make)


def tooling_case(table: str, block: int, symmetric: bool, dtype) -> Case:
    v, d = TABLES[table]
    dt = dtype_name(dtype)
    cid = f"gather_block_quantized/ortquant-{table}-bs{block}-{'sym' if symmetric else 'asym'}-{dt}"

    def make(rng: np.random.Generator) -> Built:
        emb = rng.standard_normal((v, d)).astype(np.float32)
        idx = rng.integers(0, v, size=(2, 4)).astype(np.int64)
        node = helper.make_node("Gather", ["E", "indices"], ["output"])
        f = make_model([node], [value_info("indices", np.int64, idx.shape)], [value_info("output", np.float32, [2, 4, d])],
                       ms_opset=None, initializers=[numpy_helper.from_array(emb, "E")])
        qm = ort_quantize(f, 4, block, symmetric, None, op_types=("Gather",), quant_axes=(("Gather", 1),))
        gnode = next(x for x in qm.graph.node if x.op_type == "GatherBlockQuantized")
        inits = initializer_arrays(qm)
        at = node_attrs(gnode)
        ins = list(gnode.input)
        scales = inits[ins[2]].astype(dtype)
        zarr = inits[ins[3]] if len(ins) > 3 and ins[3] else None
        data = inits[ins[0]]
        new = {"data": data, "scales": scales}
        if zarr is not None:
            new["zero_points"] = zarr
        attrs = {k: at[k] for k in ("block_size", "quantize_axis", "gather_axis", "bits") if k in at}
        model = _model(new, idx, attrs, dtype, [2, 4, d], zarr is not None)
        typed = {np.dtype(ml_dtypes.uint4): "uint4", np.dtype(ml_dtypes.int4): "int4"}.get(data.dtype, "uint8")
        exp = lower(data, scales, zarr, idx, attrs.get("bits", 4), attrs["block_size"], attrs.get("quantize_axis", 1),
                    attrs.get("gather_axis", 0), typed)
        return Built(model, [{"indices": idx}], [{"output": exp}],
                     oracle="unpack + blocked DequantizeLinear + Gather/Where, float64")

    feats = {"source": "ort-quantizer", "data": "uint4", "table": table, "rows": v, "cols": d, "block_size": block,
             "quantized_axis_multiple_of_block": int(d % block == 0), "zero_points": int(not symmetric),
             "quantize_axis": 1, "gather_axis": 0, "indices": "2d", "dtype": dt}
    marks = ("quant", "gather_block_quantized") + (("fp16",) if dt == "fp16" else ())
    return Case(cid, "gather_block_quantized", feats, marks, f"{dt}-gather", make)


def cases(grid_name: str = "quick") -> list[Case]:
    full = grid_name == "full"
    f32, f16 = np.float32, np.float16
    out: list[Case] = []
    for form in ("uint8-4bit", "uint4", "int4", "uint8-8bit"):
        for zp in (False, True):
            for dtype in (f32, f16):
                for table, block in ([("vocab1k-h64", 32), ("k48", 32), ("gemma3-slice", 128), ("small", 16)] if full
                                     else [("vocab1k-h64", 32), ("k48", 32)]):
                    out.append(hand_case(table, form, block, zp, "int64", dtype))
    for idx_kind in ("int32", "neg", "2d", "oob"):
        out.append(hand_case("vocab1k-h64", "uint8-4bit", 32, True, idx_kind, f32))
        out.append(hand_case("small", "uint4", 16, False, idx_kind, f32))
    out.append(hand_case("gemma3-slice", "uint8-4bit", 32, True, "2d", f32))
    out.append(hand_case("qwen2-slice", "uint8-4bit", 32, False, "2d", f16))
    # typed 4-bit data may gather on the other axis (quantised along rows)
    out.append(hand_case("small", "int4", 16, True, "int64", f32, qaxis=0, gaxis=1))
    out.append(hand_case("small", "uint4", 16, False, "int64", f32, qaxis=0, gaxis=1))
    for table in (["vocab1k-h64", "k48", "qwen2-slice"] if full else ["vocab1k-h64", "k48"]):
        for sym in (True, False):
            for dtype in ((f32, f16) if full else (f32,)):
                out.append(tooling_case(table, 32, sym, dtype))
    seen: set[str] = set()
    return [c for c in out if not (c.id in seen or seen.add(c.id))]
