"""com.microsoft.Attention (GPT-2/BERT exports through ORT's transformer optimizer): packed QKV
projection weights, mask_index in its several forms, past/present as one tensor. From ORT's
schema text (onnxruntime 1.32.0; docs/mha.md#attention).

Schema text relied on:
- "The weights for input projection of Q, K and V are merged. The data is stacked on the second
  dimension. Its shape is (input_hidden_size, hidden_size + hidden_size + v_hidden_size)."
  bias "(hidden_size + hidden_size + v_hidden_size) for input projection".
- "When qkv_hidden_sizes is omitted, the weights' second dimension must be divisible by three."
- mask_index: "Besides raw attention mask with shape (batch_size, total_sequence_length) or
  (batch_size, sequence_length, total_sequence_length) with value 0 for masked and 1 otherwise,
  we support other two formats: When input has right-side padding, mask_index is one dimension
  with shape (batch_size), where value is actual sequence length excluding padding. When input
  has left-side padding, mask_index has shape (2 * batch_size), where the values are the
  exclusive end positions followed by the inclusive start positions."
- "When unidirectional is 1, each token only attends to previous tokens."
- past "(2, batch_size, num_heads, past_sequence_length, head_size)"; present "(2, batch_size,
  num_heads, total_sequence_length, head_size)".
- attention_bias "additional add to QxK' with shape (batch_size or 1, num_heads or 1,
  sequence_length, total_sequence_length)".

Readings: as MultiHeadAttention's (docs/mha.md M1-M3): a query after P past tokens is at P + i;
masked keys get mask_filter_value (default -10000) added.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from .mha import multi_head_attention


def mask_index_bias(mask: np.ndarray, batch: int, seq: int, total: int, filter_value: float) -> np.ndarray:
    """(B, 1, S|1, T) additive bias from mask_index in the four forms the text names."""
    m = np.asarray(mask)
    j = np.arange(total)[None, :]
    if m.ndim == 1 and m.shape[0] == batch:  # right padding: key lengths
        keep = (j < m[:, None])[:, None, :]
    elif m.ndim == 1 and m.shape[0] == 2 * batch:  # left padding: ends (exclusive), then starts (inclusive)
        keep = ((j < m[:batch, None]) & (j >= m[batch:, None]))[:, None, :]
    elif m.ndim == 2:
        keep = (m != 0)[:, None, :]
    elif m.ndim == 3:
        keep = m != 0
    else:
        raise NotImplementedError(f"reference Attention: mask_index of shape {m.shape} (docs/mha.md)")
    return np.where(keep, 0.0, float(filter_value))[:, None, :, :]


def attention(input, weights, bias=None, mask_index=None, past=None, attention_bias=None, *, num_heads: int,
              unidirectional: int = 0, qkv_hidden_sizes=None, scale: float | None = None,
              mask_filter_value: float = -10000.0):
    x = np.asarray(input, np.float64)
    w = np.asarray(weights, np.float64)
    d_q, d_k, d_v = (list(qkv_hidden_sizes) if qkv_hidden_sizes else [w.shape[1] // 3] * 3)
    proj = x @ w
    if bias is not None:
        proj = proj + np.asarray(bias, np.float64)
    q, k, v = proj[..., :d_q], proj[..., d_q:d_q + d_k], proj[..., d_q + d_k:d_q + d_k + d_v]
    b, s, _ = x.shape
    p = 0 if past is None else past.shape[3]
    add = None if attention_bias is None else np.asarray(attention_bias, np.float64)
    if mask_index is not None:
        mb = mask_index_bias(mask_index, b, s, p + s, mask_filter_value)
        add = mb if add is None else add + mb
    pk = pv = None
    if past is not None:
        pk, pv = past[0], past[1]
    out, kh, vh = multi_head_attention(q, k, v, attention_bias=add, past_key=pk, past_value=pv,
                                       num_heads=num_heads, unidirectional=unidirectional, scale=scale)
    # "When there is past state, hidden dimension for Q, K and V shall be the same": present
    # (one tensor for K and V) exists only when their head sizes agree
    return out, (np.stack([kh, vh]) if kh.shape == vh.shape else None)


class Attention(OpRun):
    op_domain = "com.microsoft"

    # onnx.reference also fills in the attributes of ai.onnx Attention (is_causal, softcap, ...):
    # the com.microsoft op has none of them, so they are absorbed and ignored
    def _run(self, input, weights, bias=None, mask_index=None, past=None, attention_bias=None,  # noqa: A002
             past_sequence_length=None, num_heads=None, unidirectional=0, qkv_hidden_sizes=None, scale=None,
             mask_filter_value=None, do_rotary=0, past_present_share_buffer=0, rotary_embedding_dim=0,
             **_ai_onnx_attributes):
        if do_rotary or past_present_share_buffer or past_sequence_length is not None:
            raise NotImplementedError("reference Attention: do_rotary and buffer sharing are not implemented "
                                      "(docs/mha.md)")
        out, present = attention(input, weights, bias, mask_index, past, attention_bias, num_heads=int(num_heads),
                                 unidirectional=int(unidirectional or 0), qkv_hidden_sizes=qkv_hidden_sizes,
                                 scale=scale, mask_filter_value=-10000.0 if mask_filter_value is None
                                 else mask_filter_value)
        dt = input.dtype
        return out.astype(dt), (np.zeros((0,), dt) if present is None else present.astype(dt))


OPS = [Attention]
