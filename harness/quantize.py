"""Block quantisation of weights for cases: hand-built (every corner of the format) and through
onnxruntime's own MatMulNBitsQuantizer (what exporters actually emit)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Values along the last axis -> uint8, low-order bits first (inverse of refops.quant.unpack_bits)."""
    v = np.asarray(values).astype(np.uint8)
    per = 8 // bits
    if v.shape[-1] % per:
        pad = per - v.shape[-1] % per
        v = np.concatenate([v, np.zeros((*v.shape[:-1], pad), np.uint8)], axis=-1)
    v = v.reshape(*v.shape[:-1], -1, per)
    out = np.zeros(v.shape[:-1], np.uint8)
    for j in range(per):
        out |= (v[..., j] & ((1 << bits) - 1)) << (bits * j)
    return out


def ort_quantize(model: onnx.ModelProto, bits: int, block_size: int, symmetric: bool, accuracy_level: int | None,
                 op_types=("MatMul",), quant_axes=None, qdq: bool = False, channelwise: bool = False) -> onnx.ModelProto:
    """Run onnxruntime's MatMulNBitsQuantizer (RTN, the default algorithm) on a float model; `qdq`
    emits DequantizeLinear → MatMul (QuantFormat.QDQ) instead of MatMulNBits."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    extra = {"quant_format": QuantFormat.QDQ, "channel_wised_quantize": channelwise} if qdq else {}
    cfg = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric, accuracy_level=accuracy_level,
                                       op_types_to_quantize=tuple(op_types), quant_axes=quant_axes, bits=bits, **extra)
    level = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        q = MatMulNBitsQuantizer(model, algo_config=cfg)
        q.process()
    finally:
        logging.disable(level)
    out = q.model.model
    out.producer_name = "onnx-compat (onnxruntime MatMulNBitsQuantizer" + (", QDQ)" if qdq else ")")
    return out


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def node_attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
