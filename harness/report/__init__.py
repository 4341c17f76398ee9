"""The report package: everything that turns results into what a reader sees.

matrix (matrix.csv/json), page (report.html), drafts (upstream issue drafts), rows (named and
feature rows), coverage (the operator text the grid exercises). `write_report` is the one
entry point `onnx-compat run/report/check` use.
"""

from .page import ambiguity_table, diff, render, write_report

__all__ = ["ambiguity_table", "diff", "render", "write_report"]
