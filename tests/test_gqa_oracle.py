"""The GQA reference and its independent oracle: they agree on the grid (the reference column,
run by `pytest cases --backend reference`), and a reference with a bug fails against the oracle
before it can accuse a runtime."""

import numpy as np
import pytest

from cases import gqa
from harness.backends.reference import Reference
from harness.refops import gqa as ref_gqa
from harness.runner import run_cell


def _cases(*needles):
    out = [c for c in gqa.cases("quick") if all(n in c.id for n in needles)]
    assert out, needles
    return out


def test_quick_grid_is_large_and_covers_every_feature():
    cs = gqa.cases("quick")
    assert len(cs) >= 300
    feats = {k: {str(c.features[k]) for c in cs} for k in cs[0].features}
    for key, want in {"phase": {"prefill", "prefill-padded", "decode", "chunk", "multistep"},
                      "buffer": {"concat", "shared"}, "do_rotary": {"0", "1"}, "rotary_interleaved": {"0", "1"},
                      "sink": {"none", "smooth", "head"}, "packed_qkv": {"0", "1"}, "attention_bias": {"0", "1"},
                      "causal": {"0", "1"}, "qk_output": {"0", "1", "2"}, "ragged": {"0", "1"},
                      "dtype": {"fp32", "fp16", "bf16"}}.items():
        assert want <= feats[key], (key, feats[key])
    assert {"gemma3", "gemma4s", "gemma4g", "phi3", "qwen2", "llama"} <= feats["layout"]


def test_masks_leave_every_valid_row_compared():
    for c in _cases("prefill-padded", "plain", "fp32")[:2]:
        built = c.build()
        m = built.masks[0]["output"]
        b = built.feeds[0]["seqlens_k"] + 1
        for i, t in enumerate(b):
            assert m[i, :t].all() and not m[i, t:].any()


@pytest.mark.parametrize("needle", ["win3", "rotary-", "sinkhead", "softcap1.5", "multistep", "slidingcache",
                                    "kvint8-channel", "kvint4"])
def test_a_buggy_reference_fails_against_the_oracle(monkeypatch, needle):
    """Inject one classic bug per feature; the oracle must catch it on the grid's cases."""
    bugs = {
        # off-by-one window, one key short (one key more is R3's other reading: `ambiguous`, not a bug)
        "win3": ("window_reading", lambda w: w - 1 if w > 1 else None),
        "rotary-": ("_rope", lambda x, pos, cos, sin, il: x),  # rotary silently skipped
        "sinkhead": None,
        "softcap1.5": None,
        "multistep": None,
        # eviction by one position at a time instead of G at once (G = C - W + 1)
        "slidingcache": ("resident", lambda t, cap, w: min(t, cap)),
        # per-channel scales collapsed to the first one
        "kvint8-channel": ("_scale_rows", lambda sc, nkv, h: np.full((nkv, 1, h), float(np.ravel(sc)[0]))),
        # high nibble first
        "kvint4": ("unpack_int4", lambda p: np.flip(np.asarray(p).astype(np.int16).reshape(*np.shape(p), 1), -1)
                   .repeat(2, -1).reshape(*np.shape(p)[:-1], -1) % 16 - 8),
    }
    if bugs[needle]:
        name, fn = bugs[needle]
        monkeypatch.setattr(ref_gqa, name, fn)
    elif needle == "sinkhead":
        orig = ref_gqa.gqa
        monkeypatch.setattr(ref_gqa, "gqa", lambda *a, **k: orig(*a[:11], None, **k))  # sink ignored
    elif needle == "softcap1.5":
        orig = ref_gqa.gqa
        monkeypatch.setattr(ref_gqa, "gqa", lambda *a, **k: orig(*a, **{**k, "softcap": 0.0}))
    else:  # present written one row late: the next step reads a stale row
        orig = ref_gqa.gqa

        def late(*a, **k):
            out = list(orig(*a, **k))
            out[1] = np.roll(out[1], 1, axis=2)
            return tuple(out)

        monkeypatch.setattr(ref_gqa, "gqa", late)
    cases = [c for c in _cases(needle, "fp32") if needle != "slidingcache" or "slack" not in c.id][:6]
    statuses = [run_cell(c, Reference())["status"] for c in cases]
    assert "mismatch" in statuses, statuses
