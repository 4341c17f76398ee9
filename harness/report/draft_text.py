"""What a draft says: its title (carrying the number that makes the finding), the operator text
it rests on, the numbers, the builds that show it and those that do not, the smallest repro,
and the same as Markdown ready to paste upstream."""

from __future__ import annotations

import re
import statistics
from functools import cache
from pathlib import Path
from typing import Any

from ..verdict import Status
from .bugs import Bug, core_message, full_first_line, unwrap
from .drafts import _ALIASES, _DOCS, KINDS, _describe_sig, _first_line, op_label

_VERB = {"unsupported": "refused", "error": "fails while running", "crash": "crashes the process", "timeout": "hangs"}


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


def _num(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "—"


def _bundle_size(path: str | None) -> int:
    if not path:
        return 1 << 62
    try:
        return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
    except OSError:
        return 1 << 61


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


def signature_text(bug: Bug, for_title: bool = False) -> str:
    """The feature signature(s) of the draft's cells; a title names at most two pure ones, and
    a draft of many (an accuracy loss seen wherever the tolerance catches it) counts them."""
    sigs = list(dict.fromkeys(_describe_sig(d.signature, d.pure) for d in bug.parts
                              if not for_title or (d.pure and d.signature)))
    if for_title:
        every = all(d.pure and d.signature for d in bug.parts)
        return "; ".join(sigs) if every and len(sigs) <= 2 else ""
    return "; ".join(sigs[:6]) + (f"; … ({len(sigs) - 6} more)" if len(sigs) > 6 else "")


def _ops_text(bug: Bug) -> str:
    ops = [op_label(o) for o in bug.ops]
    what = "models" if all(o[0] == "model" for o in bug.ops) else "ops"
    return ", ".join(ops[:3]) + (f" and {len(ops) - 3} more {what}" if len(ops) > 3 else "")


def _models(bug: Bug) -> list[str]:
    return sorted({str((c.get("features") or {}).get("model") or c["case_id"]) for c in bug.cells})


def _number(v: Any) -> float | None:
    """A metric as a number: results.jsonl holds an infinite NMSE (a reference of zeros) as "inf"."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        return float(v)
    return None


def _metric(bug: Bug, key: str) -> list[float]:
    return [v for c in bug.cells if (v := _number((c.get("metrics") or {}).get(key))) is not None]


def _common_clause(bug: Bug) -> str:
    """The most common first clause of the runtime's messages, numbers kept (they make the finding)."""
    clauses = [str(c.get("message") or "").split(";")[0].strip() for c in bug.cells]
    clauses = [c for c in clauses if c]
    return max(set(clauses), key=clauses.count)[:160] if clauses else ""


def title_of(bug: Bug) -> str:
    """A title that carries the number that makes the finding."""
    sig = signature_text(bug, for_title=True)
    n = len(bug.cases)
    where = f"{_ops_text(bug)}" + (f" with {sig}" if sig else f" ({n} case{'s' if n != 1 else ''})")
    if bug.kind == "mismatch" and bug.ops[0][0] == "model":
        top1, kl, nmse = min(_metric(bug, "top1"), default=None), max(_metric(bug, "kl"), default=None), max(_metric(bug, "nmse"), default=None)
        models = _models(bug)
        what = f"{len(models)} model{'s' if len(models) != 1 else ''} ({', '.join(models[:3])}{', …' if len(models) > 3 else ''})"
        nums = ", ".join(x for x in (f"top-1 {top1:.2f}" if top1 is not None else "",
                                     f"KL up to {kl:.1g}" if kl is not None else "",
                                     f"NMSE up to {nmse:.1g}" if nmse is not None else "") if x)
        grade = "tokens agree, logits drift" if top1 is not None and top1 >= 1.0 else "tokens differ"
        return f"{what}: {grade} ({nums})"
    if bug.kind == "mismatch":
        clause = _common_clause(bug)
        if "NaN" in clause or "Inf" in clause:
            return f"{where}: {clause}"
        nmse = _metric(bug, "nmse")
        bounds = sorted({(c.get("tolerance") or {}).get("max_nmse") for c in bug.cells} - {None})
        if nmse:
            lo, hi = min(nmse), max(nmse)
            rng = f"{hi:.2g}" if hi / (lo or hi) < 1.5 else f"{lo:.2g} to {hi:.2g}"
            return f"{where}: wrong values, NMSE {rng}" + (f" (bound {bounds[0]:.0e})" if len(bounds) == 1 else "")
        return f"{where}: wrong values ({clause})"
    lines = [core_message(full_first_line(c.get("message"))) for c in bug.cells]
    raw = {core_message(full_first_line(c.get("message"))): unwrap(full_first_line(c.get("message"))) or
           _first_line(c.get("message")) for c in bug.cells}
    msg = max(set(lines), key=lines.count) if lines else ""
    shown = raw.get(msg, msg)
    if bug.feature_request:
        return f"Support {where}: refused ({shown[:120]})"
    return f"{where}: {_VERB[bug.kind]} ({shown[:120]})"


def operator_text(bug: Bug) -> dict[str, Any]:
    """The schema sentences the expectation comes from: the op's summary, and the text of
    each attribute or input the signatures name (onnxruntime's get_all_operator_schema)."""
    dom, typ = bug.ops[0]
    fam = bug.cells[0].get("family", "")
    out: dict[str, Any] = {"source": None, "summary": None, "parts": [], "doc": _DOCS.get(fam)}
    s = _schemas().get((dom, typ))
    if s is None:
        return out
    import onnxruntime

    out["source"] = f"{op_label(bug.ops[0])} (since version {s.since_version}), onnxruntime {onnxruntime.__version__} get_all_operator_schema()"
    paras = [p for p in (s.doc or "").strip().split("\n\n") if p.strip()]
    out["summary"] = _quote(paras[0]) if paras else None
    named = {a: desc.description for a, desc in s.attributes.items()}
    named.update({i.name: i.description for i in s.inputs})
    named.update({o.name: o.description for o in s.outputs})
    seen = set()
    for d in bug.parts:
        for k, _ in d.signature:
            for name in (k, *_ALIASES.get(k, ())):
                if name in named and name not in seen and named[name]:
                    seen.add(name)
                    out["parts"].append((name, _quote(named[name])))
    return out


def numbers(bug: Bug) -> list[dict[str, Any]]:
    """Worst and typical (median) value of each metric over the draft's cells, with the bound it
    is judged against (one per tolerance profile in the draft: fp16 cells have their own)."""
    keys = [("nmse", max, "max_nmse"), ("need_atol", max, "atol"), ("max_abs", max, None), ("cosine", min, None),
            ("top1", min, None), ("kl", max, None)]
    out = []
    for k, pick, bound in keys:
        vals = _metric(bug, k)
        if not vals:
            continue
        bounds = sorted({((c.get("tolerance") or {}).get(bound), (c.get("tolerance") or {}).get("profile"))
                         for c in bug.cells if bound and isinstance((c.get("tolerance") or {}).get(bound), (int, float))},
                        key=str)
        text = ("; ".join(f"{_num(b)} ({p})" for b, p in bounds) if len(bounds) > 1
                else _num(bounds[0][0]) if bounds else "—")
        out.append({"metric": k, "worst": pick(vals), "typical": statistics.median(vals), "cells": len(vals),
                    "bound": f"{bound} {text}" if bounds else "—"})
    return out


def smallest(bug: Bug) -> dict[str, Any]:
    """The cell whose bundle is smallest (bytes on disk; else the shortest id), and its commands;
    bundle paths are relative to the report's directory."""
    c = min(bug.cells, key=lambda c: (_bundle_size(c.get("repro")), len(c["case_id"]), c["case_id"], c["backend"]))
    repro = c.get("repro")
    return {"case_id": c["case_id"], "backend": c["backend"], "repro": repro,
            "command": f"sh {repro}/repro.sh {c['backend']}" if repro else None,
            "export": f"onnx-compat export {c['case_id']} --out DIR && sh DIR/repro.sh {c['backend']}",
            "message": str(c.get("message") or "")}


def caution(bug: Bug, status: dict[str, Any]) -> str:
    """Where the evidence points at the case rather than the runtime: wrong values every other
    implementation that ran the cases shares, or a refusal of cases the reference cannot run either."""
    others = status["others"]
    if bug.kind == "unsupported":
        ref = others.get("reference", {})
        if ref and sum(n for s, n in ref.items() if Status(s).ran) < sum(ref.values()):
            return "the reference does not run all these cases either: check that the model is valid before filing"
        return ""
    ran = [c for b, c in others.items() if b != "reference" and any(Status(s).ran for s in c)]
    if ran and not any(Status(s).acceptable for c in ran for s in c):
        return ("every independent runtime that ran these cases gets them wrong too: check the case and its oracle "
                "before filing")
    return ""


def related(bug: Bug, bugs: list[Bug]) -> list[str]:
    """For wrong logits of zoo models: the op drafts of the same implementation whose op the
    models contain (a likely shared cause, named, not assumed)."""
    if bug.kind != "mismatch" or bug.ops[0][0] != "model":
        return []
    model_ops = {str(o).rsplit(".", 1)[-1] for c in bug.cells for o in (c.get("features") or {}).get("ops") or ()}
    return [b.id for b in bugs if b is not bug and b.impl == bug.impl and b.kind == "mismatch"
            and b.ops[0][0] != "model" and any(o[1] in model_ops for o in b.ops)]


def draft_dict(bug: Bug, status: dict[str, Any], run_info, bugs: list[Bug]) -> dict[str, Any]:
    folded: dict[str, list[str]] = {}
    for c in bug.cells:
        line = _first_line(c.get("message"))
        folded.setdefault(core_message(full_first_line(c.get("message"))), []).append(line)
    msgs = sorted(((lines[0], len(lines)) for lines in folded.values()), key=lambda kv: -kv[1])[:3]
    versions = {b: status["versions"].get(b, "") for b in [*bug.builds, *status["clean"], *status["same_other"]]}
    return {
        "id": bug.id, "title": title_of(bug), "implementation": bug.impl, "kind": bug.kind, "what": KINDS[bug.kind],
        "feature_request": bug.feature_request, "backend": ", ".join(bug.builds), "builds": bug.builds,
        "op": _ops_text(bug), "signature": signature_text(bug), "n_cells": len(bug.cells), "n_cases": len(bug.cases),
        "versions": versions, "runs": {b: (run_info or {}).get(b) for b in bug.builds if (run_info or {}).get(b)},
        "status": status, "caution": caution(bug, status), "operator_text": operator_text(bug),
        "numbers": numbers(bug), "repro": smallest(bug), "messages": msgs, "cases": bug.cases,
        "cases_by_build": {b: [c["case_id"] for c in bug.cells if c["backend"] == b] for b in bug.builds},
        "related": related(bug, bugs), "tolerances": sorted({(c.get("tolerance") or {}).get("profile") or "" for c in bug.cells}),
    }
