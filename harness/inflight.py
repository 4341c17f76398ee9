"""The cell in flight, on disk, so that a native crash (a segfault or abort inside a runtime,
which takes the whole process with it) still leaves a verdict.

Each process running cells keeps `OUT/.inflight/<pid>.json` naming the cell it is running and
points faulthandler at `OUT/.inflight/<pid>.fatal`. A process that died of a fatal signal
(SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL) leaves both: that cell is a `crash`. A process that
was killed from outside (kill -9, Ctrl-C, a pool shutting down its siblings) leaves a marker
but no fatal dump: its cell is not judged, it simply runs again — a user's kill is never
recorded as a backend's crash.
"""

from __future__ import annotations

import faulthandler
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

DIRNAME = ".inflight"


@dataclass
class Died:
    case_id: str
    backend: str | None  # None: the process died while building the case, before any backend
    pid: int
    fatal: str  # faulthandler's dump ("" when the process was killed from outside)


class InFlight:
    """This process's marker. Writes are a rename of a small file, no fsync: they only need to
    survive the process, not the machine."""

    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root) / DIRNAME
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        self.marker = self.dir / f"{self.pid}.json"
        self._fatal_path = self.dir / f"{self.pid}.fatal"
        self._fatal = open(self._fatal_path, "w")  # noqa: SIM115 - faulthandler needs it open
        faulthandler.enable(self._fatal, all_threads=True)

    def begin(self, case_id: str, backend: str | None, limit: float | None = None) -> None:
        """`limit`: seconds after which the supervisor may kill this process (`overdue`)."""
        tmp = self.dir / f".{self.pid}.tmp"
        tmp.write_text(json.dumps({"case_id": case_id, "backend": backend, "pid": self.pid,
                                   "started": time.time(), "limit": limit}))
        os.replace(tmp, self.marker)

    def end(self) -> None:
        self.marker.unlink(missing_ok=True)

    def close(self) -> None:
        faulthandler.disable()
        self._fatal.close()
        self.end()
        if self._fatal_path.exists() and self._fatal_path.stat().st_size == 0:
            self._fatal_path.unlink()
        try:
            self.dir.rmdir()
        except OSError:
            pass


def collect(root: str | os.PathLike, exclude_pid: int | None = None) -> list[Died]:
    """Markers left by processes that are gone; removes them (and their fatal dumps)."""
    d = Path(root) / DIRNAME
    if not d.is_dir():
        return []
    out: list[Died] = []
    for marker in sorted(d.glob("*.json")):
        pid = int(marker.stem) if marker.stem.isdigit() else -1
        if pid == exclude_pid:
            continue
        fatal_path = d / f"{marker.stem}.fatal"
        try:
            m = json.loads(marker.read_text())
            fatal = fatal_path.read_text(errors="replace").strip() if fatal_path.exists() else ""
            out.append(Died(str(m["case_id"]), m.get("backend"), pid, fatal))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a marker cut short: its cell simply runs again
        marker.unlink(missing_ok=True)
        fatal_path.unlink(missing_ok=True)
    for stale in d.glob("*.fatal"):
        if stale.stem.isdigit() and int(stale.stem) != exclude_pid:
            stale.unlink(missing_ok=True)
    return out


def overdue(root: str | os.PathLike) -> list[tuple[int, str, str, float]]:
    """(pid, case_id, backend, limit) of every cell running past the limit its marker gives."""
    out = []
    for marker in (Path(root) / DIRNAME).glob("*.json"):
        try:
            m = json.loads(marker.read_text())
            if m.get("limit") and m.get("backend") and time.time() - float(m["started"]) > float(m["limit"]):
                out.append((int(m["pid"]), str(m["case_id"]), str(m["backend"]), float(m["limit"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a marker being replaced right now
    return out


def describe(died: Died) -> str:
    """One message for the crash record: the fatal error's first line and the innermost frame."""
    lines = [ln.strip() for ln in died.fatal.splitlines() if ln.strip()]
    head = lines[0] if lines else "killed"
    frames = [ln for ln in lines if ln.startswith("File ")]
    where = f"; last Python frame: {frames[0]}" if frames else ""
    return (f"the process running this cell died ({head}{where}); recorded from its in-flight "
            f"marker, the run went on")
