"""results.jsonl (one JSON object per cell, appended and flushed as each cell ends) and
atomic writes for everything else, so a killed run leaves whole files and resumes."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import re
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from .cell import KEYS, CellError, parse

RECORD_KEYS = KEYS  # the contract: harness/cell.py


class ResultsError(ValueError):
    """A results file that cannot be read as results; the message names the file and line."""


class OutDirBusy(RuntimeError):
    """Another run holds the lock on this --out directory."""


LOCK_NAME = ".lock"
_SURROGATE = re.compile("[\ud800-\udfff]")
_HELD: dict[str, int] = {}


@contextlib.contextmanager
def lock_out_dir(out: str | os.PathLike) -> Iterator[None]:
    """One run per --out directory: an exclusive flock on DIR/.lock (released by the kernel
    when the holder dies, so a killed run never leaves a stale lock). Re-entrant in-process."""
    out = Path(out)
    key = str(out.resolve())
    if key in _HELD:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise OutDirBusy(f"{out} is in use by another onnx-compat run (pid {holder}); wait for it to end, "
                         "or choose another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD[key] = fd
    try:
        yield
    finally:
        del _HELD[key]
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write_chunks(path, (data,))


def atomic_write_chunks(path: str | os.PathLike, chunks: Iterable[bytes | str]) -> None:
    """Write chunks (text as UTF-8) to a temporary file beside `path`, then rename it over:
    a large file (matrix.json of 100 000 cells) is never held whole, and never seen half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a report reader expects
        os.replace(tmp, path)
    except OSError as e:  # a full disk says nothing of which file: name the one being written
        Path(tmp).unlink(missing_ok=True)
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None
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
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":  # results.jsonl.gz, as reports/latest publishes it
            data = gzip.decompress(data)
    except OSError as e:
        raise ResultsError(f"{path}: cannot be read ({e.strerror}); pass a readable results.jsonl") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ResultsError(f"{path}: a truncated or damaged gzip file ({e}); pass a whole results.jsonl.gz") from None
    lines = data.split(b"\n")
    del data
    out: list[dict[str, Any]] = []
    share = _Sharer()
    for start in range(0, len(lines), _CHUNK):
        for i, raw, rec in _parse_chunk(path, lines, start, min(len(lines), start + _CHUNK)):
            _validate(rec, f"{path}:{i}", raw)
            out.append(share(rec))
    return out


#: lines parsed by one json.loads call: its key memo is shared by the chunk's records, so a
#: 100 000-cell file holds each key string a few dozen times, not once per record
_CHUNK = 2000


def _parse_chunk(path: Path, lines: list[bytes], start: int, stop: int):
    """(line number, raw line, record) for lines[start:stop]; a chunk that does not parse whole
    (a bad line, the partial tail of a killed run) is parsed line by line for its message."""
    idx = [i for i in range(start, stop) if lines[i].strip()]
    try:
        text = (b"[" + b",".join(lines[i] for i in idx) + b"]").decode("utf-8", errors="replace")
        recs = json.loads(text, parse_constant=_no_constant)
        if len(recs) == len(idx) and all(type(r) is dict for r in recs):
            return [(i + 1, lines[i], r) for i, r in zip(idx, recs)]
    except ValueError:
        pass
    out = []
    for i in idx:
        try:  # bytes that are not UTF-8 become U+FFFD: a message is kept, not the whole file lost
            rec = json.loads(lines[i].decode("utf-8", errors="replace"), parse_constant=_no_constant)
        except ValueError as e:
            if i == len(lines) - 1:
                break  # the partial tail a killed run leaves
            why = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            raise ResultsError(f"{path}:{i + 1}: not a JSON object ({why}); is this a results.jsonl?") from None
        out.append((i + 1, lines[i], rec))
    return out


class _Sharer:
    """Cells of one case carry equal features and marks, and most cells one of a few tolerance
    profiles and version strings: one object each, shared (nothing mutates them in place)."""

    def __init__(self):
        self.by_case: dict[str, tuple[Any, Any]] = {}
        self.tols: dict[Any, dict[str, Any]] = {}
        self.strings: dict[str, str] = {}

    def __call__(self, rec: dict[str, Any]) -> dict[str, Any]:
        for k in ("backend", "family", "status", "backend_version"):
            v = rec.get(k)
            if type(v) is str:
                rec[k] = self.strings.setdefault(v, v)
        tol = rec.get("tolerance")
        if type(tol) is dict:
            try:
                rec["tolerance"] = self.tols.setdefault(tuple(tol.items()), tol)
            except TypeError:  # an unhashable value: keep it as it is
                pass
        prev = self.by_case.get(rec["case_id"])
        if prev is not None:
            if rec.get("features") == prev[0]:
                rec["features"] = prev[0]
            if rec.get("marks") == prev[1]:
                rec["marks"] = prev[1]
        else:
            self.by_case[rec["case_id"]] = (rec.get("features"), rec.get("marks"))
        return rec


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number; results hold finite numbers or null")


