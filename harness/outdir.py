"""An --out directory is the run's only where the run made it: a marker file says so.

`run` replaces matrix.csv, matrix.json, report.html and run.json in its --out directory. In a
directory the user made for something else those names may be the user's own files, so a run
writes into a directory only when it is new or empty, or carries the marker a run leaves
(MARKER), or holds a results.jsonl (a run's directory from before markers existed). Anything
else is refused in one line, before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

MARKER = ".onnx-compat-run"
#: what a run writes (and so may replace) in its --out directory
RUN_FILES = ("results.jsonl", "matrix.csv", "matrix.json", "report.html", "run.json", "repro", "located")
_HARMLESS = {MARKER, ".lock", ".inflight"}  # a run's own bookkeeping, written before anything else


class NotOurs(ValueError):
    """The --out directory holds files a run did not write; the message names them and the fix."""


def check_is_dir(out: Path, option: str = "--out") -> None:
    """A path that exists and is not a directory: one line, not `[Errno 17] File exists`."""
    if out.exists() and not out.is_dir():
        raise NotOurs(f"{option} {out}: is a file, not a directory; choose a directory (new or one a run wrote)")


def claim(out: Path) -> None:
    """Refuse a directory a run did not write; else mark it as the run's (created if need be)."""
    check_is_dir(out)
    if (out / MARKER).is_file() or (out / "results.jsonl").is_file():
        _mark(out)
        return
    theirs = sorted(p.name for p in out.iterdir() if p.name in RUN_FILES) if out.is_dir() else []
    if theirs:
        raise NotOurs(f"--out {out}: holds {', '.join(theirs)} that no onnx-compat run wrote there (no {MARKER}); "
                      "a run would replace them: choose a new or empty --out, or move them away")
    _mark(out)


def _mark(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    m = out / MARKER
    if not m.is_file():
        try:
            fd = os.open(m, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:  # another run marked it a moment ago
            return
        with os.fdopen(fd, "w") as f:
            f.write("written by onnx-compat run: its matrix, report and results may be replaced by the next run here\n")
