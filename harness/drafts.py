"""Upstream issue drafts: the confirmed findings of a run, grouped into one draft per bug.

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
import statistics
from dataclasses import dataclass, field
from functools import cache
from itertools import combinations
from pathlib import Path
from typing import Any

from .verdict import Status

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
        return ("" if dom in ("", "ai.onnx") else dom), typ
    if fam in _FAMILY_OPS:
        return _FAMILY_OPS[fam]
    if fam == "zoo":
        return "model", str(f.get("model") or rec.get("case_id"))
    return "", fam or "?"


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


# ---------------------------------------------------------------------------------------------
# what a draft says


def _describe_sig(sig, pure: bool = True) -> str:
    if not sig:
        return "every case" if pure else "some cases (no feature set of them explains it)"
    return ", ".join(f"{k} set" if v == SET else f"{k}={v}" for k, v in sig)


def _first_line(s: Any) -> str:
    s = str(s or "").strip()
    return s.splitlines()[0][:200] if s else ""


def _common_message(cells) -> str:
    """The backend's most common first line, digits folded so '48 columns' and '40 columns' agree."""
    counts: dict[str, list[str]] = {}
    for c in cells:
        line = _first_line(c.get("message"))
        counts.setdefault(_fold(line), []).append(line)
    if not counts:
        return ""
    return max(counts.values(), key=len)[0]


def _as_float(v) -> float:
    """A metric as a number: results.jsonl holds an infinite NMSE (a reference of zeros) as "inf"."""
    try:
        return float(v or 0)
    except (TypeError, ValueError):
        return 0.0


def title_of(d: Draft) -> str:
    op = op_label(d.op)
    if not d.pure and d.signature:
        what = f"{op}, {len(d.cells)} of {d.matched} cases with {_describe_sig(d.signature)}"
    elif d.signature:
        what = f"{op} with {_describe_sig(d.signature)}"
    else:
        what = f"{op} (every case)" if d.pure else op
    if d.kind == "mismatch":
        ms = [c.get("metrics") or {} for c in d.cells]
        if d.op[0] == "model":  # a zoo model: logits against the oracle, teacher-forced
            top1 = min((m["top1"] for m in ms if isinstance(m.get("top1"), (int, float))), default=None)
            return f"{what}: logits differ from the oracle's" + (f" (top-1 agreement down to {top1:.2g})"
                                                               if top1 is not None else "")
        worst = max(_as_float(m.get("nmse")) for m in ms)
        return f"{what}: output differs from the operator's definition (NMSE up to {worst:.2g})"
    msg = _common_message(d.cells)
    verb = {"unsupported": "refused", "error": "fails while running", "crash": "crashes the process",
            "timeout": "hangs"}[d.kind]
    return f"{what}: {verb}" + (f" ({msg[:120]})" if msg else "")


@cache
def _schemas() -> dict[tuple[str, str], Any]:
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema
    except Exception:  # noqa: BLE001 - without onnxruntime the draft names the op, unquoted
        return {}
    out: dict[tuple[str, str], Any] = {}
    for s in get_all_operator_schema():
        prev = out.get((s.domain, s.name))
        if prev is None or s.since_version > prev.since_version:
            out[(s.domain, s.name)] = s
    return out


def _quote(text: str, limit: int = 600) -> str:
    t = " ".join(str(text).split())
    return t if len(t) <= limit else t[:limit].rsplit(" ", 1)[0] + " …"


def operator_text(d: Draft) -> dict[str, Any]:
    """The schema sentences the expectation comes from: the op's summary, and the text of
    each attribute or input the signature names (onnxruntime's get_all_operator_schema)."""
    dom, typ = d.op
    fam = d.cells[0].get("family", "")
    out: dict[str, Any] = {"source": None, "summary": None, "parts": [], "doc": _DOCS.get(fam)}
    s = _schemas().get((dom, typ))
    if s is None:
        return out
    import onnxruntime

    out["source"] = f"{op_label(d.op)} (since version {s.since_version}), onnxruntime {onnxruntime.__version__} get_all_operator_schema()"
    paras = [p for p in (s.doc or "").strip().split("\n\n") if p.strip()]
    out["summary"] = _quote(paras[0]) if paras else None
    named = {a: desc.description for a, desc in s.attributes.items()}
    named.update({i.name: i.description for i in s.inputs})
    named.update({o.name: o.description for o in s.outputs})
    seen = set()
    for k, _ in d.signature:
        for name in (k, *_ALIASES.get(k, ())):
            if name in named and name not in seen and named[name]:
                seen.add(name)
                out["parts"].append((name, _quote(named[name])))
    return out


