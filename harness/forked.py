"""One cell in a forked child: the isolation of a worker process at the cost of a fork.

`check` of one bundle must survive a runtime that segfaults or hangs (the cell becomes `crash` or
`timeout`, the other backends still run), and must stay cheap: a fresh worker process re-imports
numpy and the runtime (~0.3 s of CPU, as much as the whole check). A child forked after those
imports shares them, runs the cell, sends its record back through a pipe and exits; the parent
waits at most `timeout` seconds. The parent never creates a runtime session itself, so no runtime
thread exists at the fork.

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

    def __init__(self, status: str, message: str, signal_number: int | None = None):
        self.status, self.message, self.signal_number = status, message, signal_number


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def run_forked(fn: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any] | ForkedOutcome:
    """fn() in a forked child; its (JSON-serialisable) result, or how the child ended without one."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, send, leave without running the parent's exit handlers
        os.close(r)
        code = 0
        try:
            data = json.dumps(fn()).encode()
            with os.fdopen(w, "wb") as pipe:
                pipe.write(data)
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
    if timed_out:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return ForkedOutcome("timeout", f"no answer within {timeout:g} s (the cell's limit); the child running it "
                                        "was killed")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in SELF_INFLICTED:
            return ForkedOutcome("crash", f"the runtime died of {_signame(sig)} while running this cell", sig)
        return ForkedOutcome("error", f"the process running this cell was killed from outside ({_signame(sig)}): "
                                      "not the backend's fault; run it again", sig)
    if chunks and os.WEXITSTATUS(status) == 0:
        return json.loads(b"".join(chunks))
    return ForkedOutcome("error", f"the process running this cell exited with code {os.WEXITSTATUS(status)} "
                                  "without a result")
