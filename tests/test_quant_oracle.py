"""Quantised-op references against their lowering oracles: a reference with a classic bug
(wrong default zero point, high nibble first, no block padding) fails before it can accuse a
runtime."""

import numpy as np
import pytest

from cases import gather_block_quantized as gbq
from cases import matmulnbits as mnb
from harness.backends.reference import Reference
from harness.refops import quant
from harness.runner import run_cell


def statuses(cases):
    return [run_cell(c, Reference())["status"] for c in cases]


def test_counts_and_coverage():
    m, g = mnb.cases("quick"), gbq.cases("quick")
    assert len(m) >= 50 and len(g) >= 40
    assert {c.features["bits"] for c in m} == {2, 4, 8}
    assert {16, 32, 64, 128, 256, 512} <= {c.features["block_size"] for c in m}
    assert {"none", "packed", "float"} <= {c.features["zero_points"] for c in m}
    assert {0, 4} <= {c.features["accuracy_level"] for c in m}
    assert {"hand", "ort-quantizer"} == {c.features["source"] for c in m} == {c.features["source"] for c in g}
    assert {"uint8-4bit", "uint4", "int4", "uint8-8bit"} <= {c.features["data"] for c in g}
    assert {"int32", "int64", "neg", "2d", "oob"} <= {c.features["indices"] for c in g}


def test_high_nibble_first_is_caught(monkeypatch):
    orig = quant.unpack_bits

    def swapped(p, bits):
        v = orig(p, bits)
        per = 8 // bits
        return v.reshape(*v.shape[:-1], -1, per)[..., ::-1].reshape(v.shape)

    monkeypatch.setattr(quant, "unpack_bits", swapped)
    cs = [c for c in mnb.cases("quick") if c.features["bits"] == 4][:3]
    assert set(statuses(cs)) == {"mismatch"}


def test_wrong_default_zero_point_is_caught(monkeypatch):
    orig = quant.gbq_dequantize

    def zp0(data, scales, zero_points, bits, block, axis):
        if zero_points is None and np.asarray(data).dtype == np.uint8:
            zero_points = np.zeros(np.asarray(scales).shape, np.int64)
        return orig(data, scales, zero_points, bits, block, axis)

    monkeypatch.setattr(quant, "gbq_dequantize", zp0)
    cs = [c for c in gbq.cases("quick") if c.features["data"] == "uint8-8bit" and not c.features["zero_points"]]
    assert cs and set(statuses(cs)) == {"mismatch"}


@pytest.mark.parametrize("case_filter", [lambda c: c.features["k_multiple_of_block"] == 0])
def test_ignoring_the_block_layout_is_caught(monkeypatch, case_filter):
    orig = quant.matmul_nbits_weight

    def flat(b, scales, zp, g_idx, k, n, bits, block):
        kb = -(-k // block)
        w = orig(b, scales, zp, g_idx, k, n, bits, block)
        return np.roll(w, 1, axis=1) if kb > 1 else w  # weights shifted by one column

    monkeypatch.setattr(quant, "matmul_nbits_weight", flat)
    cs = [c for c in mnb.cases("quick") if case_filter(c)][:3]
    assert set(statuses(cs)) == {"mismatch"}
