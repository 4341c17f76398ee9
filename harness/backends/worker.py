"""Run any backend in a separate, persistent worker process, so that a crash or a hang costs
one cell, never the run.

Protocol: one JSON object per line on the worker's stdin / a dedicated pipe back. Tensors
travel as .npz files in a private temp dir. The worker's stderr goes to a file whose tail is
kept in a `crash` verdict. After a crash or a timeout the worker is killed and a fresh one is
started on the next cell.

The worker starts isolated from the current directory (`python -I`, cwd = its private temp
dir): a `numpy.py` or `harness/` in the directory a user runs from (an untrusted bundle) is
never imported. It dies with its parent (PR_SET_PDEATHSIG), and its temp dir goes with it.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import weakref
from pathlib import Path
from typing import Mapping

import numpy as np

from .base import Backend, Crashed, DeviceLacks, KilledFromOutside, ModelRef, Session, TimedOut, Unsupported, external_signal

STDERR_TAIL = 20000
#: how long a worker may take to start (import Python, numpy, the runtime) before its first request
STARTUP_S = 120.0
_PR_SET_PDEATHSIG = 1


def _find_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    except (OSError, AttributeError):
        return None


_PRCTL = _find_prctl()  # looked up once, here: a forked child must not call dlopen


def die_with_parent(expected_parent: int | None = None) -> None:
    """Linux: this process gets SIGKILL when its parent dies (kill -9 included), so no worker
    outlives the run. If the parent is already gone (`expected_parent` differs), exit now."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)


def _preexec_die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    die_with_parent()


def _import_path() -> list[str]:
    """Where the worker imports from: the directory holding this `harness` package, then what
    the user put on PYTHONPATH (made absolute); never the current directory."""
    here = str(Path(__file__).resolve().parents[2])
    extra = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return list(dict.fromkeys([here, *extra]))


_BOOT = ("import json, os, sys; sys.path[:0] = json.loads(os.environ['ONNX_COMPAT_WORKER_PATH']); "
         "from harness.backends.worker import _main; _main()")


