"""The cell in flight, on disk, so that a native crash (a segfault or abort inside a runtime,
which takes the whole process with it) still leaves a verdict.

Each process running cells keeps `OUT/.inflight/<pid>.json` naming the cell it is running and
points faulthandler at `OUT/.inflight/<pid>.fatal`. A process that died of a fatal signal
(SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL) leaves both: that cell is a `crash`. A process that
was killed from outside (kill -9, Ctrl-C, a pool shutting down its siblings) leaves a marker
but no fatal dump: its cell is not judged, it simply runs again — a user's kill is never
recorded as a backend's crash.

With --in-process nothing outside the process can stop a cell that hangs, so the process stops
itself (`watchdog`): past the cell's limit it writes TIMEOUT_HEAD and its threads' stacks to the
fatal dump, says so on stderr and exits; `--resume` records that cell as `timeout`. A hang that
holds the GIL is caught a few seconds later by faulthandler's own watchdog thread (C, no GIL),
whose dump starts with "Timeout (" too.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

DIRNAME = ".inflight"
TIMEOUT_HEAD = "Timeout"
#: seconds after the Python watchdog that faulthandler's C watchdog ends a process whose hang holds the GIL
GIL_GRACE_S = 5.0
#: exit status of a --in-process run that a hung cell ended (the CLI's "run could not proceed")
EXIT_HUNG = 3


@dataclass
class Died:
    case_id: str
    backend: str | None  # None: the process died while building the case, before any backend
    pid: int
    fatal: str  # faulthandler's dump ("" when the process was killed from outside)
    limit: float | None = None  # the cell's limit (s), as its marker gave it

    @property
    def hung(self) -> bool:
        """The process ended itself because this cell ran past its limit (the --in-process watchdog)."""
        return self.fatal.startswith(TIMEOUT_HEAD)


class InFlight:
    """This process's marker. Writes are a rename of a small file, no fsync: they only need to
    survive the process, not the machine."""

    def __init__(self, root: str | os.PathLike, watchdog: bool = False):
        self.watchdog = watchdog
        self._timer: threading.Timer | None = None
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
        self._disarm()
        if self.watchdog and limit:
            self._timer = threading.Timer(limit, self._hung, args=(case_id, backend, limit))
            self._timer.daemon = True
            self._timer.start()
            faulthandler.dump_traceback_later(limit + GIL_GRACE_S, exit=True, file=self._fatal)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            faulthandler.cancel_dump_traceback_later()

    def _hung(self, case_id: str, backend: str | None, limit: float) -> None:  # the watchdog thread
        self._fatal.write(f"{TIMEOUT_HEAD}: no answer within {limit:g} s\n")
        self._fatal.flush()
        faulthandler.dump_traceback(self._fatal, all_threads=True)
        self._fatal.flush()
        print(f"onnx-compat run: error: {case_id} on {backend} gave no answer within {limit:g} s; with --in-process "
              "a hung cell ends the run (nothing outside the process can stop it): continue with --resume, which "
              "records that cell as timeout", file=sys.stderr, flush=True)
        import shutil
        import tempfile

        if tempfile.tempdir and Path(tempfile.tempdir).name.startswith("onnx-compat-run-"):
            shutil.rmtree(tempfile.tempdir, ignore_errors=True)  # the run's temp files: its finally never runs
        os._exit(EXIT_HUNG)

    def end(self) -> None:
        self._disarm()
        self.marker.unlink(missing_ok=True)

    def close(self) -> None:
        self.end()
        faulthandler.disable()
        self._fatal.close()
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
            limit = float(m["limit"]) if m.get("limit") else None
            out.append(Died(str(m["case_id"]), m.get("backend"), pid, fatal, limit))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a marker cut short: its cell simply runs again
        marker.unlink(missing_ok=True)
        fatal_path.unlink(missing_ok=True)
    for stale in d.glob("*.fatal"):
        if stale.stem.isdigit() and int(stale.stem) != exclude_pid:
            stale.unlink(missing_ok=True)
    for half in d.glob(".*.tmp"):  # a marker half-written by a process killed inside begin() (a pool's SIGTERM)
        pid = half.name[1:-4]
        if pid.isdigit() and int(pid) != exclude_pid:
            half.unlink(missing_ok=True)
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
