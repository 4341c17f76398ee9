"""Named rows of the report: the gaps the source documents name, each a `-k` / `-m` selection
declared by the family it belongs to (cases/<family>.py's FAMILY.rows). Rows of the same name
from several families (an op row and the zoo models that exercise the same feature) are one row."""

from __future__ import annotations

from typing import Any

from ..families import rows as declared_rows
from ..registry import selector
from ..verdict import worst


def named_rows(records: list[dict[str, Any]], backends: list[str]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for row in declared_rows():
        entry = merged.setdefault(row.name, {"source": row.source, "preds": []})
        entry["preds"].append(selector(row.k, row.m, check_marks=False))
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in records:  # a selection speaks of cases: each is tested once, not once per column
        by_case.setdefault(r.get("case_id", ""), []).append(r)
    rows = []
    for name, entry in merged.items():
        cells: dict[str, dict[str, Any]] = {}
        n_cases = set()
        chosen = [r for cid, recs in by_case.items()
                  if any(p(cid, recs[0].get("marks") or ()) for p in entry["preds"]) for r in recs]
        for r in chosen:
            n_cases.add(r["case_id"])
            c = cells.setdefault(r["backend"], {"counts": {}, "example": None})
            c["counts"][r["status"]] = c["counts"].get(r["status"], 0) + 1
            if r["status"] != "pass" and (c["example"] is None or r["status"] == "mismatch"):
                c["example"] = {"case_id": r["case_id"], "status": r["status"], "message": (r.get("message") or "")[:300]}
        for c in cells.values():
            counts = c["counts"]
            total = sum(counts.values())
            c["total"] = total
            c["worst"] = worst(counts).value
        rows.append({"name": name, "source": entry["source"], "cases": len(n_cases), "cells": cells})
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