def _signal_name(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name} ({-code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class WorkerProcess:
    """A live worker hosting backend `inner` (a registry name)."""

    def __init__(self, inner: str, timeout: float, python: str | None = None, env: Mapping[str, str] | None = None,
                 label: str | None = None):
        """`inner`: a registry name or "module:Class"; `python`/`env`: another interpreter (a
        column's own venv, e.g. ort-webgpu's) and what it needs in its environment."""
        self.inner = label or inner
        self._target = inner
        self.timeout = timeout
        self._python = python or sys.executable
        self._env = dict(env or {})
        self.dir = Path(tempfile.mkdtemp(prefix=f"onnx-compat-{self.inner}-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.dir), True)
        self.proc: subprocess.Popen | None = None
        self._stderr = None
        self._n = 0

    def _start(self) -> None:
        self._stderr = open(self.dir / "stderr.log", "w+b")
        r, w = os.pipe()
        env = dict(os.environ, **self._env, ONNX_COMPAT_WORKER_FD=str(w), ONNX_COMPAT_WORKER_PATH=json.dumps(_import_path()),
                   ONNX_COMPAT_WORKER_PARENT=str(os.getpid()), ONNX_COMPAT_WORKER_TIMEOUT=repr(self.timeout))
        self.proc = subprocess.Popen(
            [self._python, "-I", "-u", "-c", _BOOT, self._target],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
            pass_fds=(w,), env=env, cwd=self.dir,
        )
        os.close(w)
        self._reply = os.fdopen(r, "rb")
        self._await_ready()

    def _await_ready(self) -> None:
        """The worker says it is ready once Python and the backend's modules are loaded: that
        start-up (seconds on a loaded machine) is not the backend's time, so --timeout counts
        from here. A worker that dies or never gets there is the harness's failure, said so."""
        assert self.proc is not None
        deadline = time.monotonic() + max(STARTUP_S, self.timeout)
        fd = self._reply.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                line = self._reply.readline()
                if line and json.loads(line).get("ready"):
                    return
                code = self.proc.wait()
                tail = _panic_first(self._stderr_tail())
                self.kill()
                raise Crashed(f"the {self.inner} worker {_signal_name(code)} while starting"
                              + (f"; stderr: {tail}" if tail else ""))
        self.kill()
        raise TimedOut(f"the {self.inner} worker did not start within {max(STARTUP_S, self.timeout):g} s; worker killed")

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - STDERR_TAIL))
        return self._stderr.read().decode("utf-8", "replace").strip()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        for f in (getattr(self, "_reply", None), self._stderr):
            if f is not None and not f.closed:
                f.close()

    def request(self, msg: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + self.timeout
        fd = self._reply.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise TimedOut(f"no answer from the {self.inner} worker within {self.timeout:g} s "
                               f"({msg['op']}); worker killed")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                line = self._reply.readline()
                if line:
                    return json.loads(line)
                code = self.proc.wait()
                tail = _panic_first(self._stderr_tail())
                self.kill()
                outside = external_signal(code)
                if outside:  # a user's kill or the OOM killer, not the backend's own fault
                    raise KilledFromOutside(f"the {self.inner} worker was killed from outside ({outside}) during "
                                            f"{msg['op']}", outside)
                raise Crashed(f"{self.inner} worker {_signal_name(code)} during {msg['op']}"
                              + (f"; stderr: {tail}" if tail else ""))

    def next_path(self, stem: str) -> Path:
        self._n += 1
        return self.dir / f"{stem}-{self._n}.npz"

    def close(self) -> None:
        self.kill()
        self._cleanup()


def save_arrays(path, arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
    """np.savez, returning the dtypes .npz cannot carry (ml_dtypes' bfloat16, float8, int4 come
    back as raw void `|V2`): they travel beside it in the message, by name."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez(path, **arrays)
    return {k: a.dtype.name for k, a in arrays.items() if a.dtype.kind == "V"}


def load_arrays(path, dtypes: Mapping[str, str]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    if dtypes:
        import ml_dtypes

        for k, name in dtypes.items():
            if k in out and hasattr(ml_dtypes, name):
                out[k] = out[k].view(getattr(ml_dtypes, name))
    return out


def _panic_first(tail: str) -> str:
    """A Rust panic or a Python fatal error says what went wrong on its first lines; the
    backtrace after them is noise in a cell."""
    for marker in ("panicked at", "Fatal Python error", "Segmentation fault"):
        i = tail.find(marker)
        if i >= 0:
            start = tail.rfind("\n", 0, i) + 1
            return tail[start:start + 600]
    return tail[-800:]


def _raise_from(reply: dict) -> None:
    kind, message = reply.get("kind"), reply.get("message", "")
    if kind == "unsupported":
        raise Unsupported(message)
    if kind == "unavailable":
        raise DeviceLacks(message)
    raise RuntimeError(message)


class IsolatedSession(Session):
    def __init__(self, worker: WorkerProcess):
        self.worker = worker
        self._restart = False
        self.note = ""  # the worker's session's note (how it ran), as of its last run

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        fin = self.worker.next_path("in")
        fout = self.worker.next_path("out")
        reply = self.worker.request({"op": "run", "feeds": str(fin), "out": str(fout),
                                     "dtypes": save_arrays(fin, feeds)})
        fin.unlink(missing_ok=True)
        if not reply.get("ok"):
            _raise_from(reply)
        out = load_arrays(fout, reply.get("dtypes") or {})
        fout.unlink(missing_ok=True)
        self._restart = self._restart or bool(reply.get("restart"))
        self.note = reply.get("note", "")
        return {k: out[k] for k in reply["outputs"]}

    def close(self) -> None:
        """A worker whose runtime may have written past a buffer serves no further cell: the next
        prepare starts a fresh one, so a corrupted heap cannot change another cell's numbers."""
        if self._restart:
            self.worker.kill()


def isolatable(backend: Backend) -> bool:
    """Whether `backend` can run in a worker process here: not one that isolates itself (ort-node,
    ort-web: their own worker obeys cell_timeout) nor one that drives whole models (ort-genai),
    and not one that is isolated already."""
    return not (backend.isolated or hasattr(backend, "cell_timeout") or hasattr(backend, "drive"))


def get_isolated(name: str, timeout: float, only_native: bool = False) -> Backend:
    """Backend `name`, in a worker process wherever it can be (a crash or a hang then costs one
    cell, and --timeout holds); `only_native`: leave numpy-only backends (reference) in this
    process, where they run fastest."""
    from . import get

    raw = get(name, isolated=False, timeout=timeout)
    if not isolatable(raw) or (only_native and not raw.native):
        return get(name, timeout=timeout)
    return IsolatedBackend(raw, timeout=timeout)


class IsolatedBackend(Backend):
    """Wraps a registry backend so each of its cells runs in the worker process."""

    isolated = True

    def __init__(self, inner: Backend, timeout: float = 120.0):
        self.inner = inner
        self.name = inner.name
        self.description = inner.description
        self.timeout = timeout
        self._worker: WorkerProcess | None = None

    def available(self) -> tuple[bool, str]:
        return self.inner.available()

    def version(self) -> str:
        return self.inner.version()

    def prepare(self, model: ModelRef) -> Session:
        if self._worker is None:
            self._worker = WorkerProcess(self.inner.name, self.timeout)
        reply = self._worker.request({"op": "prepare", "model": str(Path(model.path).resolve())})
        if not reply.get("ok"):
            kind = reply.get("kind")
            if kind == "unavailable":
                raise DeviceLacks(reply.get("message", ""))
            raise Unsupported(reply.get("message", "")) if kind in ("unsupported", "error") else RuntimeError(reply.get("message"))
        return IsolatedSession(self._worker)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def _load(name: str, timeout: float) -> Backend:
    """A registry name, or "module:Class" (a backend only a worker in another venv hosts)."""
    if ":" not in name:
        from . import get

        return get(name, isolated=False, timeout=timeout)
    import importlib

    mod, _, cls = name.partition(":")
    return getattr(importlib.import_module(mod), cls)()


def _serve(name: str, timeout: float = 120.0) -> None:  # pragma: no cover - runs in the child
    from .base import DeviceLacks as _DeviceLacks
    from .base import Unsupported as _Unsupported

    out = os.fdopen(int(os.environ["ONNX_COMPAT_WORKER_FD"]), "w")
    backend = _load(name, timeout)
    session: Session | None = None

    def reply(**kw):
        out.write(json.dumps(kw) + "\n")
        out.flush()

    backend.available()  # load the runtime's modules now: part of starting, not of the first cell
    reply(ready=True)

    for raw in sys.stdin:
        msg = json.loads(raw)
        try:
            if msg["op"] == "prepare":
                if session is not None:
                    session.close()
                session = None
                try:
                    session = backend.prepare(ModelRef(path=msg["model"]))
                except _DeviceLacks as e:
                    reply(ok=False, kind="unavailable", message=_describe(e))
                    continue
                except Exception as e:  # noqa: BLE001 - the backend's words are the finding
                    reply(ok=False, kind="unsupported", message=_describe(e))
                    continue
                reply(ok=True)
            elif msg["op"] == "run":
                if session is None:
                    reply(ok=False, kind="error", message="run before a successful prepare")
                    continue
                feeds = load_arrays(msg["feeds"], msg.get("dtypes") or {})
                try:
                    result = session.run(feeds)
                except _Unsupported as e:
                    reply(ok=False, kind="unsupported", message=_describe(e))
                    continue
                except _DeviceLacks as e:
                    reply(ok=False, kind="unavailable", message=_describe(e))
                    continue
                except Exception as e:  # noqa: BLE001
                    reply(ok=False, kind="error", message=_describe(e))
                    continue
                # a session that saw signs of memory written out of bounds asks for a fresh worker
                reply(ok=True, outputs=list(result), dtypes=save_arrays(msg["out"], result),
                      restart=bool(getattr(session, "suspect", "")), note=getattr(session, "note", ""))
        except Exception:  # noqa: BLE001 - protocol failure: report, keep serving
            reply(ok=False, kind="error", message="worker: " + traceback.format_exc(limit=3))


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if not isinstance(e, RuntimeError) else text


def _main() -> None:  # pragma: no cover - the worker's entry point (see _BOOT)
    parent = os.environ.get("ONNX_COMPAT_WORKER_PARENT")
    die_with_parent(int(parent) if parent else None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's: a worker dead of it would read as a crash
    _serve(sys.argv[1], float(os.environ.get("ONNX_COMPAT_WORKER_TIMEOUT", "120")))
