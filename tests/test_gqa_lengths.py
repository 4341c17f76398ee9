"""The GQA cases at real prompt lengths (cases/gqa/lengths.py, issue 22): the oracle agrees with a
second computation written here from the schema sentences (numpy, float64; neither the reference
nor the oracle's lowering), at lengths and windows no other case reaches, and the quick grid holds
what the issue asks of it (long windowed prompts, decode past a window, uniform shared buffers
beside ragged ones)."""

from __future__ import annotations

import numpy as np
import pytest

from cases.gqa.build import make_case
from cases.gqa.grid import scenarios
from cases.gqa.scenario import Scenario


def text_gqa(feeds: dict, n: int, nkv: int, h: int, window: int, scale: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """GroupQueryAttention without rotary, from the text: T = seqlens_k[b] + 1; "Q = min(S, T)";
    "P = T - Q"; new rows go to cache rows [P, T); "Query row s is at absolute position P + s";
    key j is visible from position p iff j <= p and, with local_window_size W > 0, j > p - W
    (R3: W keys including the current one); head i reads KV head i // (n / nkv); scale defaults
    to 1/sqrt(head_size). Returns the output and, per entry, the cache rows [0, T) of present_key."""
    q = np.asarray(feeds["query"], np.float64)
    b, s, _ = q.shape
    qh = q.reshape(b, s, n, h)
    kh = np.asarray(feeds["key"], np.float64).reshape(b, s, nkv, h)
    vh = np.asarray(feeds["value"], np.float64).reshape(b, s, nkv, h)
    out = np.zeros((b, s, n, h))
    keys = []
    for e in range(b):
        t = int(feeds["seqlens_k"][e]) + 1
        rows = min(s, t)
        p0 = t - rows
        k_all, v_all = np.zeros((t, nkv, h)), np.zeros((t, nkv, h))
        if p0:
            k_all[:p0] = np.asarray(feeds["past_key"], np.float64)[e, :, :p0].transpose(1, 0, 2)
            v_all[:p0] = np.asarray(feeds["past_value"], np.float64)[e, :, :p0].transpose(1, 0, 2)
        k_all[p0:] = kh[e, :rows]
        v_all[p0:] = vh[e, :rows]
        keys.append(k_all.transpose(1, 0, 2))
        j = np.arange(t)
        for r in range(rows):
            pos = p0 + r
            visible = j <= pos
            if window > 0:
                visible &= j > pos - window
            for hq in range(n):
                hk = hq // (n // nkv)
                logits = k_all[visible, hk] @ qh[e, r, hq] * (scale or 1.0 / np.sqrt(h))
                w = np.exp(logits - logits.max())
                out[e, r, hq] = (w / w.sum()) @ v_all[visible, hk]
    return out.reshape(b, s, n * h), keys


LONG_NO_ROTARY = [
    Scenario("edge2", "prefill", qlen=(128,), window=4),  # 124 of 128 rows see a clipped window
    Scenario("gemma3", "chunk", past=(64,), qlen=(64,), window=48, scale=0.0625),  # window edge inside the past
    Scenario("gemma3", "chunk", past=(64, 20), qlen=(64, 64), window=48, scale=0.0625),  # ragged chunk
    Scenario("edge1", "decode", past=(11, 11), qlen=(1, 1), buffer="shared", slack=5, window=3),  # uniform shared
    Scenario("qwen2", "decode", past=(200, 90), qlen=(1, 1), buffer="shared", slack=8, window=16),  # ragged shared
    Scenario("gemma4s", "decode", past=(700,), qlen=(1,), window=512, scale=1.0),  # decode 188 past the window
]


@pytest.mark.parametrize("sc", LONG_NO_ROTARY, ids=lambda sc: sc.case_id())
def test_oracle_matches_the_text_written_out_at_real_lengths(sc):
    case = make_case(sc)
    built = case.make(np.random.default_rng(case.seed))
    feeds, expected = built.feeds[0], built.expected[0]
    n, nkv, h = sc.heads
    out, keys = text_gqa(feeds, n, nkv, h, sc.window, sc.scale)
    for e, q in enumerate(sc.qlen):  # output rows past an entry's Q are unspecified
        np.testing.assert_allclose(expected["output"][e, :q], out[e, :q], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(expected["present_key"][e, :, : keys[e].shape[1]], keys[e], rtol=0, atol=0)
    if sc.buffer == "shared":  # present keeps the buffer's length (R2), not past + 1
        assert expected["present_key"].shape[2] == feeds["past_key"].shape[2]


def test_oracle_stays_float64_at_600_tokens():
    """The oracle judges float32 backends at S = 600 under a 512 window: its own arithmetic must
    be float64 (a float32 oracle would err by ~1e-6 here, a twentieth of the fp32 bound)."""
    sc = next(s for s in scenarios("full") if s.long and s.phase == "prefill" and s.s == 600 and s.window == 512
              and s.layout == "gemma3")
    case = make_case(sc)
    built = case.make(np.random.default_rng(case.seed))
    assert built.expected[0]["output"].dtype == np.float64
    assert built.expected[0]["output"].shape == (1, 600, 4 * 256)


def _single_step_shared(grid: str) -> list[Scenario]:
    return [s for s in scenarios(grid) if s.buffer == "shared" and s.phase == "decode"]


@pytest.mark.parametrize("grid", ["quick", "full"])
def test_uniform_shared_buffer_decodes_stand_beside_ragged_ones(grid):
    """A shared-buffer bug must be told from a ragged-batch bug: some single-step shared decode is
    uniform with B = 1, some uniform with B > 1, and one ragged shares their layout and slack."""
    shared = _single_step_shared(grid)
    uniform = [s for s in shared if not s.ragged]
    assert any(s.batch == 1 for s in uniform), "no B=1 decode into a shared buffer"
    assert any(s.batch > 1 for s in uniform), "no uniform B>1 decode into a shared buffer"
    assert any(s.ragged and (s.layout, s.slack) == (u.layout, u.slack) for s in shared for u in uniform)


@pytest.mark.parametrize("grid", ["quick", "full"])
def test_windows_are_reached_at_real_lengths(grid):
    """A windowed prompt long enough that the window masks out whole key blocks, a chunk whose
    window starts inside its past, and a decode far past its window."""
    win = [s for s in scenarios(grid) if s.window > 0]
    assert any(s.phase == "prefill" and s.s >= 2 * s.window and s.s >= 64 for s in win)
    assert any(s.phase == "chunk" and s.s >= 48 and s.past[0] > s.window - s.s for s in win)
    assert any(s.phase == "decode" and min(s.past) >= 4 * s.window for s in win)


def test_every_quick_length_case_keeps_its_mark_in_the_full_grid():
    """`-m gqa_long` on the full grid selects every length case of the quick grid: a length
    scenario whose id an earlier scenario already holds lends that case its mark (the full grid
    had dropped one, keeping the earlier scenario without gqa_long)."""
    quick = {sc.case_id() for sc in scenarios("quick") if sc.long}
    full = {sc.case_id() for sc in scenarios("full") if sc.long}
    assert quick and not quick - full, sorted(quick - full)
    assert [sc.case_id() for sc in scenarios("full")] == list(dict.fromkeys(sc.case_id() for sc in scenarios("full")))
