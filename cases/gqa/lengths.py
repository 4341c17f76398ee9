"""GQA at the lengths real prompts reach (issue 22).

Every other GQA case with a window has at most a handful of query tokens, and every single-step
decode into a shared max-length buffer is also ragged. Kernels dispatch on exactly the numbers
those cases never reach: how many key blocks a window masks out of a long prefill, a chunk whose
window starts inside the past, decode positions far past the window, and a shared buffer whose
batch is uniform. These scenarios cover them at the hub models' own geometry (Gemma-3 1B: 4 query
heads on 1 KV head, head 256, scale 1/16, window 512; Gemma-4 E2B sliding layers: 8 on 1, head
256, window 512; see docs/gqa.md "Lengths").

The quick grid keeps a few (a 128-token prefill under a 64-key window, one chunk, one decode past a
small window, the uniform shared-buffer decodes B=1 and B=2 beside their ragged twin); the full
grid sweeps S x window x phase. Appended after the other scenarios, so no earlier id moves.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .scenario import Scenario

GEMMA3 = dict(layout="gemma3", scale=0.0625)  # 1/sqrt(query_pre_attn_scalar=256)
#: Gemma-4 E2B's sliding layers use scale 1.0 (q/k norms do the scaling). On unit-variance inputs
#: that makes logits ~16 sigma (|max| ~73 at S = 600), where a plain float32 evaluation of the text
#: (float32 matmuls and softmax, numpy) already errs by 4.9e-5 on a few outputs near zero, beyond
#: the fp32-attention bound: so only the one-row decode keeps the hub's scale (plain float32 errs
#: by 1.2e-6 there), and the long prefills and chunks on this layout use the default 1/16.
GEMMA4S = dict(layout="gemma4s", scale=1.0)
GEMMA4S_GEOMETRY = dict(layout="gemma4s")


def _quick() -> list[Scenario]:
    return [
        # a prompt twice the window (the 600-token prompt across the 512 window is in the full grid:
        # it alone took 17 s on ort-web, measured)
        Scenario(phase="prefill", qlen=(128,), window=64, rotary=1, **GEMMA3),
        # chunked prefill: the window's left edge falls inside the past for the first 48 rows
        Scenario(phase="chunk", past=(64,), qlen=(64,), window=48, **GEMMA3),
        # a window of a few keys over a 128-token prompt (most key blocks masked out)
        Scenario("edge2", "prefill", qlen=(128,), window=4),
        # decode far past a small window
        Scenario("qwen2", "decode", past=(200,), qlen=(1,), window=16, rotary=1),
        # decode into a shared max-length buffer, uniform batch (B=1, B=2), beside a ragged one (W 3)
        Scenario("edge1", "decode", past=(11,), qlen=(1,), buffer="shared", slack=5),
        Scenario("edge1", "decode", past=(11, 11), qlen=(1, 1), buffer="shared", slack=5),
        Scenario("edge1", "decode", past=(4, 11), qlen=(1, 1), buffer="shared", slack=5, window=3),
        Scenario("edge1", "decode", past=(11, 11), qlen=(1, 1), buffer="shared", slack=5, window=3),
    ]


def _sweep() -> list[Scenario]:
    out: list[Scenario] = []
    # prefill: S x window, Gemma-3 layout (the hub export's node), rotary on
    for s in (48, 64, 128, 600):
        for w in (4, 16, 64, 128, 512):
            if w < s or w == 512:
                out.append(Scenario(phase="prefill", qlen=(s,), window=w, rotary=1, **GEMMA3))
    # a batch of two equal long prompts (uniform), and a right-padded pair
    out += [Scenario(phase="prefill", qlen=(128, 128), window=64, **GEMMA3),
            Scenario(phase="prefill-padded", qlen=(128, 80), window=64, **GEMMA3),
            Scenario(phase="prefill", qlen=(600,), window=512, **GEMMA4S_GEOMETRY),
            Scenario(phase="prefill", qlen=(600,), window=512, rotary=1, **GEMMA4S_GEOMETRY)]
    # chunked prefill on a past: chunks inside, straddling and far beyond the window
    for past, s, w in ((64, 64, 48), (128, 64, 64), (512, 88, 512), (448, 128, 512), (40, 128, 16), (300, 48, 512)):
        out.append(Scenario(phase="chunk", past=(past,), qlen=(s,), window=w, rotary=1, **GEMMA3))
    out += [Scenario(phase="chunk", past=(64, 64), qlen=(64, 64), window=48, **GEMMA3),
            Scenario(phase="chunk", past=(64, 20), qlen=(64, 64), window=48, **GEMMA3),
            Scenario(phase="chunk", past=(512,), qlen=(88,), window=512, **GEMMA4S_GEOMETRY)]
    # decode at positions past the window: just past it, one window on, and far
    for past, w in ((4, 4), (5, 4), (130, 4), (17, 16), (64, 16), (513, 512), (1030, 512)):
        out.append(Scenario(phase="decode", past=(past,), qlen=(1,), window=w, rotary=1, **GEMMA3))
    out += [Scenario(phase="decode", past=(700,), qlen=(1,), window=512, **GEMMA4S),
            Scenario(phase="decode", past=(600, 600), qlen=(1, 1), window=512, rotary=1, **GEMMA3)]
    # shared max-length buffer: uniform B=1 and B>1 beside ragged, at small and real lengths
    for past in ((11,), (11, 11), (11, 11, 11), (4, 11)):
        out.append(Scenario("edge1", "decode", past=past, qlen=(1,) * len(past), buffer="shared", slack=5))
    for past in ((600,), (600, 600), (600, 37)):
        for slack in (0, 24):
            out.append(Scenario(phase="decode", past=past, qlen=(1,) * len(past), buffer="shared", slack=slack,
                                window=512, rotary=1, **GEMMA3))
    out += [Scenario("qwen2", "decode", past=(200, 200), qlen=(1, 1), buffer="shared", slack=8, window=16),
            Scenario("qwen2", "decode", past=(200, 90), qlen=(1, 1), buffer="shared", slack=8, window=16),
            Scenario(phase="chunk", past=(64,), qlen=(64,), buffer="shared", slack=16, window=48, **GEMMA3),
            Scenario(phase="chunk", past=(64, 64), qlen=(64, 64), buffer="shared", slack=16, window=48, **GEMMA3),
            Scenario(phase="prefill", qlen=(64, 64), buffer="shared", slack=16, window=16, **GEMMA3),
            Scenario(phase="multistep", qlen=(520,), steps=3, buffer="shared", slack=8, window=512, rotary=1,
                     **GEMMA3),
            Scenario(phase="multistep", qlen=(510, 510), steps=4, window=512, rotary=1, **GEMMA3)]
    # float16 at the real geometry (Gemma-4 sliding layers are fp16 in the fp16 exports)
    out += [Scenario(phase="prefill", qlen=(128,), window=64, rotary=1, dtype=np.float16, **GEMMA3),
            Scenario(phase="decode", past=(600,), qlen=(1,), window=512, rotary=1, dtype=np.float16, **GEMMA3),
            Scenario(phase="decode", past=(600, 600), qlen=(1, 1), buffer="shared", slack=8, window=512,
                     rotary=1, dtype=np.float16, **GEMMA3)]
    return out


def length_scenarios(full: bool) -> list[Scenario]:
    """The quick grid's few; the full grid adds the sweep (duplicates are dropped by the caller)."""
    return [replace(sc, long=True) for sc in _quick() + (_sweep() if full else [])]
