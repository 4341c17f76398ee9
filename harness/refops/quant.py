"""com.microsoft.MatMulNBits and com.microsoft.GatherBlockQuantized, from ORT's schema text
(onnxruntime 1.32). Sentences relied on are quoted in docs/quant.md.

MatMulNBits: "dequantized_weight = (quantized_weight - zero_point) * scale"; B is "(N, k_blocks,
blob_size)" packed "along the K dimension … for 4 bits, the first 4 bits are stored in the
lower 4 bits of a byte"; zero_points "Packed (uint8) … (N, ceil(k_blocks * bits / 8)) … same
bit-packing method as Input B. Unpacked (same type as A) … (N, k_blocks). If not provided, a
default zero point is used: 2^(bits - 1)". Columns K..k_blocks*block_size of the last block are
padding. accuracy_level only lets a kernel quantise A: the reference computes exactly.

GatherBlockQuantized: output[...] = (data - zero_point) * scale gathered along gather_axis;
"If zero_points is not provided, the default value is 0 for int4/uint4, or 2^(bits-1) for
uint8"; uint8 data with bits < 8 is "packed along the last dimension (low-order bits first)";
"an out-of-range index produces zeros for the corresponding output slice".
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """uint8 along the last axis -> values, low-order bits first (8/bits values per byte)."""
    p = np.asarray(packed).astype(np.uint8)
    per = 8 // bits
    mask = (1 << bits) - 1
    parts = [(p >> (bits * j)) & mask for j in range(per)]
    return np.stack(parts, axis=-1).reshape(*p.shape[:-1], p.shape[-1] * per)


def matmul_nbits_weight(b, scales, zero_points, g_idx, k: int, n: int, bits: int, block_size: int) -> np.ndarray:
    """The dequantised (N, K) weight, float64."""
    k_blocks = (k + block_size - 1) // block_size
    q = unpack_bits(np.asarray(b).reshape(n, -1), bits).reshape(n, k_blocks * block_size)[:, :k].astype(np.float64)
    s = np.asarray(scales).astype(np.float64).reshape(n, k_blocks)
    if zero_points is None:
        zp = np.full((n, k_blocks), float(2 ** (bits - 1)))
    elif np.asarray(zero_points).dtype == np.uint8:
        zp = unpack_bits(np.asarray(zero_points).reshape(n, -1), bits)[:, :k_blocks].astype(np.float64)
    else:
        zp = np.asarray(zero_points).astype(np.float64).reshape(n, k_blocks)
    block = np.arange(k) // block_size if g_idx is None else np.asarray(g_idx).astype(np.int64)[:k]
    return (q - zp[:, block]) * s[:, block]


class MatMulNBits(OpRun):
    op_domain = "com.microsoft"

    def _run(self, A, B, scales, zero_points=None, g_idx=None, bias=None, K=None, N=None, bits=4, block_size=None,
             accuracy_level=0, weight_prepacked=0):
        if weight_prepacked:
            raise NotImplementedError("weight_prepacked layouts are EP-specific; the reference reads only layout 0")
        w = self._weight(B, scales, zero_points, g_idx, K, N, bits, block_size)
        y = A.astype(np.float64) @ w.T
        if bias is not None:
            y = y + bias.astype(np.float64)
        return (y.astype(A.dtype),)

    def _weight(self, *args) -> np.ndarray:
        """The dequantised weight, kept while the same weight bytes come back: a zoo twin's
        initializers reach every step unchanged, and dequantising Phi-3's 3072 x 9216 QKV weight
        again on each of five steps was half the reference's time there. The check compares
        bytes (a copy is kept), not identity, so an array changed in place is a new weight."""
        kept = getattr(self, "_kept", None)
        if kept is not None and kept[1] == args[4:] and all(map(_same_bytes, kept[0], args[:4])):
            return kept[2]
        w = matmul_nbits_weight(*args)
        self._kept = (tuple(None if a is None else np.array(a, copy=True) for a in args[:4]), args[4:], w)
        return w


def _same_bytes(kept, given) -> bool:
    if kept is None or given is None:
        return kept is None and given is None
    given = np.asarray(given)
    return kept.dtype == given.dtype and np.array_equal(kept, given)


def gbq_dequantize(data, scales, zero_points, bits: int, block_size: int, quantize_axis: int) -> np.ndarray:
    """The whole dequantised table, float64, in the data's logical shape."""
    data = np.asarray(data)
    packed = data.dtype == np.uint8 and bits < 8
    q = unpack_bits(data, bits) if packed else data.astype(np.int64)
    q = q.astype(np.float64)
    axis = quantize_axis % q.ndim
    s = np.asarray(scales).astype(np.float64)
    if zero_points is None:
        zp = np.zeros_like(s) if data.dtype != np.uint8 else np.full_like(s, float(2 ** (bits - 1)))
    else:
        z = np.asarray(zero_points)
        z = unpack_bits(z, bits) if (z.dtype == np.uint8 and bits < 8) else z.astype(np.int64)
        zp = z.astype(np.float64)
    d = q.shape[axis]
    block = np.arange(d) // block_size
    s_full = np.take(s, block, axis=axis)
    zp_full = np.take(zp[tuple(slice(0, n) for n in s.shape)], block, axis=axis)
    return (q - zp_full) * s_full


class GatherBlockQuantized(OpRun):
    op_domain = "com.microsoft"

    def _run(self, data, indices, scales, zero_points=None, bits=4, block_size=128, quantize_axis=1, gather_axis=0):
        if data.dtype.name.startswith("float8") or data.dtype.name.startswith("float4"):
            raise NotImplementedError("FP8/FP4 data is not implemented in the reference")
        table = gbq_dequantize(data, scales, zero_points, bits, block_size, quantize_axis)
        axis = gather_axis % table.ndim
        size = table.shape[axis]
        idx = np.asarray(indices).astype(np.int64)
        valid = (idx >= -size) & (idx < size)
        safe = np.where(valid, np.where(idx < 0, idx + size, idx), 0)
        out = np.take(table, safe, axis=axis)
        shape = [1] * out.ndim
        shape[axis: axis + idx.ndim] = idx.shape
        out = np.where(valid.reshape(shape), out, 0.0)
        return (out.astype(scales.dtype),)


OPS = [MatMulNBits, GatherBlockQuantized]
