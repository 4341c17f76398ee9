"""report.html: one self-contained page (jinja2, inline CSS/JS, no network, works from file://).

The first screen answers "which runtime runs which export": the zoo grid, then the op-family
summary; the sections a reader opens on purpose (runs, drafts, ambiguities, coverage, named
rows) are collapsed below, then the matrix. The matrix and each cell's details travel as
gzip-compressed JSON (base64) that the page inflates with the browser's DecompressionStream,
the matrix rendered a page of rows at a time: 100 000 cells stay a few megabytes and open in
a second. Every string from a backend, a model or a file is autoescaped by jinja2 or set as
text by the script; the compressed blocks are base64, which no string can break out of.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from ..results import atomic_write_text
from ..verdict import ALL_STATUSES
from .cells import GRADES, details, dumps, matrix_label, packed, packed_parts
from .matrix import Matrix, write_matrix
from .sections import ambiguity_table, diff, family_summary, judged, pass_scale, zoo_grid

SHOWN_PACKAGES = ("onnx", "onnxruntime", "onnxruntime-gpu", "tract", "onnxruntime-genai", "openvino", "torch",
                  "transformers")


def environment() -> dict[str, Any]:
    """Where the report itself is rendered (each column's run is in run.json: harness/runinfo.py)."""
    from ..runinfo import machine

    return machine()


def grid_data(mx: Matrix) -> dict[str, Any]:
    """The matrix as the page's script needs it, by index: rows of [case id, family, marks,
    per backend null or [status, labelled number]]."""
    fams = list(dict.fromkeys(row["family"] for row in mx.rows))
    marks = sorted({mk for row in mx.rows for mk in row["marks"]})
    fi, mi, si = ({v: i for i, v in enumerate(x)} for x in (fams, marks, ALL_STATUSES))
    rows = []
    for row in mx.rows:
        cells = []
        for b in mx.backends:
            c = row["cells"].get(b)
            cells.append(None if c is None else [si[c["status"]], matrix_label(c["status"], c, c.get("tolerance"))])
        rows.append([row["case_id"], fi[row["family"]], [mi[m] for m in row["marks"]], cells])
    return {"backends": mx.backends, "statuses": ALL_STATUSES, "families": fams, "marks": marks, "rows": rows}


def _details_json(records: list[dict[str, Any]], mx: Matrix, draft_of: dict, tolerances: dict):
    """The details blob's JSON text, case by case: {"cells": {case: {backend: details}},
    "features": {case: features}, "tolerances": {profile: bounds}, "versions": {backend: version}}."""
    index = {(r["case_id"], r["backend"]): r for r in records}
    yield '{"cells":{'
    for n, row in enumerate(mx.rows):
        cid = row["case_id"]
        per = {b: details(index[cid, b], c["repro"], draft_of.get((cid, b))) for b, c in row["cells"].items()}
        yield ("," if n else "") + dumps(row["case_id"]) + ":" + dumps(per)
    yield '},"features":{'
    yield ",".join(dumps(row["case_id"]) + ":" + dumps(row["features"]) for row in mx.rows)
    yield '},"tolerances":' + dumps(tolerances) + ',"versions":' + dumps(mx.versions) + "}"


def render(records: list[dict[str, Any]], baseline: list[dict[str, Any]] | None = None,
           title: str = "onnx-compat report", env: dict[str, Any] | None = None,
           run_info: dict[str, dict[str, Any]] | None = None, drafts: list[dict[str, Any]] | None = None,
           matrix: Matrix | None = None, coverage: list[dict[str, Any]] | None = None) -> str:
    """The page. `records` carry `repro` as the reader should see it (relative to the report)."""
    from .bugs import build
    from .draft_md import markdown
    from .rows import feature_table, named_rows

    jenv = Environment(loader=PackageLoader("harness.report", "templates"), autoescape=select_autoescape(["html", "j2"]),
                       trim_blocks=True, lstrip_blocks=True)
    jenv.globals.update(pass_scale=pass_scale, judged=judged)
    if drafts is None:
        drafts = build(records, run_info)
    draft_of = {(cid, b): d["id"] for d in drafts for b, cids in d["cases_by_build"].items() for cid in cids}
    mx = matrix or Matrix.of(records)
    body = jenv.get_template("draft_body.html.j2")
    order = mx.backends
    tolerances = {(r.get("tolerance") or {}).get("profile"): r.get("tolerance") for r in records}
    return jenv.get_template("report.html.j2").render(
        title=title, backends=order, versions=mx.versions, summary=mx.summary, statuses=ALL_STATUSES,
        seen_statuses=[s for s in ALL_STATUSES if any(s in c for c in mx.summary.values())],
        shown_packages=SHOWN_PACKAGES, env=env or environment(), n_cells=len(records), n_cases=len(mx.rows),
        has_latency=any("latency_ms" in (r.get("metrics") or {}) for r in records),
        diff=diff(records, baseline) if baseline is not None else None, grades=GRADES,
        zoo=zoo_grid(records, order), families=family_summary(records, order),
        ambiguities=ambiguity_table(records), run_info=run_info or {}, drafts=drafts,
        coverage=coverage,
        drafts_blob=packed({d["id"]: body.render(d=d, md=markdown(d)) for d in drafts}),
        named_rows=named_rows(records, order), feature_rows=feature_table(records),
        grid_blob=packed(grid_data(mx)),
        details_blob=packed_parts(_details_json(records, mx, draft_of, tolerances)),
    )


def reader_path(repro: str | None, case_id: str, roots: list[Path], out: Path) -> str | None:
    """A bundle path as the report's reader can use it: relative to the report's directory where
    the bundle is there to be found (a relative path the run recorded is looked up beside each
    results file), else None: the page then offers the `onnx-compat export` command instead."""
    if not repro:
        return None
    cands = [Path(repro)] if Path(repro).is_absolute() else [root / "repro" / case_id for root in roots] + [Path(repro)]
    for cand in cands:
        if (cand / "repro.sh").exists() or (cand / "case.json").exists() or (cand / "model.onnx").exists():
            return Path(os.path.relpath(cand.resolve(), out.resolve())).as_posix()
    return None


def write_report(records: list[dict[str, Any]], out_dir, baseline: list[dict[str, Any]] | None = None,
                 sources=None, issues=None, title: str = "onnx-compat report",
                 coverage: list[dict[str, Any]] | None = None) -> Path:
    """matrix files and report.html in out_dir; `sources` are the results files (their run.json
    sidecars name each column's machine; relative bundle paths resolve beside them), by default
    out_dir/results.jsonl; `issues`: also write the upstream issue drafts there as Markdown;
    `coverage`: rows of harness/report/coverage.py's table, shown as a collapsed section."""
    from .. import runinfo
    from .bugs import build
    from .draft_md import write_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = [Path(p) for p in (sources or [out / "results.jsonl"])]
    roots = [p.parent for p in sources]
    records = [{**r, "repro": reader_path(r.get("repro"), r["case_id"], roots, out)} if r.get("repro") else r
               for r in records]
    info = runinfo.for_results(sources)
    drafts = build(records, info)
    matrix = write_matrix(records, out)
    path = out / "report.html"
    atomic_write_text(path, render(records, baseline, title=title, run_info=info, drafts=drafts, matrix=matrix,
                                   coverage=coverage))
    if issues:
        write_markdown(drafts, issues)
    return path
