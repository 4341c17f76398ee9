"""Honest verdicts: fp16 rounding the op itself forces (item 2), `ambiguous` for another reading
the operator text allows (item 3), and refusals the text requires (item 4)."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from cases import gqa
from harness import readings
from harness.backends.base import Backend, Session
from harness.backends.reference import Reference
from harness.refops import gqa as ref_gqa
from harness.runner import run_cell

from .conftest import ROOT

HEAD512 = "gqa/prefill-rotary-scale1-b1-gemma4g-h8kv1-d512-s8-fp16"


def _case(case_id):
    return next(c for c in gqa.cases("full") if c.id == case_id)


def _attend_rounded(feeds, round_q: bool, round_k: bool) -> np.ndarray:
    """Written here from the schema text, not from harness/refops or the oracle: half-split rotary
    at positions 0..S-1 in float64, the rotated Q/K optionally rounded to float16, causal softmax."""
    n, nkv, h = gqa.LAYOUTS["gemma4g"]
    q = feeds["query"].astype(np.float64).reshape(-1, n, h)
    k = feeds["key"].astype(np.float64).reshape(-1, nkv, h)
    v = feeds["value"].astype(np.float64).reshape(-1, nkv, h)
    s = q.shape[0]
    cos = feeds["cos_cache"].astype(np.float64)[:s, None, :]
    sin = feeds["sin_cache"].astype(np.float64)[:s, None, :]

    def rot(x):
        x1, x2 = x[..., : h // 2], x[..., h // 2:]
        return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)

    qr, kr = rot(q), rot(k)
    if round_q:
        qr = qr.astype(np.float16).astype(np.float64)
    if round_k:
        kr = kr.astype(np.float16).astype(np.float64)
    out = np.zeros((s, n, h))
    causal = np.tril(np.ones((s, s), bool))
    for hq in range(n):
        logits = np.where(causal, qr[:, hq] @ kr[:, hq * nkv // n].T * 1.0, -np.inf)  # scale 1.0
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        out[:, hq] = (p / p.sum(axis=1, keepdims=True)) @ v[:, hq * nkv // n]
    return out.reshape(1, s, n * h)


def test_fp16_oracle_rounds_the_rotated_k_that_present_key_stores():
    """Item 2: the expected output is the attention over the rotated K (and Q) rounded to
    float16 — present_key is float16, and the attention reads the cache as stored. The
    unrounded attention differs from it by more than the fp16 bound, which is why the old
    oracle failed correct kernels."""
    built = _case(HEAD512).build()
    exp = built.expected[0]["output"].astype(np.float64)
    rounded = _attend_rounded(built.feeds[0], True, True)
    unrounded = _attend_rounded(built.feeds[0], False, False)
    assert np.abs(exp - rounded).max() < 1e-9
    assert np.abs(exp - unrounded).max() > 5e-3  # the rounding matters at logits ~50
    # present_key: the rotated K rounded once to float16, exactly
    n, nkv, h = gqa.LAYOUTS["gemma4g"]
    k = built.feeds[0]["key"].astype(np.float64).reshape(-1, nkv, h)
    s = k.shape[0]
    cos, sin = (built.feeds[0][x].astype(np.float64)[:s, None, :] for x in ("cos_cache", "sin_cache"))
    kr = np.concatenate([k[..., :h // 2] * cos - k[..., h // 2:] * sin, k[..., :h // 2] * sin + k[..., h // 2:] * cos], -1)
    pk = built.expected[0]["present_key"].astype(np.float64)[0, 0]
    assert np.array_equal(pk.astype(np.float16), kr[:, 0].astype(np.float16))


def test_fp16_head512_passes_on_ort_cpu():
    """Item 2: ORT CPU rounds the rotated Q and K to float16 and was a false mismatch (max |Δ|
    0.019 against the unrounded oracle); within 1 ulp of the rounded one."""
    pytest.importorskip("onnxruntime")
    from harness.backends.ort import OrtCpu

    rec = run_cell(_case(HEAD512), OrtCpu())
    assert rec["status"] == "pass", rec["message"]
    assert rec["metrics"]["max_abs"] < 2e-3


def test_fp16_other_precisions_are_named_readings():
    """Item 2/3: a kernel that keeps Q unrounded, or rotates in float16 arithmetic (tract), is not
    wrong: both are catalogued readings carried by the case."""
    alts = _case(HEAD512).build().alternates
    assert set(alts) == {readings.ROTATED_Q_UNROUNDED, readings.ROTARY_IN_T}
    assert all(readings.find_reading(k) for k in alts)


def test_a_backend_matching_another_reading_is_ambiguous_not_mismatch(monkeypatch):
    """Item 3: the reference with R3's other window reading (W preceding keys + the current one)
    gets `ambiguous` and the reading's name; with a window no reading allows, `mismatch`."""
    case = next(c for c in gqa.cases("quick") if "win3" in c.id and c.id.endswith("fp32"))
    monkeypatch.setattr(ref_gqa, "window_reading", lambda w: w + 1 if w > 0 else None)
    rec = run_cell(case, Reference())
    assert rec["status"] == "ambiguous", rec["message"]
    assert rec["metrics"]["matches_reading"] == readings.WINDOW_W_PLUS_CURRENT
    monkeypatch.setattr(ref_gqa, "window_reading", lambda w: w + 2 if w > 0 else None)
    assert run_cell(case, Reference())["status"] == "mismatch"


@pytest.mark.parametrize("needle", ["win0", "kvint4", "kvint8", "win3-b1", "rotary-scale1-b1-gemma4g"])
def test_every_alternate_a_case_carries_is_catalogued(needle):
    """Item 3: cases name readings of harness/readings.py, so the report can render each one."""
    cs = [c for c in gqa.cases("quick") if needle in c.id][:2]
    assert cs
    for c in cs:
        for name in c.build().alternates:
            assert readings.find_reading(name), (c.id, name)


