"""The compatibility matrix: rows are cases (grouped by family), columns are backends."""

from __future__ import annotations

import json
from typing import Any, Iterable

import pandas as pd

from .results import atomic_write_text
from .verdict import ALL_STATUSES


def frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in records:
        m = r.get("metrics") or {}
        rows.append({"case_id": r["case_id"], "family": r.get("family", ""), "backend": r["backend"],
                     "status": r["status"], "max_abs": m.get("max_abs"), "nmse": m.get("nmse"),
                     "cosine": m.get("cosine"), "seconds": r.get("seconds")})
    return pd.DataFrame(rows, columns=["case_id", "family", "backend", "status", "max_abs", "nmse", "cosine", "seconds"])


def backend_order(records: list[dict[str, Any]]) -> list[str]:
    from .backends import names

    seen = list(dict.fromkeys(r["backend"] for r in records))
    known = [n for n in names() if n in seen]
    return known + [b for b in seen if b not in known]


def status_matrix(records: list[dict[str, Any]]) -> pd.DataFrame:
    df = frame(records)
    if df.empty:
        return pd.DataFrame(columns=["family", "case_id"])
    wide = df.pivot_table(index=["family", "case_id"], columns="backend", values="status", aggfunc="first")
    wide = wide.reindex(columns=backend_order(records))
    return wide.sort_index().reset_index()


def summary(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    df = frame(records)
    out: dict[str, dict[str, int]] = {}
    for b in backend_order(records):
        counts = df[df.backend == b].status.value_counts().to_dict()
        out[b] = {s: int(counts.get(s, 0)) for s in ALL_STATUSES if counts.get(s, 0)}
    return out


def matrix_json(records: list[dict[str, Any]]) -> dict[str, Any]:
    order = backend_order(records)
    versions = {}
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        versions.setdefault(r["backend"], r.get("backend_version", ""))
        row = rows.setdefault(r["case_id"], {"case_id": r["case_id"], "family": r.get("family", ""),
                                             "features": r.get("features", {}), "marks": r.get("marks", []),
                                             "cells": {}})
        m = r.get("metrics") or {}
        row["cells"][r["backend"]] = {
            "status": r["status"], "max_abs": m.get("max_abs"), "max_rel": m.get("max_rel"), "nmse": m.get("nmse"),
            "cosine": m.get("cosine"), "need_atol": m.get("need_atol"), "need_rtol": m.get("need_rtol"),
            "message": r.get("message", ""), "repro": r.get("repro"), "tolerance": r.get("tolerance"),
            "latency_ms": m.get("latency_ms"),
        }
    return {"backends": order, "versions": versions, "summary": summary(records), "cells": len(records),
            "rows": [rows[k] for k in sorted(rows, key=lambda cid: (rows[cid]["family"], cid))]}


def write_matrix(records: list[dict[str, Any]], out_dir) -> None:
    from pathlib import Path

    out = Path(out_dir)
    atomic_write_text(out / "matrix.csv", status_matrix(records).to_csv(index=False))
    atomic_write_text(out / "matrix.json", json.dumps(matrix_json(records), indent=1, ensure_ascii=False) + "\n")
