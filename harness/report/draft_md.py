"""A draft as Markdown, ready to paste into the upstream tracker, and `report --issues DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .draft_text import _code, _fenced, _num, _plain


def _counts(c: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(c.items()))


def markdown(dr: dict[str, Any]) -> str:
    st = dr["status"]
    lines = [f"# {_plain(dr['title'])}", ""]
    if dr.get("caution"):
        lines += [f"> **Before filing**: {dr['caution']}.", ""]
    kind = "feature request (a valid model is refused)" if dr["feature_request"] else dr["what"]
    lines += [f"**Implementation**: {_plain(dr['implementation'])} · **operator**: {_code(dr['op'])} · **kind**: {kind} · "
              f"**cases**: {dr['n_cases']} ({dr['n_cells']} cells; feature signature: {_code(dr['signature'])})", "",
              "**Builds that show it**:", ""]
    lines += [f"- {_code(b)}: {_code(dr['versions'].get(b, ''))}, {len(dr['cases_by_build'].get(b, ()))} case(s)"
              for b in dr["builds"]]
    if st["clean"] or st["same_other"]:
        lines += ["", "**Builds of the same implementation on the same cases that do not show it**:", ""]
        lines += [f"- {_code(b)}: {_code(dr['versions'].get(b, ''))}, "
                  + (_counts(st["same_other"][b]) if b in st["same_other"] else "agrees with the text on every case")
                  for b in [*st["clean"], *st["same_other"]]]
    for b, run in (dr.get("runs") or {}).items():
        pk = ", ".join(f"{k} {v}" for k, v in sorted((run.get("packages") or {}).items()))
        lines += ["", f"Run of {_code(b)}: {_code(run.get('date', ''))} on {_code(run.get('host', ''))} "
                      f"({_code(run.get('device') or run.get('cpu', ''))}); {_code(pk)}"]
    ot = dr["operator_text"]
    lines += ["", "## What the operator text says", ""]
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
        lines += ["", f"In full, for {_code(rp['case_id'])} on {_code(rp['backend'])}:", "", _fenced(rp["message"][:3000])]
    lines += ["", "## Smallest repro", "", f"Case {_code(rp['case_id'])} on {_code(rp['backend'])}"
              + (f", bundle {_code(rp['repro'])} beside the report (model.onnx, inputs.npz, expected.npz, repro.sh):"
                 if rp["repro"] else ":"), ""]
    lines += [_fenced("\n".join(x for x in (rp["command"], "# or, from a checkout of onnx-compat:", rp["export"]) if x), "sh")]
    if dr.get("related"):
        lines += ["", "Wrong-value drafts of the same implementation on ops these models contain (a likely shared "
                      "cause): " + ", ".join(_code(r) for r in dr["related"]) + "."]
    lines += ["", "## Other runtimes on the same cases", ""]
    if st["others"]:
        lines += [f"- {_code(b)}: {_counts(c)}" for b, c in st["others"].items()]
    else:
        lines += ["- (no other runtime in this run)"]
    lines += ["", "<details><summary>All cases in this draft</summary>", "", _fenced("\n".join(dr["cases"])),
              "", "</details>", ""]
    return "\n".join(lines)


def write_markdown(drafts: list[dict[str, Any]], out_dir) -> list[Path]:
    """One file per draft plus an index, each written atomically."""
    from ..results import atomic_write_text

    out = Path(out_dir)
    paths = []
    index = ["# Upstream issue drafts", "", "| draft | implementation | builds | cases | title |", "|---|---|---|---|---|"]
    for dr in drafts:
        p = out / f"{dr['id']}.md"
        atomic_write_text(p, markdown(dr))
        paths.append(p)
        index.append(f"| [{dr['id']}]({dr['id']}.md) | {_plain(dr['implementation'])} | "
                     f"{', '.join(_code(b) for b in dr['builds'])} | {dr['n_cases']} | {_plain(dr['title'])} |")
    atomic_write_text(out / "README.md", "\n".join(index) + "\n")
    return paths
