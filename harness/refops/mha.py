"""com.microsoft.MultiHeadAttention, from ORT's schema text (onnxruntime 1.32.0; docs/mha.md).

Schema text relied on:
- "Multi-Head Self/Cross Attention. Bias from input projection is included."
- query "(batch_size, sequence_length, hidden_size)", key "(batch_size, kv_sequence_length,
  hidden_size)", value "(batch_size, kv_sequence_length, v_hidden_size)"; bias "(hidden_size +
  hidden_size + v_hidden_size) from input projection" (added to Q, K, V in that order).
- past_key / past_value "(batch_size, num_heads, past_sequence_length, head_size)"; present_*
  "(batch_size, num_heads, total_sequence_length, head_size)": past rows then the new ones.
- key_padding_mask: "When its shape is (batch_size, kv_sequence_length), value 0 means padding
  or 1 otherwise. When key has right-side padding, its shape could be (batch_size): it is
  actual length of each key sequence excluding paddings." Also (batch_size,
  total_sequence_length) with the same 0/1 meaning.
- attention_bias "bias added to QxK' with shape (batch_size or 1, num_heads or 1,
  sequence_length, total_sequence_length)".
- unidirectional: "Whether every token can only attend to previous tokens."
- scale: "Default value is 1/sqrt(head_size)"; mask_filter_value: "The value to be filled in the
  attention mask. Default value is -10000.0f".

Readings (docs/mha.md): query token i of a step after P past tokens is at position P + i, and
"previous tokens" includes itself (key j visible iff j <= P + i). A masked key (padding) gets
mask_filter_value added to its score; a unidirectional mask hides later keys completely. Every
case keeps at least one visible key per row, where the two ways of masking agree.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun


def _heads(x: np.ndarray, n: int) -> np.ndarray:
    b, s, d = x.shape
    return x.reshape(b, s, n, d // n).transpose(0, 2, 1, 3)


def padding_bias(mask: np.ndarray, batch: int, total: int, filter_value: float) -> np.ndarray:
    """(B, 1, 1, T) additive bias from a key_padding_mask of shape (B,) or (B, T)."""
    m = np.asarray(mask)
    if m.ndim == 1:  # actual key lengths (right padding)
        keep = np.arange(total)[None, :] < m[:, None]
    else:
        keep = m.reshape(batch, total) != 0
    return np.where(keep, 0.0, float(filter_value))[:, None, None, :]


def multi_head_attention(query, key, value, bias=None, key_padding_mask=None, attention_bias=None,
                         past_key=None, past_value=None, *, num_heads: int, unidirectional: int = 0,
                         scale: float | None = None, mask_filter_value: float = -10000.0):
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (query, key, value))
    d, dv = q.shape[-1], v.shape[-1]
    if bias is not None:
        b64 = np.asarray(bias, dtype=np.float64)
        q, k, v = q + b64[:d], k + b64[d:2 * d], v + b64[2 * d:2 * d + dv]
    n = num_heads
    qh, kh, vh = _heads(q, n), _heads(k, n), _heads(v, n)
    if past_key is not None:
        kh = np.concatenate([np.asarray(past_key, np.float64), kh], axis=2)
        vh = np.concatenate([np.asarray(past_value, np.float64), vh], axis=2)
    bsz, _, s, h = qh.shape
    t = kh.shape[2]
    sc = (1.0 / np.sqrt(h)) if not scale else float(scale)
    scores = np.einsum("bnsh,bnth->bnst", qh, kh) * sc
    if attention_bias is not None:
        scores = scores + np.asarray(attention_bias, np.float64)
    if key_padding_mask is not None:
        scores = scores + padding_bias(key_padding_mask, bsz, t, mask_filter_value)
    if unidirectional:
        p = t - s
        later = np.arange(t)[None, :] > (p + np.arange(s))[:, None]
        scores = np.where(later[None, None], -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    w = np.exp(scores)
    w = w / w.sum(axis=-1, keepdims=True)
    out = np.einsum("bnst,bnth->bnsh", w, vh)
    return out.transpose(0, 2, 1, 3).reshape(bsz, s, -1), kh, vh


class MultiHeadAttention(OpRun):
    op_domain = "com.microsoft"

    def _run(self, query, key=None, value=None, bias=None, key_padding_mask=None, attention_bias=None,
             past_key=None, past_value=None, past_sequence_length=None, cache_indirection=None,
             num_heads=None, unidirectional=0, scale=None, mask_filter_value=None):
        if key is None or key.ndim != 3 or past_sequence_length is not None or cache_indirection is not None:
            raise NotImplementedError("reference MultiHeadAttention: only separate 3D query/key/value "
                                      "without buffer sharing or beam search (docs/mha.md)")
        out, pk, pv = multi_head_attention(
            query, key, value, bias, key_padding_mask, attention_bias, past_key, past_value,
            num_heads=int(num_heads), unidirectional=int(unidirectional or 0), scale=scale,
            mask_filter_value=-10000.0 if mask_filter_value is None else mask_filter_value)
        dt = query.dtype
        qk = np.zeros((1,), dt)  # the qk output is not produced by cases
        return out.astype(dt), pk.astype(dt), pv.astype(dt), qk


OPS = [MultiHeadAttention]
