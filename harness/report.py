"""report.html: a self-contained page (jinja2, inline CSS/JS, no network) over results.

Every string that comes from a backend, a model or a file goes through jinja2's autoescape;
data for the filters travels as JSON inside a <script type="application/json"> block with
'<', '>' and '&' escaped, so no message can close the tag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from .matrix import Matrix, backend_order, write_matrix
from .results import atomic_write_text
from .verdict import ALL_STATUSES, Status


def environment() -> dict[str, Any]:
    """Where the report itself is rendered (each column's run is in run.json: harness/runinfo.py)."""
    from .runinfo import machine

    return machine()


def _safe_json(obj: Any) -> str:
    s = json.dumps(obj, ensure_ascii=True, allow_nan=False, default=str)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def diff(records: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    before = {(r["case_id"], r["backend"]): r["status"] for r in baseline}
    changes: dict[str, list[dict[str, Any]]] = {"new_mismatches": [], "new_passes": [], "changed": [], "new_cells": []}
    for r in records:
        key = (r["case_id"], r["backend"])
        old = before.get(key)
        new = r["status"]
        entry = {"case_id": key[0], "backend": key[1], "before": old, "after": new}
        if old is None:
            changes["new_cells"].append(entry)
        elif old != new:
            if new == "mismatch":
                changes["new_mismatches"].append(entry)
            elif new == "pass":
                changes["new_passes"].append(entry)
            else:
                changes["changed"].append(entry)
    return changes


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


def _repro_root(records: list[dict[str, Any]]) -> str | None:
    """The directory most bundles live under (`<out>/repro`), so cells need not repeat it."""
    from collections import Counter

    roots = Counter(r["repro"][: -len(r["case_id"]) - 1] for r in records
                    if r.get("repro") and r["repro"].endswith("/" + r["case_id"]))
    return roots.most_common(1)[0][0] if roots else None


def pass_scale(passed: int, total: int) -> str:
    """A cell's background by how much of it agrees with the text: red (none) to green (all),
    grey where nothing ran. The eye finds broken columns, not the worst single cell."""
    if not total:
        return "background:#eee"
    f = passed / total
    return f"background:hsl({round(120 * f)},{70 if f < 1 else 55}%,{78 if f < 1 else 82}%)"


def judged(counts: dict[str, int]) -> tuple[int, int, list[tuple[str, int]]]:
    """(agreeing, judged, what is not a pass): agreeing counts the statuses verdict.py calls
    acceptable (pass; ambiguous: a reading the text allows; exporter: the model, not the backend,
    differs); cells with no verdict on the backend (unavailable, skip) are not judged."""
    total = sum(n for s, n in counts.items() if s not in ("unavailable", "skip"))
    ok = sum(n for s, n in counts.items() if Status(s).acceptable)
    rest = [(s, counts[s]) for s in ALL_STATUSES if s != "pass" and counts.get(s)]
    return ok, total, rest


def _absolute(repro: str | None, case_id: str, roots: list[Path]) -> str | None:
    """A bundle path the reader can use from anywhere: a relative one is looked up beside each
    results file (the run wrote it relative to where it ran)."""
    if not repro or Path(repro).is_absolute():
        return repro
    for root in roots:
        cand = root / "repro" / case_id
        if cand.exists():
            return str(cand.resolve())
    return str(Path(repro).resolve())


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in (None, "", {})}


def _slim(rec: dict[str, Any]) -> dict[str, Any]:
    """A passing cell keeps its summary metrics (and per-step ones for charts); the per-output
    breakdown is kept where it explains a finding. Numbers to 4 significant digits (the full
    values are in results.jsonl). Keeps the page small."""
    m = dict(rec.get("metrics") or {})
    if rec.get("status") == "pass":
        m = {k: m[k] for k in ("max_abs", "max_rel", "nmse", "cosine", "need_atol", "need_rtol", "steps", "top1", "kl",
                               "oracle", "latency_ms") if k in m}
        if "steps" in m:  # zoo steps also chart top-1 agreement and KL
            m["steps"] = [{k: s.get(k) for k in ("max_abs", "nmse", "cosine", "top1", "kl") if k in s} for s in m["steps"]]
    return _round(m)


def zoo_table(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Zoo model rows grouped by export form: per backend the status and the worst step's
    top-1 agreement and KL(oracle ‖ backend); the oracle that judged each row is named."""
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        if r.get("family") != "zoo":
            continue
        f, m = r.get("features") or {}, r.get("metrics") or {}
        row = rows.setdefault(str(f.get("form", "?")), {}).setdefault(r["case_id"], {
            "case_id": r["case_id"], "model": f.get("model"), "precision": f.get("precision"),
            "exporter": f.get("exporter"), "oracle": None, "cells": {}})
        row["oracle"] = row["oracle"] or m.get("oracle")
        row["cells"][r["backend"]] = {"status": r["status"], "top1": _round(m.get("top1")), "kl": _round(m.get("kl"))}
    return {form: sorted(v.values(), key=lambda x: x["case_id"]) for form, v in sorted(rows.items())}


def ambiguity_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each catalogued ambiguity (harness/readings.py) with its quotes and readings, and per backend
    how many of the cells that carry it take each reading: `pass` is the chosen reading, `ambiguous`
    names the other reading matched, `mismatch` is neither; other statuses did not run to a
    comparison. Cells name the readings they carry in metrics["readings"]."""
    from .readings import AMBIGUITIES

    out = []
    order = backend_order(records)
    for a in AMBIGUITIES:
        others = [r.name for r in a.others]
        counts: dict[str, dict[str, int]] = {}
        for r in records:
            m = r.get("metrics") or {}
            if not set(m.get("readings") or ()) & set(others):
                continue
            st, matched = r["status"], m.get("matches_reading")
            col = ("chosen" if st == "pass" else matched if st == "ambiguous" and matched in others
                   else "another ambiguity" if st == "ambiguous" else "neither" if st == "mismatch" else "not compared")
            c = counts.setdefault(r["backend"], {})
            c[col] = c.get(col, 0) + 1
        out.append({"id": a.id, "op": a.op, "question": a.question, "quotes": list(a.quotes), "doc": a.doc,
                    "chosen": a.chosen, "others": list(a.others),
                    "columns": ["chosen", *others, "neither", "not compared"],
                    "rows": [(b, counts[b]) for b in order if b in counts]})
    return out


def render(records: list[dict[str, Any]], baseline: list[dict[str, Any]] | None = None,
           title: str = "onnx-compat report", env: dict[str, Any] | None = None,
           run_info: dict[str, dict[str, Any]] | None = None, drafts: list[dict[str, Any]] | None = None,
           matrix: Matrix | None = None) -> str:
    jenv = Environment(loader=PackageLoader("harness", "templates"), autoescape=select_autoescape(["html", "j2"]),
                       trim_blocks=True, lstrip_blocks=True)
    jenv.globals.update(pass_scale=pass_scale, judged=judged)
    if drafts is None:
        from .drafts import build

        drafts = build(records, run_info)
    draft_of = {(cid, d["backend"]): d["id"] for d in drafts for cid in d["cases"]}
    mx = matrix or Matrix.of(records)
    m = mx.to_json()
    order = mx.backends
    families: dict[str, list[dict[str, Any]]] = {}
    for row in m["rows"]:
        families.setdefault(row["family"], []).append(row)
    marks = sorted({mk for row in m["rows"] for mk in row["marks"]})
    from .report_rows import feature_table, named_rows

    repro_root = _repro_root(records)
    cells: dict[str, dict[str, Any]] = {}
    for r in records:
        repro = r.get("repro")
        if repro and repro_root and repro == f"{repro_root}/{r['case_id']}":
            repro = 1
        cells.setdefault(r["case_id"], {})[r["backend"]] = _compact({
            "metrics": _slim(r), "message": r.get("message"), "tolerance": (r.get("tolerance") or {}).get("profile"),
            "repro": repro, "seconds": _round(r.get("seconds")), "draft": draft_of.get((r["case_id"], r["backend"]))})
    return jenv.get_template("report.html.j2").render(
        title=title, backends=order, versions=m["versions"], summary=mx.summary, statuses=ALL_STATUSES,
        seen_statuses=[s for s in ALL_STATUSES if any(r["status"] == s for r in records)],
        shown_packages=("onnx", "onnxruntime", "onnxruntime-gpu", "tract", "onnxruntime-genai", "torch", "transformers"),
        families=families, marks=marks, env=env or environment(), n_cells=len(records),
        has_latency=any("latency_ms" in (r.get("metrics") or {}) for r in records),
        diff=diff(records, baseline) if baseline is not None else None,
        ambiguities=ambiguity_table(records), run_info=run_info or {}, drafts=drafts,
        drafts_md={d["id"]: _markdown(d) for d in drafts},
        named_rows=named_rows(records, order), feature_rows=feature_table(records), zoo_rows=zoo_table(records),
        # per cell only what differs between cells, grouped by case; versions, tolerances and the
        # repro root are looked up by name
        repro_root_json=_safe_json(repro_root),
        details_json=_safe_json(cells),
        features_json=_safe_json({row["case_id"]: row["features"] for row in m["rows"]}),
        versions_json=_safe_json(m["versions"]),
        tolerances_json=_safe_json({(r.get("tolerance") or {}).get("profile"): r.get("tolerance") for r in records}),
    )


def _markdown(d: dict[str, Any]) -> str:
    from .drafts import markdown

    return markdown(d)


def write_report(records: list[dict[str, Any]], out_dir, baseline: list[dict[str, Any]] | None = None,
                 sources=None, issues=None) -> Path:
    """matrix files and report.html in out_dir; `sources` are the results files (their run.json
    sidecars name each column's machine; relative bundle paths resolve beside them), by default
    out_dir/results.jsonl; `issues`: also write the upstream issue drafts there as Markdown."""
    from . import runinfo
    from .drafts import build, write_markdown

    out = Path(out_dir)
    sources = [Path(p) for p in (sources or [out / "results.jsonl"])]
    roots = [p.parent for p in sources]
    records = [{**r, "repro": _absolute(r.get("repro"), r["case_id"], roots)} if r.get("repro") else r for r in records]
    info = runinfo.for_results(sources)
    drafts = build(records, info)
    matrix = write_matrix(records, out)
    path = out / "report.html"
    atomic_write_text(path, render(records, baseline, run_info=info, drafts=drafts, matrix=matrix))
    if issues:
        write_markdown(drafts, issues)
    return path
