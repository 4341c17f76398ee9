"""Test doubles registered through ONNX_COMPAT_EXTRA_BACKENDS: backends that crash, hang,
refuse, break or lie, to prove every one costs one cell and gets its own status."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from harness.backends.base import Backend, Session
from harness.backends.reference import Reference


class _Base(Backend):
    isolated = True

    def available(self):
        return True, ""

    def version(self):
        return f"fake {type(self).__name__}"


class _RefSession(Session):
    def __init__(self, inner, hook):
        self.inner, self.hook = inner, hook

    def run(self, feeds):
        return self.hook(self.inner.run(feeds), feeds)


def _marker(feeds) -> bool:
    """Misbehave only on cases whose first float input starts with a negative number, so a
    run mixes good and bad cells deterministically."""
    for v in feeds.values():
        a = np.asarray(v)
        if a.dtype.kind == "f" and a.size:
            return float(a.ravel()[0]) < 0
    return False


class Aborting(_Base):
    name = "fake-abort"

    def prepare(self, model):
        def hook(out, feeds):
            if _marker(feeds):
                os.abort()
            return out
        return _RefSession(Reference().prepare(model), hook)


class AbortingInProcess(Aborting):
    """os.abort() in the process running the cell: no worker of its own, as ORT runs."""
    name = "fake-abort-inproc"
    isolated = False


class SegfaultingInProcess(_Base):
    """SIGSEGV in the process running the cell, as a native kernel bug would raise it."""
    name = "fake-segv-inproc"
    isolated = False

    def prepare(self, model):
        def hook(out, feeds):
            if _marker(feeds):
                os.kill(os.getpid(), signal.SIGSEGV)
            return out
        return _RefSession(Reference().prepare(model), hook)


class Hanging(_Base):
    name = "fake-hang"

    def prepare(self, model):
        def hook(out, feeds):
            if _marker(feeds):
                time.sleep(3600)
            return out
        return _RefSession(Reference().prepare(model), hook)


class HangingInProcess(Hanging):
    """Hangs in the process running the cell (a deadlocked kernel), with no worker of its own."""
    name = "fake-hang-inproc"
    isolated = False


class Refusing(_Base):
    name = "fake-refuse"
    isolated = False

    def prepare(self, model):
        raise RuntimeError("fake-refuse: op X is not implemented <script>alert(1)</script>")


class Breaking(_Base):
    name = "fake-break"
    isolated = False

    def prepare(self, model):
        def hook(out, feeds):
            raise ValueError("fake-break: kernel failed while running")
        return _RefSession(Reference().prepare(model), hook)


class Lying(_Base):
    name = "fake-lie"
    isolated = False

    def prepare(self, model):
        def hook(out, feeds):
            return {k: (np.asarray(v) * 1.01).astype(np.asarray(v).dtype) for k, v in out.items()}
        return _RefSession(Reference().prepare(model), hook)


class Missing(_Base):
    name = "fake-missing"
    isolated = False

    def available(self):
        return False, "fake-missing: no such device"

    def prepare(self, model):  # pragma: no cover - never called when unavailable
        raise AssertionError("prepare called on an unavailable backend")


class SubsetSkipping(Lying):
    """Would fail every cell, but the harness's subset rule skips them all first (as the WebGPU
    columns skip 7 op cases in 8 in the main job): a skip is no verdict and gets no bundle."""
    name = "fake-subset-skip"

    def subset_skip(self, case_id):
        return "fake-subset-skip: outside this column's subset"


ALL = "fake-abort=tests.fake_backends:Aborting,fake-hang=tests.fake_backends:Hanging," \
      "fake-refuse=tests.fake_backends:Refusing,fake-break=tests.fake_backends:Breaking," \
      "fake-lie=tests.fake_backends:Lying,fake-missing=tests.fake_backends:Missing," \
      "fake-abort-inproc=tests.fake_backends:AbortingInProcess,fake-segv-inproc=tests.fake_backends:SegfaultingInProcess," \
      "fake-hang-inproc=tests.fake_backends:HangingInProcess,fake-subset-skip=tests.fake_backends:SubsetSkipping"


class AbortingAtStart(_Base):
    """Dies while the worker sets up its backends, before any cell (not in ALL: listing it aborts)."""
    name = "fake-abort-at-start"
    isolated = False

    def available(self):
        os.abort()

    def prepare(self, model):  # pragma: no cover - never reached
        raise AssertionError("prepare after an abort")


def _always() -> bool:
    """ONNX_COMPAT_FAKE_ALWAYS=1: misbehave on every cell, not only the marked ones."""
    return bool(os.environ.get("ONNX_COMPAT_FAKE_ALWAYS"))


def _kill_now(feeds) -> bool:
    """ONNX_COMPAT_FAKE_KILL: "always" (default) kills on every marked cell, "never" on none,
    "once" only the first time a cell's feeds come (a flag per feeds in ONNX_COMPAT_FAKE_KILL_DIR)."""
    import hashlib
    from pathlib import Path

    mode = os.environ.get("ONNX_COMPAT_FAKE_KILL", "always")
    if mode == "never" or not (_always() or _marker(feeds)):
        return False
    if mode == "once":
        h = hashlib.sha256(b"".join(np.ascontiguousarray(feeds[k]).tobytes() for k in sorted(feeds))).hexdigest()
        flag = Path(os.environ["ONNX_COMPAT_FAKE_KILL_DIR"]) / h[:16]
        if flag.exists():
            return False
        flag.write_text("killed once")
    return True


class KilledFromOutside(_Base):
    """Its worker process gets SIGKILL (or ONNX_COMPAT_FAKE_KILL_SIGNAL) while running a cell: what
    a user's `kill -9` or the out-of-memory killer does to a tract worker."""
    name = "fake-killed"

    def prepare(self, model):
        def hook(out, feeds):
            if _kill_now(feeds):
                os.kill(os.getpid(), getattr(signal, os.environ.get("ONNX_COMPAT_FAKE_KILL_SIGNAL", "SIGKILL")))
                time.sleep(60)
            return out
        return _RefSession(Reference().prepare(model), hook)


class KilledFromOutsideInProcess(KilledFromOutside):
    """The same kill of the process running the cell (a pool worker), with no worker of its own."""
    name = "fake-killed-inproc"
    isolated = False


class HangingInDecode(_Base):
    """Hangs on a decode step of a zoo model (a step that is fed a KV cache), in the process
    running the cell: a deadlocked kernel inside the decode loop, with no worker of its own."""
    name = "fake-hang-decode-inproc"
    isolated = False

    def prepare(self, model):
        def hook(out, feeds):
            if any("past" in k and np.asarray(v).ndim >= 2 and np.asarray(v).shape[-2] > 0 for k, v in feeds.items()):
                time.sleep(3600)
            return out
        return _RefSession(Reference().prepare(model), hook)


class HangingAlwaysInProcess(Hanging):
    """Hangs on every cell, in the process running it."""
    name = "fake-hang-always-inproc"
    isolated = False

    def prepare(self, model):
        def hook(out, feeds):
            time.sleep(3600)
        return _RefSession(Reference().prepare(model), hook)


ROUND2 = "fake-killed=tests.fake_backends:KilledFromOutside," \
         "fake-killed-inproc=tests.fake_backends:KilledFromOutsideInProcess," \
         "fake-hang-decode-inproc=tests.fake_backends:HangingInDecode," \
         "fake-hang-always-inproc=tests.fake_backends:HangingAlwaysInProcess," \
         "fake-segv-inproc=tests.fake_backends:SegfaultingInProcess"
