"""zoo/build/common.py: the twin builders' shared helpers (no torch needed for these)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.refops import quant as refquant

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("zoo_build_common", ROOT / "zoo" / "build" / "common.py")
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def _quantise_4bit(w, block, rng, zero_points):
    """(N, K) float weight -> packed uint8 B, scales, packed zero points (or None)."""
    n, k = w.shape
    kb = -(-k // block)
    q = rng.integers(0, 16, size=(n, kb * block)).astype(np.uint8)
    scales = rng.uniform(0.01, 0.1, size=(n, kb)).astype(np.float32)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(n, kb, block // 2)
    zp = None
    if zero_points:
        z = rng.integers(0, 16, size=(n, kb + (kb % 2))).astype(np.uint8)
        zp = (z[:, 0::2] | (z[:, 1::2] << 4))
    return packed, scales, zp


@pytest.mark.parametrize("zero_points", [False, True])
@pytest.mark.parametrize("k", [64, 80])  # 80: a partial last block
def test_matmulnbits_dequant_matches_reference(k, zero_points):
    rng = np.random.default_rng(k + zero_points)
    n, block = 48, 32
    b, s, zp = _quantise_4bit(np.zeros((n, k)), block, rng, zero_points)
    attrs = {"K": k, "N": n, "bits": 4, "block_size": block}
    got = common.dequantize_matmulnbits(attrs, b, s, zp)
    want = refquant.matmul_nbits_weight(b, s, zp, None, k, n, 4, block)
    assert got.shape == (n, k) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("zero_points", [False, True])
def test_gather_block_quantized_dequant_matches_reference(zero_points):
    rng = np.random.default_rng(7)
    rows, cols, block = 10, 64, 32
    data = rng.integers(0, 256, size=(rows, cols // 2)).astype(np.uint8)
    scales = rng.uniform(0.01, 0.1, size=(rows, cols // block)).astype(np.float32)
    zp = rng.integers(0, 256, size=(rows, 1)).astype(np.uint8) if zero_points else None
    got = common.dequantize_gather_block_quantized({"bits": 4, "block_size": block, "quantize_axis": 1},
                                                   data, scales, zp)
    want = refquant.gbq_dequantize(data, scales, zp, 4, block, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def _tiny_model(path):
    rng = np.random.default_rng(0)
    n, k, block = 32, 64, 32
    b, s, _ = _quantise_4bit(np.zeros((n, k)), block, rng, False)
    inits = [numpy_helper.from_array(b, "w_q4"), numpy_helper.from_array(s.reshape(-1), "w_scales")]
    nodes = [helper.make_node("MatMulNBits", ["x", "w_q4", "w_scales"], ["y"], domain="com.microsoft",
                              name="/model/layers.0/attn/o_proj/MatMul_Q4", K=k, N=n, bits=4, block_size=block,
                              accuracy_level=4),
             helper.make_node("GroupQueryAttention", ["y", "", ""], ["z"], domain="com.microsoft", name="gqa",
                              num_heads=2, kv_num_heads=1, scale=0.0625)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, k])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(m, path)
    return b, s


def test_graph_summary_and_manifest(tmp_path):
    twin = tmp_path / "twin"
    (twin / "onnx").mkdir(parents=True)
    _tiny_model(twin / "onnx" / "model.onnx")
    (twin / "config.json").write_text("{}")
    man = common.write_manifest(twin, {"name": "t"})
    on_disk = json.loads((twin / "manifest.json").read_text())
    assert on_disk == man
    assert set(man["files"]) == {"onnx/model.onnx", "config.json"}
    assert man["files"]["config.json"] == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    g = man["graphs"]["onnx/model.onnx"]
    assert g["ops"] == {"com.microsoft.GroupQueryAttention": 1, "com.microsoft.MatMulNBits": 1}
    assert g["attention"][0]["attrs"] == {"num_heads": 2, "kv_num_heads": 1, "scale": 0.0625}
    assert g["attention"][0]["inputs"] == ["y", "", ""]
    assert g["quantized"][0]["attrs"]["accuracy_level"] == 4
    assert g["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 5, 64]}]


def test_quantized_weights_reads_the_graph(tmp_path):
    p = tmp_path / "m.onnx"
    b, s = _tiny_model(p)
    got = common.quantized_weights(p)
    op, w = got["/model/layers.0/attn/o_proj/MatMul_Q4"]
    assert op == "MatMulNBits"
    np.testing.assert_allclose(w, refquant.matmul_nbits_weight(b, s, None, None, 64, 32, 4, 32), rtol=1e-6)


def test_twin_tokens_deterministic_and_in_range():
    a = common.twin_tokens("gemma3-genai-current-q4", 256)
    assert a == common.twin_tokens("gemma3-genai-current-q4", 256)
    assert a != common.twin_tokens("phi3-genai-q4", 256)
    ids = common.token_sequence(a)
    assert len(a["prompt"][0]) == 24 and len(a["decode"]) == 4 and len(ids) == 28
    assert all(3 <= t < 256 for t in ids)


def test_builder_targets_split_and_fuse():
    class P:
        def __init__(self, rows):
            self.shape = (rows, 64)
    params = {"model.layers.1.self_attn.q_proj.weight": P(64), "model.layers.1.self_attn.k_proj.weight": P(32),
              "model.layers.1.self_attn.v_proj.weight": P(32), "model.layers.1.mlp.gate_up_proj.weight": P(256),
              "model.layers.1.mlp.down_proj.weight": P(64), "lm_head.weight": P(256)}
    assert common.builder_targets("/model/layers.1/attn/qkv_proj/MatMul_Q4", params) == [
        ("model.layers.1.self_attn.q_proj.weight", 0, 64), ("model.layers.1.self_attn.k_proj.weight", 0, 32),
        ("model.layers.1.self_attn.v_proj.weight", 0, 32)]
    assert common.builder_targets("/model/layers.1/mlp/up_proj/MatMul_Q4", params) == [
        ("model.layers.1.mlp.gate_up_proj.weight", 128, 128)]
    assert common.builder_targets("/model/layers.1/mlp/down_proj/MatMul_Q4", params) == [
        ("model.layers.1.mlp.down_proj.weight", 0, None)]
    assert common.builder_targets("/lm_head/MatMul_Q4", params) == [("lm_head.weight", 0, None)]
    assert common.builder_targets("/model/layers.1/attn/GroupQueryAttention", params) == []


def test_gather_block_quantized_data_through_reshape(tmp_path):
    """The builder's shared embedding feeds GatherBlockQuantized a Reshape of lm_head's packed
    MatMulNBits weight, not an initializer: the weights must still be found."""
    rng = np.random.default_rng(3)
    rows, cols, block = 8, 64, 32
    packed = rng.integers(0, 256, size=(rows, cols // block, block // 2)).astype(np.uint8)
    scales = rng.uniform(0.01, 0.1, size=(rows, cols // block)).astype(np.float32)
    inits = [numpy_helper.from_array(packed, "w_q4"), numpy_helper.from_array(scales, "w_scales"),
             numpy_helper.from_array(np.array([rows, cols // 2], np.int64), "shape")]
    nodes = [helper.make_node("Reshape", ["w_q4", "shape"], ["w2d"], name="/model/embed_tokens/Reshape"),
             helper.make_node("GatherBlockQuantized", ["w2d", "ids", "w_scales"], ["emb"], domain="com.microsoft",
                              name="/model/embed_tokens/GatherBlockQuantized", bits=4, block_size=block,
                              gather_axis=0, quantize_axis=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
                          [helper.make_tensor_value_info("emb", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14), helper.make_opsetid("com.microsoft", 1)]),
              tmp_path / "m.onnx")
    op, table = common.quantized_weights(tmp_path / "m.onnx")["/model/embed_tokens/GatherBlockQuantized"]
    assert op == "GatherBlockQuantized" and table.shape == (rows, cols)
    want = refquant.gbq_dequantize(packed.reshape(rows, cols // 2), scales, None, 4, block, 1)
    np.testing.assert_allclose(table, want, rtol=1e-6, atol=0)
