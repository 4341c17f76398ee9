"""One cell in a forked child: the isolation of a worker process at the cost of a fork.

`check` of one bundle must survive a runtime that segfaults or hangs (the cell becomes `crash` or
`timeout`, the other backends still run), and must stay cheap: a fresh worker process re-imports
numpy and the runtime (~0.3 s of CPU, as much as the whole check). A child forked after numpy is
imported shares it, imports the runtime itself (given `first`, it reports what it found, e.g. the
runtime's version, on a line of its own before the cell can crash or hang), runs the cell, sends
its record back through a pipe and exits without the interpreter's teardown; the parent waits at
most `timeout` seconds. The parent neither imports the runtime nor creates a session, so no
runtime thread exists at the fork.

Signals a process raises on itself while running native code (SIGSEGV, SIGABRT, SIGBUS, SIGFPE,
SIGILL, SIGSYS, SIGTRAP) are the backend's `crash`; any other death (SIGKILL from a user or the
out-of-memory killer, SIGTERM) did not come from the case and is an `error` that says so.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from typing import Any, Callable

#: signals a process raises on itself when its own code faults or aborts
SELF_INFLICTED = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGSYS,
                  signal.SIGTRAP}


class ForkedOutcome:
    """What became of the child when it sent no record: a signal, an exit code or a time-out."""

    def __init__(self, status: str, message: str, signal_number: int | None = None, first: Any = None):
        self.status, self.message, self.signal_number = status, message, signal_number
        #: what `first` returned in the child, if the child got that far (else None)
        self.first = first


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def run_forked(fn: Callable[..., dict[str, Any]], timeout: float,
               first: Callable[[], Any] | None = None) -> dict[str, Any] | ForkedOutcome:
    """fn() in a forked child; its (JSON-serialisable) result, or how the child ended without one.

    With `first`, the child runs first() before fn, sends its (JSON-serialisable) result at once
    and calls fn(that result); a ForkedOutcome then carries it as `.first` when the child got that
    far. `check` asks the child for the backend's version this way, so the parent never imports
    the runtime (~25 ms of import and ~12 ms of teardown in a 0.15 s command) and a cell that
    crashes still names the version it ran."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, send, leave without running the parent's exit handlers
        os.close(r)
        code = 0
        try:
            with os.fdopen(w, "wb") as pipe:
                if first is None:
                    result = fn()
                else:  # json.dumps writes no raw newline: the first line is first()'s
                    head = first()
                    pipe.write(json.dumps(head).encode() + b"\n")
                    pipe.flush()
                    result = fn(head)
                pipe.write(json.dumps(result).encode())
        except BaseException:  # noqa: BLE001 - an exception is the harness's bug: say so by exit code
            code = 70
        finally:
            os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    data, head = b"".join(chunks), None
    if first is not None:
        line, newline, data = data.partition(b"\n")
        head = json.loads(line) if newline else None
        data = data if newline else b""
    if timed_out:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return ForkedOutcome("timeout", f"no answer within {timeout:g} s (the cell's limit); the child running it "
                                        "was killed", first=head)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in SELF_INFLICTED:
            return ForkedOutcome("crash", f"the runtime died of {_signame(sig)} while running this cell", sig, head)
        return ForkedOutcome("error", f"the process running this cell was killed from outside ({_signame(sig)}): "
                                      "not the backend's fault; run it again", sig, head)
    if data and os.WEXITSTATUS(status) == 0:
        return json.loads(data)
    return ForkedOutcome("error", f"the process running this cell exited with code {os.WEXITSTATUS(status)} "
                                  "without a result", first=head)
