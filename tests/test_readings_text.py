"""Issue 23 item 1: every chosen reading is one the operator text allows, a reading the text rules
out is never accepted (not even as `ambiguous`), and the two GQA readings that were wrong
(position_ids on a first prompt, local_window_size = 0) are re-derived here in plain numpy from
the schema sentences, independently of harness/refops and of the case oracles."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cases.gqa.grid import scenarios
from cases.gqa.build import make_case
from harness import readings
from harness.backends.reference import Reference
from harness.compare import judge_readings
from harness.refops import gqa as ref_gqa
from harness.runner import run_cell
from harness.tolerances import get

GAPS = "gqa/prefill-rotary-posids-gaps-b2-edge1-h2kv1-d16-s5-fp32"
ROWOFFSET = "gqa/prefill-rotary-posids-rowoffset-b2-edge1-h2kv1-d16-s5-fp32"
WIN0 = ("gqa/prefill-win0-b1-edge1-h2kv1-d16-s8-fp32", "gqa/decode-win0-b1-edge1-h2kv1-d16-s1-past7-fp32")


def _case(case_id):
    return next(make_case(sc) for sc in scenarios("quick") if sc.case_id() == case_id)


def test_every_entry_names_its_supporting_sentence_and_no_reading_is_both_allowed_and_excluded():
    for a in readings.AMBIGUITIES:
        assert a.support.strip(), a.id
        allowed = {a.chosen.name, *(r.name for r in a.others)}
        assert not allowed & {r.name for r in a.excluded}, a.id
        for r in a.excluded:
            assert readings.is_excluded(r.name) and "ruled out" in r.evidence, (a.id, r.name)
        assert not readings.is_excluded(a.chosen.name), a.id


def test_the_quoted_sentences_are_in_the_schema_text():
    """Each `support` and each excluded reading's quote is the schema's own words (onnxruntime's
    offline schemas), not a paraphrase: the quoted fragments occur in the op's documentation."""
    ort = pytest.importorskip("onnxruntime")
    from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema

    docs: dict[str, str] = {}
    for s in get_all_operator_schema():
        text = (s.doc or "") + " ".join((i.description or "") for i in list(s.inputs) + list(s.outputs))
        text += " ".join((v.description or "") for v in s.attributes.values())
        docs[f"{s.domain}.{s.name}"] = docs.get(f"{s.domain}.{s.name}", "") + " " + text
    norm = lambda t: re.sub(r"\s+", " ", t.replace("`", ""))  # noqa: E731
    checked = 0
    for a in readings.AMBIGUITIES:
        doc = norm(docs.get(a.op, ""))
        if not doc.strip():
            continue
        for text in (a.support, *(r.evidence for r in a.excluded)):
            for frag in re.findall(r'"([^"]{12,})"', text):
                for piece in norm(frag).split(" … "):
                    assert piece.strip() in doc, (a.id, ort.__version__, piece)
                    checked += 1
    assert checked >= 8


def test_gqa_cases_never_carry_an_excluded_reading_as_an_alternate():
    for case_id in (GAPS, ROWOFFSET, *WIN0):
        built = _case(case_id).build()
        assert not any(readings.is_excluded(n) for n in built.alternates), case_id
        assert all(readings.is_excluded(n) for n in built.excluded), case_id


def test_judge_readings_names_an_excluded_reading_and_keeps_the_mismatch():
    tol = get("fp32-pointwise")
    exp = [{"y": np.zeros(4)}]
    masks = [{}]
    other = [{"y": np.ones(4)}]
    verdict, j = judge_readings(other, exp, masks, tol, {}, {"a ruled-out reading": other})
    assert verdict == "mismatch" and j.metrics["matches_excluded_reading"] == "a ruled-out reading"
    assert "rules out (a ruled-out reading)" in j.message
    verdict, j = judge_readings(other, exp, masks, tol, {"an allowed one": other}, {})
    assert verdict == "ambiguous" and "matches_excluded_reading" not in j.metrics


# ---- R6: position_ids on a first prompt, derived from the text -------------------------------