def _validate(rec: Any, where: str, raw: bytes | None = None) -> None:
    """What `report` and `--resume` rely on; the writer never writes anything else."""
    from .verdict import ALL_STATUSES

    if not isinstance(rec, dict) or "case_id" not in rec or "backend" not in rec:
        raise ResultsError(f"{where}: a record needs case_id and backend; is this a results.jsonl?")
    for key in ("case_id", "backend"):
        if not isinstance(rec[key], str) or not rec[key]:
            raise ResultsError(f"{where}: {key} must be a non-empty string; fix or drop that line")
    status = rec.get("status")
    if status not in ALL_STATUSES:
        what = "no status" if status is None else f"unknown status {status!r}"
        raise ResultsError(f"{where}: {what}; a status is one of {', '.join(ALL_STATUSES)}: fix or drop that line")
    if raw is None or _ESCAPED_SURROGATE.search(raw):
        try:
            json.dumps(rec, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ResultsError(f"{where}: a string holds a lone UTF-16 surrogate (an escape like \\ud800); "
                               "fix or drop that line") from None
    if _plain_cell(rec):
        return  # what the writer writes: the types pydantic would accept, checked in a few µs
    try:
        parse(rec)
    except CellError as e:
        raise ResultsError(f"{where}: {e}; fix or drop that line") from None


_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_TYPES = {"family": str, "features": dict, "marks": list, "backend_version": str, "metrics": dict, "message": str}


def _plain_cell(rec: dict[str, Any]) -> bool:
    """True where every field has exactly the type the writer gives it (then `parse` would
    accept the record as it is); anything else goes through pydantic for its one-line message."""
    return (all(type(rec.get(k, t())) is t for k, t in _TYPES.items())
            and all(type(m) is str for m in rec.get("marks", ()))
            and type(rec.get("seconds", 0.0)) in (float, int)
            and type(rec.get("tolerance")) in (dict, type(None)) and type(rec.get("repro")) in (str, type(None)))


#: results.jsonl is flushed to the kernel as each cell ends (a killed run loses at most the cell
#: in flight) and fsync'd at most this often, and at close: what an OS crash or power loss could
#: cost (a torn last line is repaired on --resume). A full disk still shows on the first cell.
SYNC_INTERVAL_S = 1.0


def _killed_from_outside(rec: dict[str, Any]) -> bool:
    """A cell whose worker a user or the out-of-memory killer killed (runner.KILLED): no verdict."""
    return rec.get("status") == "error" and bool((rec.get("metrics") or {}).get("killed_from_outside"))


class ResultsWriter:
    def __init__(self, path: str | os.PathLike, resume: bool):
        self.path = Path(path)
        self._synced = float("-inf")
        self.done: set[tuple[str, str]] = set()
        self.retried = 0  # cells dropped on resume to run again: their worker was killed from outside
        if self.path.exists():
            if not resume:
                raise FileExistsError(f"{self.path} exists; pass --resume to continue that run, or choose another --out")
            _repair_tail(self.path)
            records = read_results(self.path)
            kept = [r for r in records if not _killed_from_outside(r)]
            if len(kept) < len(records):  # not verdicts: they run again (runner.KILLED)
                self.retried = len(records) - len(kept)
                atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
            self.done = {(r["case_id"], r["backend"]) for r in kept}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise ValueError(f"result record lacks {missing}")
        line = json.dumps(parse(record).record(), ensure_ascii=False, allow_nan=False)
        # a backend's message may hold lone surrogates (bytes decoded with surrogateescape): U+FFFD
        line = _SURROGATE.sub("\ufffd", line)
        try:
            self._f.write(line + "\n")
            self._f.flush()
            now = time.monotonic()
            if now - self._synced >= SYNC_INTERVAL_S:
                os.fsync(self._f.fileno())
                self._synced = now
        except OSError as e:  # a full disk says nothing of which file: name it
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        self.done.add((record["case_id"], record["backend"]))

    def close(self) -> None:
        if self._f.closed:
            return
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        finally:
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