def _num(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "—"


def numbers(d: Draft) -> list[dict[str, Any]]:
    """Worst and typical (median) value of each metric over the draft's cells, with the bound it
    is judged against (one per tolerance profile in the draft: fp16 cells have their own)."""
    keys = [("nmse", max, "max_nmse"), ("need_atol", max, "atol"), ("max_abs", max, None), ("cosine", min, None),
            ("top1", min, None), ("kl", max, None)]
    out = []
    for k, pick, bound in keys:
        vals = [v for c in d.cells if isinstance(v := (c.get("metrics") or {}).get(k), (int, float))]
        if not vals:
            continue
        bounds = sorted({((c.get("tolerance") or {}).get(bound), (c.get("tolerance") or {}).get("profile"))
                         for c in d.cells if bound and isinstance((c.get("tolerance") or {}).get(bound), (int, float))},
                        key=str)
        text = ("; ".join(f"{_num(b)} ({p})" for b, p in bounds) if len(bounds) > 1
                else _num(bounds[0][0]) if bounds else "—")
        out.append({"metric": k, "worst": pick(vals), "typical": statistics.median(vals), "cells": len(vals),
                    "bound": f"{bound} {text}" if bounds else "—"})
    return out


def _bundle_size(path: str | None) -> int:
    if not path:
        return 1 << 62
    try:
        return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
    except OSError:
        return 1 << 61


def smallest(d: Draft) -> dict[str, Any]:
    """The cell whose bundle is smallest (bytes on disk; else the shortest id), and its commands."""
    c = min(d.cells, key=lambda c: (_bundle_size(c.get("repro")), len(c["case_id"]), c["case_id"]))
    repro = c.get("repro")
    return {"case_id": c["case_id"], "repro": repro,
            "command": f"sh {repro}/repro.sh {d.backend}" if repro else None,
            "export": f"onnx-compat export {c['case_id']} --out DIR && sh DIR/repro.sh {d.backend}",
            "message": str(c.get("message") or "")}


def others(d: Draft, records_by_case: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for cid in d.case_ids:
        for r in records_by_case.get(cid, ()):
            if r["backend"] != d.backend:
                c = out.setdefault(r["backend"], {})
                c[r["status"]] = c.get(r["status"], 0) + 1
    return out


def build(records: list[dict[str, Any]], run_info: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Drafts as plain data (the report and the Markdown files render the same dicts)."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_case.setdefault(r["case_id"], []).append(r)
    out = []
    for d in group(records):
        versions = sorted({str(c.get("backend_version") or "") for c in d.cells})
        folded: dict[str, list[str]] = {}  # one entry per message up to its numbers and paths
        for c in d.cells:
            line = _first_line(c.get("message"))
            folded.setdefault(_fold(line), []).append(line)
        msgs = {lines[0]: len(lines) for lines in folded.values()}
        oth = others(d, by_case)
        out.append(_draft_dict(d, oth, run_info, msgs, versions))
    return out


def caution(d: Draft, oth: dict[str, dict[str, int]]) -> str:
    """Where the evidence points at the case rather than the runtime: wrong values every other
    runtime that ran the cases shares, or a refusal of cases the reference cannot run either."""
    if d.kind == "unsupported":
        ref = oth.get("reference", {})
        if ref and sum(n for s, n in ref.items() if Status(s).ran) < sum(ref.values()):
            return "the reference does not run all these cases either: check that the model is valid before filing"
        return ""
    # only an independent implementation is evidence: ort-node and ort-web run ORT's own kernels
    ran = [c for b, c in oth.items() if b != "reference" and _lineage(b) != _lineage(d.backend)
           and any(Status(s).ran for s in c)]
    if ran and not any(Status(s).acceptable for c in ran for s in c):
        return ("every independent runtime that ran these cases gets them wrong too: check the case and its oracle "
                "before filing")
    return ""


def _lineage(backend: str) -> str:
    """Backends sharing an implementation: ort-cpu, ort-cpu-noopt, ort-cuda, ort-node, ort-web are
    ONNX Runtime; tract and tract-cli are tract."""
    return backend.split("-")[0]


def _draft_dict(d: Draft, oth, run_info, msgs, versions) -> dict[str, Any]:
    return {
        "id": d.id, "caution": caution(d, oth), "title": title_of(d), "backend": d.backend, "op": op_label(d.op),
        "kind": d.kind, "what": KINDS[d.kind], "signature": _describe_sig(d.signature, d.pure), "pure": d.pure,
        "n_cells": len(d.cells), "matched": d.matched, "versions": versions, "run": (run_info or {}).get(d.backend),
        "operator_text": operator_text(d), "numbers": numbers(d), "repro": smallest(d),
        "messages": sorted(msgs.items(), key=lambda kv: -kv[1])[:3], "others": oth, "cases": d.case_ids,
        "tolerances": sorted({(c.get("tolerance") or {}).get("profile") or "" for c in d.cells}),
    }


# ---------------------------------------------------------------------------------------------
# Markdown


def _code(s: Any) -> str:
    """Inline code that no backtick or newline in `s` can close or break."""
    s = " ".join(str(s).split())
    run = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (run + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _fenced(s: Any, info: str = "text") -> str:
    s = str(s)
    run = max((len(m) for m in re.findall(r"`{3,}|~{3,}", s)), default=2)
    fence = "`" * max(3, run + 1)
    return f"{fence}{info}\n{s}\n{fence}"


def _plain(s: Any) -> str:
    """Prose from data (a title, a quote): Markdown and HTML metacharacters escaped, one line."""
    s = " ".join(str(s).split())
    return re.sub(r"([\\`*\[\]<>|&])", r"\\\1", s)


def markdown(dr: dict[str, Any]) -> str:
    lines = [f"# {_plain(dr['title'])}", ""]
    if dr.get("caution"):
        lines += [f"> **Before filing**: {dr['caution']}.", ""]
    lines += [f"**Runtime**: {_code(dr['backend'])} {', '.join(_code(v) for v in dr['versions'])}  ",
              f"**Operator**: {_code(dr['op'])} · **what goes wrong**: {dr['what']} · "
              f"**cases**: {dr['n_cells']} (feature signature: {_code(dr['signature'])}"
              + (f"; {dr['matched']} case(s) of this op that ran or failed this way carry it" if dr["matched"] else "")
              + ")", ""]
    run = dr.get("run")
    if run:
        pk = ", ".join(f"{k} {v}" for k, v in sorted((run.get("packages") or {}).items()))
        lines += [(f"Run: {_code(run.get('date', ''))} on {_code(run.get('host', ''))} "
                   f"({_code(run.get('device') or run.get('cpu', ''))}); {_code(pk)}"), ""]
    ot = dr["operator_text"]
    lines += ["## What the operator text says", ""]
    if ot.get("summary"):
        lines += [f"> {_plain(ot['summary'])}", ""]
        for name, text in ot["parts"]:
            lines += [f"> {_code(name)}: {_plain(text)}", ""]
        lines += [f"Quoted from {_plain(ot['source'])}."]
    else:
        lines += ["(the schema text was not available where this draft was written)"]
    if ot.get("doc"):
        lines += [f"How this project reads it: {_code(ot['doc'])}."]
    lines += ["", "## The numbers", ""]
    if dr["numbers"]:
        lines += ["| metric | worst | typical (median) | bound |", "|---|---|---|---|"]
        lines += [f"| {n['metric']} | {_num(n['worst'])} | {_num(n['typical'])} | {_plain(n['bound'])} |" for n in dr["numbers"]]
        lines += ["", f"Tolerance profile(s): {', '.join(_code(t) for t in dr['tolerances'])}."]
    lines += ["", "What the runtime said (first lines, numbers aside: one example each, with how many cells):", ""]
    lines += [_fenced("\n".join(f"[{n}x] {m}" for m, n in dr["messages"]))]
    rp = dr["repro"]
    if "\n" in rp["message"].strip():
        lines += ["", f"In full, for {_code(rp['case_id'])}:", "", _fenced(rp["message"][:3000])]
    lines += ["", "## Smallest repro", "", f"Case {_code(rp['case_id'])}"
              + (f", bundle {_code(rp['repro'])} (model.onnx, inputs.npz, expected.npz, repro.sh):" if rp["repro"] else ":"), ""]
    lines += [_fenced("\n".join(x for x in (rp["command"], "# or, from a checkout of onnx-compat:", rp["export"]) if x), "sh")]
    lines += ["", "## Other runtimes on the same cases", ""]
    if dr["others"]:
        lines += [f"- {_code(b)}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items())) for b, c in dr["others"].items()]
    else:
        lines += ["- (no other runtime in this run)"]
    lines += ["", "<details><summary>All cases in this draft</summary>", "", _fenced("\n".join(dr["cases"])),
              "", "</details>", ""]
    return "\n".join(lines)


def write_markdown(drafts: list[dict[str, Any]], out_dir) -> list[Path]:
    """One file per draft plus an index, each written atomically."""
    from .results import atomic_write_text

    out = Path(out_dir)
    paths = []
    index = ["# Upstream issue drafts", "", "| draft | runtime | cells | title |", "|---|---|---|---|"]
    for dr in drafts:
        p = out / f"{dr['id']}.md"
        atomic_write_text(p, markdown(dr))
        paths.append(p)
        index.append(f"| [{dr['id']}]({dr['id']}.md) | {_code(dr['backend'])} | {dr['n_cells']} | {_plain(dr['title'])} |")
    atomic_write_text(out / "README.md", "\n".join(index) + "\n")
    return paths