def test_matmulnbits_g_idx_reading_is_catalogued():
    from cases import matmulnbits

    c = next(c for c in matmulnbits.cases("quick") if c.features.get("g_idx"))
    assert all(readings.find_reading(n) for n in c.build().alternates)


def test_pytest_passes_an_ambiguous_cell_with_a_warning():
    """Item 3 (conftest): ORT CPU's local_window_size=0 cells ran and match a reading the text
    allows: the items pass and the warnings summary names the reading."""
    pytest.importorskip("onnxruntime")
    p = subprocess.run([sys.executable, "-m", "pytest", "cases/gqa", "-k", "prefill-win0-b1-edge1", "--backend",
                        "ort-cpu", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-W", "always"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:]
    assert "AmbiguousReading" in p.stdout and readings.WINDOW0_NO_KEY in p.stdout


class _FailingRun(Backend):
    """Loads, then raises while running (as ORT's CPU EP does on q_norm_weight)."""

    name = "test-failing-run"

    def __init__(self, provider=None):
        if provider:
            self.provider = provider

    def available(self):
        return True, ""

    def version(self):
        return "test"

    def prepare(self, model):
        class S(Session):
            def run(self, feeds):
                raise RuntimeError("q_norm_weight / k_norm_weight inputs are not supported")
        return S()


def test_a_refusal_the_text_requires_is_unsupported_by_provider_not_name():
    """Item 4: the q/k-norm cases declare the R10 refusal; an EP the text says must reject the node
    gets `unsupported` quoting the sentence, an EP that must honour it (CUDA) or a backend that is
    no execution provider keeps `error`."""
    case = next(c for c in gqa.cases("quick") if "qknorm" in c.id)
    assert case.refusals == (readings.QK_NORM_CPU.id,)
    cpu = run_cell(case, _FailingRun("CPUExecutionProvider"))
    assert cpu["status"] == "unsupported"
    assert cpu["metrics"]["required_refusal"] == readings.QK_NORM_CPU.id
    assert "must reject the node" in cpu["message"] and "not supported" in cpu["message"]
    assert run_cell(case, _FailingRun("CUDAExecutionProvider"))["status"] == "error"
    assert run_cell(case, _FailingRun())["status"] == "error"
    plain = next(c for c in gqa.cases("quick") if "qknorm" not in c.id)
    assert run_cell(plain, _FailingRun("CPUExecutionProvider"))["status"] == "error"


def _rec(backend, status, **metrics):
    return {"case_id": "gqa/prefill-win0-x", "family": "gqa", "features": {"local_window_size": 0}, "marks": ["gqa"],
            "backend": backend, "backend_version": "v", "status": status, "tolerance": {"profile": "fp32-attention"},
            "message": "", "seconds": 0.0, "repro": None,
            "metrics": {"readings": [readings.WINDOW0_NO_KEY], **metrics}}


def test_report_counts_and_colours_ambiguous_apart_and_lists_each_ambiguity():
    """Item 3 (report): `ambiguous` is its own column and colour, and the section "where the
    operator text is ambiguous" says which reading each backend takes, quoting the schema."""
    from harness.report.matrix import summary
    from harness.report import ambiguity_table, render

    recs = [_rec("a", "pass"), _rec("b", "ambiguous", matches_reading=readings.WINDOW0_NO_KEY), _rec("c", "mismatch"),
            _rec("d", "unsupported")]
    assert summary(recs)["b"] == {"ambiguous": 1} and summary(recs)["c"] == {"mismatch": 1}
    r4 = next(a for a in ambiguity_table(recs) if a["id"] == "R4")
    assert dict(r4["rows"]) == {"a": {"chosen": 1}, "b": {readings.WINDOW0_NO_KEY: 1}, "c": {"neither": 1},
                                "d": {"not compared": 1}}
    r3 = next(a for a in ambiguity_table(recs) if a["id"] == "R3")
    assert r3["rows"] == []  # no cell carries R3's readings
    from harness.report.cells import unpacked

    html = render(recs, env={"packages": {}})
    assert "Where the operator text is ambiguous" in html and 'class="cell st-' in html
    grid = unpacked(re.search(r'id="grid-data">(.*?)</script>', html, re.S).group(1))
    assert [grid["statuses"][c[0]] for row in grid["rows"] for c in row[3] if c] == ["pass", "ambiguous", "mismatch",
                                                                                     "unsupported"]
    assert ".st-ambiguous" in html and "Default value is -1 meaning unused." in html


def test_int4_cache_expected_bytes_derived_independently():
    """R14 (unsigned nibbles, offset 8), from the feeds alone: past rows are kept byte for byte and
    each new row holds clip(round_half_even(k / scale), -8, 7) + 8, low nibble first."""
    case = next(c for c in gqa.cases("quick") if c.id == "gqa/decode-kvint4-channel-ragged-b2-edge1-h2kv1-d16-s1-past5_8-fp32")
    built = case.build()
    f, exp = built.feeds[0], built.expected[0]
    n, nkv, h = gqa.LAYOUTS["edge1"]
    k = f["key"].astype(np.float64).reshape(2, 1, nkv, h)
    scale = f["k_scale"].astype(np.float64).reshape(nkv, h)
    for b, p in enumerate([5, 8]):
        assert np.array_equal(exp["present_key"][b, :, :p], f["past_key"][b, :, :p])
        nib = (np.clip(np.round(k[b, 0] / scale), -8, 7) + 8).astype(np.int64)  # (nkv, h)
        want = (nib[:, 0::2] + 16 * nib[:, 1::2]).astype(np.uint8)
        assert np.array_equal(exp["present_key"][b, :, p], want)
