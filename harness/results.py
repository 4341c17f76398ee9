"""results.jsonl (one JSON object per cell, appended and flushed as each cell ends) and
atomic writes for everything else, so a killed run leaves whole files and resumes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

RECORD_KEYS = ("case_id", "family", "features", "marks", "backend", "backend_version", "status",
               "metrics", "tolerance", "message", "seconds", "repro")


class ResultsError(ValueError):
    """A results file that cannot be read as results; the message names the file and line."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a report reader expects
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _repair_tail(path: Path) -> None:
    """Drop a partial last line left by a kill in the middle of a write."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            f.truncate(cut)


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such results file; pass a results.jsonl written by `onnx-compat run`")
    out = []
    lines = path.read_bytes().split(b"\n")
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8", errors="replace"))
        except json.JSONDecodeError as e:
            if i == len(lines):
                break  # the partial tail a killed run leaves
            raise ResultsError(f"{path}:{i}: not a JSON object ({e.msg}); is this a results.jsonl?") from None
        if not isinstance(rec, dict) or "case_id" not in rec or "backend" not in rec:
            raise ResultsError(f"{path}:{i}: a record needs case_id and backend; is this a results.jsonl?")
        out.append(rec)
    return out


class ResultsWriter:
    def __init__(self, path: str | os.PathLike, resume: bool):
        self.path = Path(path)
        self.done: set[tuple[str, str]] = set()
        if self.path.exists():
            if not resume:
                raise FileExistsError(f"{self.path} exists; pass --resume to continue that run, or choose another --out")
            _repair_tail(self.path)
            self.done = {(r["case_id"], r["backend"]) for r in read_results(self.path)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise ValueError(f"result record lacks {missing}")
        line = json.dumps({k: record[k] for k in RECORD_KEYS}, ensure_ascii=False, allow_nan=False)
        self._f.write(line + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.add((record["case_id"], record["backend"]))

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def merge(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Records of several shards; a (case, backend) cell present twice is an error naming both files."""
    seen: dict[tuple[str, str], tuple[str, dict]] = {}
    out: list[dict[str, Any]] = []
    for p in paths:
        for rec in read_results(p):
            key = (rec["case_id"], rec["backend"])
            if key in seen:
                other, prev = seen[key]
                kind = "conflicting" if prev.get("status") != rec.get("status") else "duplicate"
                raise ResultsError(f"{kind} cell {key[0]} [{key[1]}] in {other} and {p}: "
                                   "merge each shard once (use --resume to finish a shard, not a second run)")
            seen[key] = (str(p), rec)
            out.append(rec)
    return out
