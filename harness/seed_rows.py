"""Named rows of the report: the gaps the seed documents and the research name, each a
predicate over a cell's family and features. A row with no case says so."""

from __future__ import annotations

from typing import Any, Callable

Pred = Callable[[str, dict[str, Any]], bool]


def _gqa(f: Callable[[dict[str, Any]], bool]) -> Pred:
    return lambda fam, ft: fam == "gqa" and f(ft)


SEED_ROWS: list[tuple[str, str, Pred]] = [
    ("GQA do_rotary=1", "seed 000: tract 'internal rotary (do_rotary) is unsupported'",
     _gqa(lambda f: f.get("do_rotary") == 1)),
    ("GQA past KV (decode / chunk / multi-step)", "seed 000: 'any past_key/past_value rejected (prefill only)'",
     _gqa(lambda f: f.get("phase") in ("decode", "chunk", "multistep"))),
    ("GQA positions from seqlens_k (ragged batch)", "seed 000: 'indexes cos/sin at positions derived from the per-batch length'",
     _gqa(lambda f: f.get("ragged") == 1)),
    ("GQA do_rotary + past + window 512, Gemma-3 1B layout", "seed 000: the exact GQA node of model_q4.onnx",
     _gqa(lambda f: f.get("layout") == "gemma3" and f.get("do_rotary") == 1 and f.get("local_window_size") == 512)),
    ("GatherBlockQuantized", "seed 000: quantized embedding lookup 'also unhandled'",
     lambda fam, f: fam == "gather_block_quantized"),
    ("MatMulNBits 4-bit, block 32", "seed 000: model_q4.onnx (int4 MatMulNBits, block_size 32)",
     lambda fam, f: fam == "matmulnbits" and f.get("bits") == 4 and f.get("block_size") == 32),
    ("GQA head 512 / scale 1.0 (Gemma-4 global layers)", "seed 001: variable head dims 256/512; ORT #28195 fp16 NaN",
     _gqa(lambda f: f.get("layout") == "gemma4g")),
    ("GQA sliding head 256 (Gemma-4 sliding layers)", "seed 001: sliding (256) vs full attention (512)",
     _gqa(lambda f: f.get("layout") == "gemma4s")),
    ("Gemma-4 per-layer inputs / KV-cache sharing", "seed 001: PLE and 15-of-35 shared KV caches (zoo twins)",
     lambda fam, f: fam == "zoo" and "gemma4" in str(f.get("model", ""))),
    ("Static KV cache buffer (shared past/present)", "seed 002: static KV cache, prefill/decode split",
     _gqa(lambda f: f.get("buffer") == "shared")),
    ("SimplifiedLayerNormalization on non-centred input", "research #15: tract maps it to a mean-subtracting LayerNorm",
     lambda fam, f: fam == "norm" and f.get("op") == "simplified" and f.get("input") == "largemean"),
    ("SkipSimplifiedLayerNormalization with bias", "research #15: input_skip_bias_sum and bias",
     lambda fam, f: fam == "norm" and f.get("op") == "skipsimplified" and f.get("bias") == 1),
]


def seed_table(records: list[dict[str, Any]], backends: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name, source, pred in SEED_ROWS:
        cells: dict[str, dict[str, Any]] = {}
        n_cases = set()
        for r in records:
            try:
                hit = pred(r.get("family", ""), r.get("features") or {})
            except Exception:  # noqa: BLE001 - a malformed record is not a match
                hit = False
            if not hit:
                continue
            n_cases.add(r["case_id"])
            c = cells.setdefault(r["backend"], {"counts": {}, "example": None})
            c["counts"][r["status"]] = c["counts"].get(r["status"], 0) + 1
            if r["status"] != "pass" and (c["example"] is None or r["status"] == "mismatch"):
                c["example"] = {"case_id": r["case_id"], "status": r["status"], "message": (r.get("message") or "")[:300]}
        for c in cells.values():
            counts = c["counts"]
            total = sum(counts.values())
            c["total"] = total
            c["worst"] = ("pass" if counts.get("pass") == total else
                          next(s for s in ("crash", "mismatch", "error", "timeout", "unsupported", "unavailable", "skip", "pass")
                               if counts.get(s)))
        rows.append({"name": name, "source": source, "cases": len(n_cases), "cells": cells})
    return rows


def feature_table(records: list[dict[str, Any]], max_values: int = 8) -> dict[str, list[dict[str, Any]]]:
    """family -> rows (feature=value) with per-backend pass/total: where in the grid a backend breaks."""
    by_family: dict[str, dict[tuple[str, str], dict[str, list[int]]]] = {}
    values: dict[tuple[str, str], set] = {}
    for r in records:
        for k, v in (r.get("features") or {}).items():
            values.setdefault((r.get("family", ""), k), set()).add(str(v))
    for r in records:
        fam = r.get("family", "")
        for k, v in (r.get("features") or {}).items():
            if len(values[(fam, k)]) > max_values or len(values[(fam, k)]) < 2:
                continue
            cell = by_family.setdefault(fam, {}).setdefault((k, str(v)), {}).setdefault(r["backend"], [0, 0])
            cell[1] += 1
            cell[0] += r["status"] == "pass"
    out: dict[str, list[dict[str, Any]]] = {}
    for fam, rows in by_family.items():
        out[fam] = [{"feature": k, "value": v, "cells": cells} for (k, v), cells in sorted(rows.items())]
    return out
