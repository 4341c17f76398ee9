"""The compatibility matrix: rows are cases (grouped by family), columns are backends.

Built once from the cells (`Matrix.of`); matrix.csv, matrix.json, the report and the CLI's
summary are all rendered from that one object. Plain Python: a pivot of a few thousand cells
does not need pandas.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..results import atomic_write_chunks, atomic_write_text
from ..verdict import ALL_STATUSES

#: what a matrix cell keeps of a record's metrics (matrix.json, the report's cell table)
CELL_METRICS = ("max_abs", "max_rel", "nmse", "cosine", "need_atol", "need_rtol", "latency_ms")


def backend_order(records: Iterable[dict[str, Any]]) -> list[str]:
    """Known backends in the registry's order, then any others in order of appearance."""
    from ..backends import names

    seen = list(dict.fromkeys(r["backend"] for r in records))
    known = [n for n in names() if n in seen]
    return known + [b for b in seen if b not in known]


@dataclass
class Matrix:
    backends: list[str]
    versions: dict[str, str]
    rows: list[dict[str, Any]]  # sorted by (family, case id); each with cells by backend
    summary: dict[str, dict[str, int]]  # backend -> status -> count
    cells: int

    @classmethod
    def of(cls, records: list[dict[str, Any]]) -> "Matrix":
        order = backend_order(records)
        versions: dict[str, str] = {}
        rows: dict[str, dict[str, Any]] = {}
        counts: dict[str, dict[str, int]] = {b: {} for b in order}
        for r in records:
            b, st = r["backend"], r["status"]
            versions.setdefault(b, r.get("backend_version", ""))
            counts[b][st] = counts[b].get(st, 0) + 1
            row = rows.setdefault(r["case_id"], {"case_id": r["case_id"], "family": r.get("family", ""),
                                                 "features": r.get("features", {}), "marks": r.get("marks", []),
                                                 "cells": {}})
            m = r.get("metrics") or {}
            row["cells"][b] = {"status": st, **{k: m.get(k) for k in CELL_METRICS},
                               "message": r.get("message", ""), "repro": r.get("repro"),
                               "tolerance": r.get("tolerance")}
        summary = {b: {s: c[s] for s in ALL_STATUSES if c.get(s)} for b, c in counts.items()}
        ordered = [rows[k] for k in sorted(rows, key=lambda cid: (rows[cid]["family"], cid))]
        return cls(order, versions, ordered, summary, len(records))

    def to_json(self) -> dict[str, Any]:
        return {"backends": self.backends, "versions": self.versions, "summary": self.summary,
                "cells": self.cells, "rows": self.rows}

    def to_csv(self) -> str:
        """family, case_id, then one status column per backend (empty where a cell is absent)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["family", "case_id", *self.backends])
        for row in self.rows:
            w.writerow([row["family"], row["case_id"],
                        *(row["cells"][b]["status"] if b in row["cells"] else "" for b in self.backends)])
        return buf.getvalue()

    def write(self, out_dir) -> None:
        out = Path(out_dir)
        atomic_write_text(out / "matrix.csv", self.to_csv())
        # one row per line: readable, diffable, and written by json's C encoder (indent is not)
        d = self.to_json()
        rows = d.pop("rows")
        head = json.dumps(d, ensure_ascii=False)[:-1] + ', "rows": [\n'
        atomic_write_chunks(out / "matrix.json", (head, *((",\n" if i else "") + json.dumps(r, ensure_ascii=False)
                                                          for i, r in enumerate(rows)), "\n]}\n"))


def summary(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    return Matrix.of(records).summary


def matrix_json(records: list[dict[str, Any]]) -> dict[str, Any]:
    return Matrix.of(records).to_json()


def write_matrix(records: list[dict[str, Any]], out_dir) -> Matrix:
    m = Matrix.of(records)
    m.write(out_dir)
    return m