def _rope_half(x, cos, sin):
    """x: (..., H) rotated by the half-split form on the channels 2*cos.shape[-1] (the GQA text's
    cos_cache shape (max_sequence_length, head_size / 2))."""
    r = 2 * cos.shape[-1]
    x1, x2 = x[..., : r // 2], x[..., r // 2: r]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., r:]], axis=-1)


def _first_prompt_attention(feeds, n, nkv, positions):
    """Causal GQA over a first prompt, written from the schema sentences: q and k rotated at
    `positions` (B, S), kv head h // (n // nkv), scale 1/sqrt(head_size)."""
    q = feeds["query"].astype(np.float64)
    k = feeds["key"].astype(np.float64)
    v = feeds["value"].astype(np.float64)
    b, s, _ = q.shape
    h = q.shape[2] // n
    q, k, v = q.reshape(b, s, n, h), k.reshape(b, s, nkv, h), v.reshape(b, s, nkv, h)
    cos, sin = feeds["cos_cache"].astype(np.float64), feeds["sin_cache"].astype(np.float64)
    out = np.zeros((b, s, n, h))
    for i in range(b):
        c, sn = cos[positions[i]][:, None, :], sin[positions[i]][:, None, :]
        qi, ki = _rope_half(q[i], c, sn), _rope_half(k[i], c, sn)
        for hq in range(n):
            kv = hq // (n // nkv)
            logits = qi[:, hq] @ ki[:, kv].T / np.sqrt(h)
            logits = np.where(np.tril(np.ones((s, s), bool)), logits, -np.inf)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            out[i, :, hq] = (p / p.sum(axis=1, keepdims=True)) @ v[i, :, kv]
    return out.reshape(b, s, n * h)


def test_first_prompt_uses_position_ids_first_element_derived_independently():
    """The chosen reading, re-derived: every row of every entry rotated at position_ids[0, 0] + s.
    The case's expected output is that (to float64 noise) and not what every id gives."""
    built = _case(GAPS).build()
    feeds = built.feeds[0]
    pos = feeds["position_ids"]
    assert pos[0, 0] == 0 and (pos[:, 1:] - pos[:, :-1] != 1).any()  # gaps: the readings differ
    s = pos.shape[1]
    first = np.broadcast_to(pos[0, 0] + np.arange(s), pos.shape)
    want = _first_prompt_attention(feeds, 2, 1, first)
    every = _first_prompt_attention(feeds, 2, 1, pos)
    got = built.expected[0]["output"]
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(got - every).max() > 0.1
    assert np.abs(built.excluded[readings.POS_EVERY_ELEMENT][0]["output"] - every).max() < 1e-5


def _patched_positions(monkeypatch, which):
    def positions(position_ids, b, q_valid):
        p = np.asarray(position_ids)
        if which == "every":
            return p[b, :q_valid].astype(np.int64)
        return int(p[b, 0]) + np.arange(q_valid, dtype=np.int64)  # "row"
    monkeypatch.setattr(ref_gqa, "first_prompt_positions", positions)


def test_a_backend_using_every_position_id_on_a_first_prompt_fails(monkeypatch):
    """The reading the sentence excludes: a mismatch naming it (it was a plain pass before)."""
    case = _case(GAPS)
    assert run_cell(case, Reference())["status"] == "pass"
    _patched_positions(monkeypatch, "every")
    rec = run_cell(case, Reference())
    assert rec["status"] == "mismatch", rec["message"]
    assert rec["metrics"]["matches_excluded_reading"] == readings.POS_EVERY_ELEMENT
    assert "rules out" in rec["message"]


def test_first_of_each_row_is_the_other_reading_the_text_allows(monkeypatch):
    case = _case(GAPS)
    _patched_positions(monkeypatch, "row")
    rec = run_cell(case, Reference())
    assert rec["status"] == "ambiguous" and rec["metrics"]["matches_reading"] == readings.POS_FIRST_OF_ROW


def test_where_every_id_equals_each_rows_first_the_cell_reads_as_that_allowed_reading(monkeypatch):
    """rowoffset ids are consecutive within each row, so using every id gives what "the first
    element of each row" gives: indistinguishable, and allowed."""
    case = _case(ROWOFFSET)
    _patched_positions(monkeypatch, "every")
    rec = run_cell(case, Reference())
    assert rec["status"] == "ambiguous" and rec["metrics"]["matches_reading"] == readings.POS_FIRST_OF_ROW


def test_ort_cpu_first_prompt_positions_read_as_the_chosen_reading():
    """ORT CPU rotates a first prompt at position_ids[0, 0] + s: `pass` now (it was `ambiguous`
    while the reference used every id)."""
    pytest.importorskip("onnxruntime")
    from harness.backends.ort import OrtCpu

    for case_id in (GAPS, ROWOFFSET):
        rec = run_cell(_case(case_id), OrtCpu())
        assert rec["status"] == "pass", (case_id, rec["message"])


# ---- R4: local_window_size = 0 -----------------------------------------------------------------


def test_window_zero_is_the_current_key_only_derived_independently():
    """With only its own key visible, a query's attention output is its own value row (softmax over
    one key is 1): derived without any attention code, from the feeds."""
    built = _case(WIN0[0]).build()
    feeds = built.feeds[0]
    v = feeds["value"].astype(np.float64)  # (1, 8, kv 1 * 16)
    want = np.concatenate([v, v], axis=-1)  # two q heads share kv head 0
    assert np.abs(built.expected[0]["output"] - want).max() < 1e-6


def test_a_backend_treating_window_zero_as_unused_fails_naming_it(monkeypatch):
    """"-1 meaning unused": 0 read as no window is ruled out; it was the chosen reading before."""
    monkeypatch.setattr(ref_gqa, "window_reading", lambda w: None if w <= 0 else w)
    for case_id in WIN0:
        rec = run_cell(_case(case_id), Reference())
        assert rec["status"] == "mismatch", (case_id, rec["message"])
        assert rec["metrics"]["matches_excluded_reading"] == readings.WINDOW0_UNUSED


def test_ort_cpu_window_zero_reads_as_the_other_allowed_reading():
    """ORT CPU 1.32.0 lets a local_window_size=0 query see no key and writes 0: `ambiguous`, naming
    that reading (both before and after the change of the chosen reading)."""
    pytest.importorskip("onnxruntime")
    from harness.backends.ort import OrtCpu

    for case_id in WIN0:
        rec = run_cell(_case(case_id), OrtCpu())
        assert rec["status"] == "ambiguous", (case_id, rec["message"])
        assert rec["metrics"]["matches_reading"] == readings.WINDOW0_NO_KEY
