"""The one interface every backend implements (Polygraphy's runner idea).

`prepare` failing means the backend refused the model (-> `unsupported`, its message kept);
`Session.run` failing means it loaded and then broke (-> `error`). Isolated backends raise
`Crashed` / `TimedOut` instead when their worker process dies or hangs.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

if TYPE_CHECKING:  # a ModelRef on a path needs no onnx (ORT and tract read the file): imported on first use
    import tempfile

    import onnx


class Crashed(RuntimeError):
    """The process running the backend died; the message names the signal or exit code."""


class KilledFromOutside(Crashed):
    """The process running the backend was killed by a signal that does not come from the case
    (SIGKILL, SIGTERM, SIGINT, SIGHUP, SIGQUIT: a user, the OOM killer, a shutdown), where a
    backend's own fault raises SIGSEGV/SIGABRT/SIGBUS/SIGFPE/SIGILL or exits. Not the backend's
    crash: the cell runs again (`signal` names what killed it)."""

    def __init__(self, message: str, signal_name: str):
        super().__init__(message)
        self.signal_name = signal_name


#: signals a process does not raise on itself when its code goes wrong: someone else sent them
EXTERNAL_SIGNALS = ("SIGKILL", "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")


def external_signal(returncode: int | None) -> str | None:
    """The signal's name when a process with this return code was killed from outside, else None."""
    import signal

    if returncode is None or returncode >= 0:
        return None
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return None
    return name if name in EXTERNAL_SIGNALS else None


class TimedOut(RuntimeError):
    """The backend gave no answer within the per-cell limit."""


class DeviceLacks(RuntimeError):
    """The device cannot run this model at all (a WebGPU adapter without `shader-f16` handed an
    fp16 program; no adapter, so ORT fell back to the CPU EP): `unavailable`, never a finding."""


class Unsupported(RuntimeError):
    """The backend refused the model; raised from `run` by backends that only type a model
    once concrete input shapes are known (tract), so the refusal is not taken for an error."""


class ModelRef:
    """A model as a proto, a file, or both; each form made on first use and kept."""

    def __init__(self, proto: onnx.ModelProto | None = None, path: str | os.PathLike | None = None):
        if proto is None and path is None:
            raise ValueError("ModelRef needs a proto or a path")
        self._proto = proto
        self._path = Path(path) if path is not None else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._bytes: bytes | None = None
        self._size: int | None = None
        #: facts a backend derives from these bytes once for all its sessions (ORT: the graph's
        #: input and output names and whether any needs an OrtValue), keyed by the backend's choice
        self.memo: dict[str, object] = {}

    @property
    def proto(self) -> onnx.ModelProto:
        if self._proto is None:
            import onnx

            self._proto = onnx.load(str(self._path))
        return self._proto

    @property
    def path(self) -> Path:
        if self._path is None:
            import tempfile  # only for a model written out; ~3 ms to import

            self._tmp = tempfile.TemporaryDirectory(prefix="onnx-compat-model-")
            p = Path(self._tmp.name) / "model.onnx"
            import onnx

            onnx.save(self._proto, str(p))
            self._path = p
        return self._path

    @property
    def on_disk(self) -> bool:
        """A file that has not been loaded: hand runtimes the path (external data, no copy)."""
        return self._path is not None and self._proto is None

    def byte_size(self) -> int:
        """The serialised size, computed once (every backend of a case asks, to choose between
        bytes and a file; ByteSize walks the whole proto each time)."""
        if self._size is None:
            self._size = len(self._bytes) if self._bytes is not None else self.proto.ByteSize()
        return self._size

    def serialized(self) -> bytes:
        """The model's bytes, made once: a run hands one ModelRef to every backend of a case."""
        if self._bytes is None:
            if self._proto is None and self._path is not None:
                return self._path.read_bytes()
            self._bytes = self.proto.SerializeToString()
        return self._bytes


class Session(ABC):
    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by graph output name."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class Backend(ABC):
    name: str = ""
    description: str = ""
    #: cells of an isolated backend run in a worker process (crash/hang cost one cell)
    isolated: bool = False
    #: runs native code that can take its process down (a segfault in a kernel): pytest and `check`
    #: run it in a worker process (harness/backends/worker.py, `isolatable`); False: numpy only
    native: bool = True
    #: a whole-model runtime (ort-genai) says here why op cases are not its to run; "" runs them
    zoo_only: str = ""
    #: a column too slow for the main job (the WebGPU ones) gives a method: case id -> why it is
    #: skipped there, or ""; None runs every case
    subset_skip: Callable[[str], str] | None = None

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") or (False, why not)."""

    @abstractmethod
    def version(self) -> str:
        """Version string recorded in every result (with the settings that change numerics)."""

    @abstractmethod
    def prepare(self, model: ModelRef) -> Session:
        ...

    def close(self) -> None:  # noqa: B027
        pass
