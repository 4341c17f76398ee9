"""com.microsoft.RotaryEmbedding.

Schema text relied on:
- input: "3D tensor with shape (batch_size, sequence_length, hidden_size) or 4D with shape
  (batch_size, num_heads, sequence_length, head_size)".
- position_ids: "1D tensor with shape (1) or 2D tensor with shape (batch_size,
  sequence_length)"; cos_cache/sin_cache: "(max_sequence_length, head_size / 2) or
  (max_sequence_length, rotary_embedding_dim / 2)".
- interleaved: "Default value is 0 (False), meaning the first half of the input consists of
  real values and the second half consists of imaginary values".
- num_heads: "Must use with rotary_embedding_dim"; rotary_embedding_dim default 0.

Readings chosen:
- position_ids of shape (1) is a start offset: token s of every batch entry is at position
  offset + s (the form ORT-GenAI exports use).
- rotary_embedding_dim = 0 means the whole head is rotated; with rotary_embedding_dim = r < head
  only the first r channels of each head are rotated, the rest pass through.
- 3D input with num_heads = 0: head_size = 2 * cos_cache.shape[1] (only meaningful without a
  partial rotary dim).
- `scale` and `is_packed_batching` are not given a meaning by the text; cases do not set them.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, interleaved: bool) -> np.ndarray:
    """Rotate the last axis of x (already cut to the rotary dim) by per-row cos/sin (…, r/2)."""
    x = x.astype(np.float64)
    if interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x1 * cos - x2 * sin
        out[..., 1::2] = x1 * sin + x2 * cos
        return out
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def positions(position_ids: np.ndarray, batch: int, seq: int) -> np.ndarray:
    p = np.asarray(position_ids).astype(np.int64)
    if p.size == 1 and p.ndim <= 1:
        return np.broadcast_to(p.reshape(1, 1) + np.arange(seq, dtype=np.int64)[None, :], (batch, seq))
    return p.reshape(batch, seq)


def apply_rotary_bsnh(x: np.ndarray, pos: np.ndarray, cos_cache: np.ndarray, sin_cache: np.ndarray,
                      rotary_dim: int, interleaved: bool) -> np.ndarray:
    """x: (B, S, N, H) float64; pos: (B, S) -> rotated copy, float64."""
    head = x.shape[-1]
    r = rotary_dim or head
    cos = cos_cache.astype(np.float64)[pos][:, :, None, : r // 2]
    sin = sin_cache.astype(np.float64)[pos][:, :, None, : r // 2]
    out = x.astype(np.float64).copy()
    out[..., :r] = rotate(x[..., :r], cos, sin, interleaved)
    return out


class RotaryEmbedding(OpRun):
    op_domain = "com.microsoft"

    def _run(self, input, position_ids, cos_cache, sin_cache, interleaved=0,  # noqa: A002
             is_packed_batching=0, num_heads=0, rotary_embedding_dim=0, scale=1.0):
        if is_packed_batching:
            raise NotImplementedError("is_packed_batching=1 has no meaning in the schema text")
        x = input
        if x.ndim == 4:  # (B, N, S, H)
            b, n, s, h = x.shape
            xs = np.transpose(x, (0, 2, 1, 3))
        else:
            b, s, hidden = x.shape
            if num_heads:
                n = num_heads
            else:
                h = 2 * cos_cache.shape[1]
                n = hidden // h
            h = hidden // n
            xs = x.reshape(b, s, n, h)
        pos = positions(position_ids, b, s)
        out = apply_rotary_bsnh(xs, pos, cos_cache, sin_cache, rotary_embedding_dim, bool(interleaved))
        if x.ndim == 4:
            out = np.transpose(out, (0, 2, 1, 3))
        else:
            out = out.reshape(b, s, n * h)
        return (out.astype(x.dtype),)


OPS = [RotaryEmbedding]
