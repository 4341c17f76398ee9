"""The page's summary sections as plain data: the zoo grid, the op-family summary, the
changes against a baseline, the catalogued ambiguities. Each is computed in one pass over the
cells, so a 100 000-cell run costs seconds, not minutes.
"""

from __future__ import annotations

from typing import Any

from ..verdict import ALL_STATUSES, Status
from .cells import GRADES, zoo_grade
from .matrix import backend_order


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


def ambiguity_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each catalogued ambiguity (harness/readings.py) with its quotes and readings, and per backend
    how many of the cells that carry it take each reading: `pass` is the chosen reading, `ambiguous`
    names the other reading matched, `mismatch` is neither; other statuses did not run to a
    comparison. Cells name the readings they carry in metrics["readings"]."""
    from ..readings import AMBIGUITIES

    out = []
    order = backend_order(records)
    carriers = [r for r in records if (r.get("metrics") or {}).get("readings")]
    for a in AMBIGUITIES:
        others = [r.name for r in a.others]
        counts: dict[str, dict[str, int]] = {}
        for r in carriers:
            m = r["metrics"]
            if not set(m["readings"]) & set(others):
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


def zoo_grid(records: list[dict[str, Any]], backends: list[str]) -> list[dict[str, Any]]:
    """One row per hub model and export form (a zoo case), one grade per runtime: what a user
    choosing a runtime for an export reads first. Rows by model, then form and precision."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("family") != "zoo":
            continue
        f, m = r.get("features") or {}, r.get("metrics") or {}
        row = rows.setdefault(r["case_id"], {
            "case_id": r["case_id"], "model": str(f.get("model") or r["case_id"]), "form": str(f.get("form") or ""),
            "precision": str(f.get("precision") or ""), "exporter": str(f.get("exporter") or ""), "oracle": None,
            "cells": {}})
        row["oracle"] = row["oracle"] or m.get("oracle")
        grade, text, full = zoo_grade(r["status"], m)
        row["cells"][r["backend"]] = {"grade": grade, "label": GRADES[grade][0], "css": GRADES[grade][1],
                                      "text": text, "full": full, "status": r["status"]}
    return sorted(rows.values(), key=lambda x: (x["model"], x["form"], x["precision"], x["case_id"]))


def family_summary(records: list[dict[str, Any]], backends: list[str]) -> list[dict[str, Any]]:
    """Op family x runtime: how many judged cells agree with the text and what the rest are;
    each cell links to the matrix filtered to it."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for r in records:
        c = counts.setdefault(r.get("family") or "?", {}).setdefault(r["backend"], {})
        c[r["status"]] = c.get(r["status"], 0) + 1
    out = []
    for fam in sorted(counts):
        cells = {}
        for b in backends:
            if b not in counts[fam]:
                continue
            ok, total, rest = judged(counts[fam][b])
            cells[b] = {"ok": ok, "total": total, "rest": rest, "style": pass_scale(ok, total)}
        out.append({"family": fam, "cases": None, "cells": cells})
    return out
