"""Blocked DequantizeLinear (opset 21): the standard-op form of block quantisation, which the
decomposed exports (and this project's quantised-op oracles) use.

x is int4/uint4 (an initializer, as weights are) or int8/uint8 (a graph input); blocks along
axis 0 or 1, including an axis length that is not a multiple of the block; zero point present
or absent; float32 and float16 scales. The reference column is onnx.reference's own
DequantizeLinear; the oracle is the formula evaluated block by block in numpy, float64.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import helper, numpy_helper

from harness.case import Built, Case, dtype_name
from harness.graph import make_model, value_info

TYPES = {"int4": (ml_dtypes.int4, -8, 8), "uint4": (ml_dtypes.uint4, 0, 16), "int8": (np.int8, -128, 128),
         "uint8": (np.uint8, 0, 256)}


def blockwise(x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int, block: int) -> np.ndarray:
    out = np.zeros(x.shape)
    xf = x.astype(np.float64)
    for i in range(scale.shape[axis]):
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(i * block, (i + 1) * block)
        ss = [slice(None)] * x.ndim
        ss[axis] = slice(i, i + 1)
        z = 0.0 if zp is None else zp[tuple(ss)].astype(np.float64)
        out[tuple(sl)] = (xf[tuple(sl)] - z) * scale[tuple(ss)].astype(np.float64)
    return out


def dq_case(xtype: str, shape, axis: int, block: int, zp: bool, dtype) -> Case:
    dt = dtype_name(dtype)
    cid = f"dequantize/blocked-{xtype}-{'x'.join(map(str, shape))}-axis{axis}-bs{block}-zp{int(zp)}-{dt}"

    def make(rng: np.random.Generator) -> Built:
        npt, lo, hi = TYPES[xtype]
        x = rng.integers(lo, hi, size=shape).astype(npt)
        sshape = list(shape)
        sshape[axis] = -(-shape[axis] // block)
        scale = rng.uniform(0.01, 0.2, size=sshape).astype(dtype)
        z = rng.integers(lo, hi, size=sshape).astype(npt) if zp else None
        inits = {"y_scale": scale}
        if z is not None:
            inits["y_zero_point"] = z
        feeds = {}
        inputs = []
        if xtype in ("int4", "uint4"):
            inits["x"] = x
        else:
            feeds["x"] = x
            inputs = [value_info("x", x.dtype, shape)]
        node = helper.make_node("DequantizeLinear", ["x", "y_scale"] + (["y_zero_point"] if zp else []), ["y"],
                                axis=axis, block_size=block)
        model = make_model([node], inputs, [value_info("y", dtype, shape)], opset=21, ms_opset=None,
                           initializers=[numpy_helper.from_array(v, k) for k, v in inits.items()])
        return Built(model, [feeds], [{"y": blockwise(x, scale, z, axis, block)}], oracle="block-by-block numpy, float64")

    feats = {"op": "DequantizeLinear-21 blocked", "x": xtype, "shape": list(shape), "axis": axis, "block_size": block,
             "axis_multiple_of_block": int(shape[axis] % block == 0), "zero_point": int(zp), "dtype": dt}
    marks = ("quant", "dequantize") + (("fp16",) if dt == "fp16" else ())
    return Case(cid, "dequantize", feats, marks, f"{dt}-gather", make)


def cases(grid_name: str = "quick") -> list[Case]:
    out = []
    for xtype in TYPES:
        for axis, shape, block in [(1, (8, 64), 32), (1, (6, 48), 32), (0, (64, 8), 16)]:
            for zp in (False, True):
                for dtype in (np.float32, np.float16):
                    if grid_name == "quick" and dtype == np.float16 and shape != (8, 64):
                        continue
                    out.append(dq_case(xtype, shape, axis, block, zp, dtype))
    return out
