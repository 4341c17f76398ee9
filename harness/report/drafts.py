"""Upstream issue drafts, step one: which cells are findings, and each build's failing cells
grouped by what explains them (harness/report/bugs.py then makes one draft per bug across the
builds of one implementation; harness/report/draft_text.py writes what a draft says).

A finding is a cell where the backend is at fault: wrong values (`mismatch`), a crash, a hang,
a failure while running, or a refusal the operator text does not require. Not a finding: a
pass, an `ambiguous` cell (the text is what to fix), a refusal the text requires, a backend
that is not there, the reference column (this project's own spec), or a case the harness
itself could not build or compare.

Cells are one bug when they share the backend, the op, the kind of failure and a feature
signature: the smallest set of the case's features (a value, or "set" for a feature away from
its off value) that every cell of that op on that backend carrying it fails the same way
(up to three features; failing that, the purest such set). Every ragged-batch decode wrong on
tract is then one draft titled by `ragged`, not thirty-five drafts titled by head layouts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from itertools import combinations
from typing import Any

from ..verdict import Status

KINDS = {"mismatch": "gives wrong values", "crash": "crashes the process", "timeout": "hangs",
         "error": "fails while running", "unsupported": "refuses the model"}
SET = "set"  # a feature away from its off value, whatever the value
_OFF = (0, 0.0, -1, False, None, "", "none", "default", "off")
_HARNESS_FAILURE = ("onnx-compat could not",)
MAX_SIGNATURE = 3
MAX_VALUE = 40  # characters

# family -> (domain, op) where the case's features do not name the op
_FAMILY_OPS = {"gqa": ("com.microsoft", "GroupQueryAttention"), "matmulnbits": ("com.microsoft", "MatMulNBits"),
               "gather_block_quantized": ("com.microsoft", "GatherBlockQuantized"),
               "dequantize": ("", "DequantizeLinear"), "layernorm": ("com.microsoft", "SkipLayerNormalization")}
_OP_FEATURES = {"simplified": ("", "SimplifiedLayerNormalization"),
                "skipsimplified": ("com.microsoft", "SkipSimplifiedLayerNormalization"),
                "rms23": ("", "RMSNormalization"), "gelu": ("com.microsoft", "Gelu"),
                "biasgelu": ("com.microsoft", "BiasGelu"), "fastgelu": ("com.microsoft", "FastGelu"),
                "quickgelu": ("com.microsoft", "QuickGelu"), "attention": ("", "Attention"),
                "rms_normalization": ("", "RMSNormalization"), "rotary_embedding": ("", "RotaryEmbedding"),
                "dequantizelinear": ("", "DequantizeLinear")}
_DOCS = {"gqa": "docs/gqa.md", "matmulnbits": "docs/quant.md", "gather_block_quantized": "docs/quant.md",
         "dequantize": "docs/quant.md", "activation": "docs/activations.md", "zoo": "docs/zoo.md"}
# a case feature -> the schema attributes/inputs whose text it exercises
_ALIASES = {"sink": ("smooth_softmax", "head_sink"), "packed_qkv": ("query",), "kv_quant": ("k_quant_type", "k_scale"),
            "qk_norm": ("q_norm_weight",), "ragged": ("seqlens_k",), "phase": ("past_key",),
            "buffer": ("past_key", "sliding_window_cache"), "rotary_dim": ("rotary_embedding_dim",),
            "zero_points": ("zero_points",), "indices": ("indices",), "quantize_axis": ("quantize_axis",),
            "gather_axis": ("gather_axis",), "data": ("data",), "x": ("x",), "outputs": ("input_skip_bias_sum",),
            "bias": ("bias", "input_skip_bias_sum")}


def is_finding(rec: dict[str, Any]) -> bool:
    st = rec.get("status")
    if st not in KINDS or rec.get("backend") == "reference":
        return False
    if st == "unsupported" and (rec.get("metrics") or {}).get("required_refusal"):
        return False
    if (rec.get("metrics") or {}).get("killed_from_outside"):  # a user's kill or the OOM killer, not the backend
        return False
    return not (st == "error" and str(rec.get("message") or "").startswith(_HARNESS_FAILURE))


def spec_fails(records: list[dict[str, Any]]) -> set[str]:
    """Cases whose reference cell is a mismatch: the spec disagrees with the oracle there."""
    return {r["case_id"] for r in records if r.get("backend") == "reference" and r.get("status") == "mismatch"}


def op_of(rec: dict[str, Any]) -> tuple[str, str]:
    """(domain, op type) the case exercises; a zoo case is named by its model."""
    f, fam = rec.get("features") or {}, rec.get("family", "")
    op = f.get("op")
    if isinstance(op, str) and op in _OP_FEATURES:
        return _OP_FEATURES[op]
    if isinstance(op, str) and op:  # "com.microsoft.RotaryEmbedding", "ai.onnx.RotaryEmbedding-23", "DequantizeLinear-21 blocked"
        name = op.split()[0].split("-")[0]
        dom, _, typ = name.rpartition(".")
        dom = "" if dom in ("", "ai.onnx") else dom
        # an extracted node names its op without a domain: a contrib op is the same op either way
        return ("com.microsoft", typ) if not dom and typ in _contrib_only() else (dom, typ)
    if fam in _FAMILY_OPS:
        return _FAMILY_OPS[fam]
    if fam == "zoo":
        return "model", str(f.get("model") or rec.get("case_id"))
    return "", fam or "?"


@cache
def _contrib_only() -> frozenset[str]:
    """Op types that exist in com.microsoft and not in the standard domain (ORT's schemas)."""
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema
    except Exception:  # noqa: BLE001 - without onnxruntime the names stay as the case wrote them
        return frozenset()
    by = {}
    for s in get_all_operator_schema():
        by.setdefault(s.name, set()).add(s.domain)
    return frozenset(n for n, doms in by.items() if "com.microsoft" in doms and "" not in doms)


def op_label(op: tuple[str, str]) -> str:
    dom, typ = op
    return typ if dom in ("", "model") else f"{dom}.{typ}"


def _scalar(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v, sort_keys=True)


@dataclass
class Draft:
    backend: str
    op: tuple[str, str]
    kind: str
    signature: tuple[tuple[str, Any], ...]
    cells: list[dict[str, Any]] = field(default_factory=list)
    pure: bool = True  # every informative cell carrying the signature fails this way
    matched: int = 0  # informative cells of this op on this backend carrying the signature (failing ones included)
    id: str = ""
    title: str = ""

    @property
    def case_ids(self) -> list[str]:
        return [c["case_id"] for c in self.cells]


def _items(rec: dict[str, Any], offs: dict[str, Any]) -> set[tuple[str, Any]]:
    """The case's features as candidate signature items; a long value (a zoo model's op list,
    its exporter's command) names a model, not a feature, and is left out."""
    out = set()
    for k, v in (rec.get("features") or {}).items():
        v = _scalar(v)
        if len(str(v)) > MAX_VALUE:
            continue
        out.add((k, v))
        if k in offs and v != offs[k]:
            out.add((k, SET))
    return out


def _bucket(rec: dict[str, Any]) -> tuple[str, str]:
    """Wrong values are one kind; a refusal, error or crash is told apart by the backend's first
    line, paths and digits folded ('48 columns' and '40 columns', or the same load error on two
    temporary model paths, are one refusal)."""
    st = rec["status"]
    return (st, "") if st == "mismatch" else (st, _fold(_first_line(rec.get("message"))))


def _fold(line: str) -> str:
    return re.sub(r"\d+", "#", re.sub(r"(?:/[\w.+-]+){2,}", "<path>", line))


def group(records: list[dict[str, Any]]) -> list[Draft]:
    """One draft per (backend, op, kind of failure, signature); the drafts with the most cells first.

    A signature is judged on the cells it can speak for: those that agree with the text (pass,
    ambiguous) and those failing this same way. A cell refused for another reason (bf16 refused
    before softcap is looked at) says nothing about whether softcap works.

    Wrong values on a case the reference gets wrong too are not drafted: the spec itself
    disagrees with the oracle there, so the model (its exporter) or the oracle differs, not the
    runtime (see `spec_fails`)."""
    by_scope: dict[tuple[str, tuple[str, str]], list[dict[str, Any]]] = {}
    for r in records:
        by_scope.setdefault((r["backend"], op_of(r)), []).append(r)
    doubtful = spec_fails(records)
    drafts: dict[tuple, Draft] = {}
    for (backend, op), recs in by_scope.items():
        failing = [i for i, r in enumerate(recs) if is_finding(r)
                   and not (r["status"] == "mismatch" and r["case_id"] in doubtful)]
        if not failing:
            continue
        offs: dict[str, Any] = {}
        for r in recs:
            for k, v in (r.get("features") or {}).items():
                if _scalar(v) in _OFF and not isinstance(v, bool):
                    offs.setdefault(k, _scalar(v))
        items = [_items(r, offs) for r in recs]
        masks: dict[tuple[str, Any], int] = {}
        for i, its in enumerate(items):
            for it in its:
                masks[it] = masks.get(it, 0) | (1 << i)
        fine = sum(1 << i for i, r in enumerate(recs) if Status(r["status"]).acceptable)
        bucket_mask: dict[tuple[str, str], int] = {}
        for i in failing:
            b = _bucket(recs[i])
            bucket_mask[b] = bucket_mask.get(b, 0) | (1 << i)
        caches: dict[tuple[str, str], dict] = {}
        for b, bm in bucket_mask.items():
            cells = [i for i in failing if bm >> i & 1]
            cache = caches.setdefault(b, {})
            if b[0] != "mismatch":  # one refusal/error/crash message is one bug: the signature names it
                common = sorted(set.intersection(*(items[i] for i in cells)), key=str)
                sig, matched, pure = _signature(common, masks, fine | bm, bm, cache)
                if not pure:  # no feature set of these cells explains the refusal: name none
                    sig, matched, pure = (), 0, False
                d = drafts.setdefault((backend, op, b), Draft(backend, op, b[0], sig, pure=pure, matched=matched))
                d.cells.extend(recs[i] for i in cells)
                continue
            for i in cells:  # wrong values: each cell by the feature set that explains it
                sig, matched, pure = _signature(sorted(items[i], key=str), masks, fine | bm, bm, cache)
                d = drafts.setdefault((backend, op, b, sig), Draft(backend, op, b[0], sig, pure=pure, matched=matched))
                d.cells.append(recs[i])
    out = sorted(drafts.values(), key=lambda d: (-len(d.cells), d.backend, op_label(d.op), d.kind, str(d.signature)))
    for n, d in enumerate(out, 1):
        d.id = f"{n:03d}-{_slug(d.backend)}-{_slug(d.op[1])}-{d.kind}"
    return out


def _signature(items, masks, informative, bad, cache) -> tuple[tuple, int]:
    """The item set (at most MAX_SIGNATURE) whose informative cells all fail this way and that
    covers the most failing cells (ties: fewer items, then fewer exact values); failing purity,
    the purest. Returns it and how many informative cells carry it."""
    best, best_key = (), None
    for size in range(MAX_SIGNATURE + 1):
        for combo in combinations(items, size):
            if len({k for k, _ in combo}) < size:
                continue  # a feature's value and its "set" item say the same thing twice
            key = combo
            if key not in cache:
                m = informative
                for it in combo:
                    m &= masks[it]
                n = m.bit_count()
                cache[key] = ((m & bad).bit_count() / n if n else 0.0, (m & bad).bit_count(), n)
            purity, covered, n = cache[key]
            exact = sum(v != SET for _, v in combo)
            rank = (purity, covered, -size, -exact)
            if best_key is None or rank > best_key:
                best, best_key = combo, rank
    purity, _, n = cache[best]
    return tuple(sorted(best, key=str)), n, purity == 1.0


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()[:40] or "x"


def _describe_sig(sig, pure: bool = True) -> str:
    if not sig:
        return "every case" if pure else "some cases (no feature set of them explains it)"
    return ", ".join(f"{k} set" if v == SET else f"{k}={v}" for k, v in sig)


def _first_line(s: Any) -> str:
    s = str(s or "").strip()
    return s.splitlines()[0][:200] if s else ""
