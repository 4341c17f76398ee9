"""The Node worker behind the JavaScript ONNX Runtime columns (harness/backends/ort_js.py): the
frame protocol of js/protocol.mjs (a JSON header and raw tensor bytes, so values cross without
loss: int64, fp16 bits, bool, 0-d, int4/uint4 packed) and the worker process itself, in its own
process group, killed with everything it started when it dies or does not answer in time."""

from __future__ import annotations

import json
import os
import select
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .base import Crashed, TimedOut, Unsupported
from .worker import _signal_name

MAGIC = b"OCJ1"
STDERR_TAIL = 4000

_TO_JS = {"float32": "float32", "float64": "float64", "float16": "float16", "int8": "int8", "uint8": "uint8",
          "int16": "int16", "uint16": "uint16", "int32": "int32", "uint32": "uint32", "int64": "int64",
          "uint64": "uint64", "bool": "bool", "int4": "int4", "uint4": "uint4"}
_FROM_JS = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
            "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
            "uint64": np.uint64, "bool": np.bool_}


def js_dir() -> Path:
    return Path(os.environ.get("ONNX_COMPAT_JS_DIR") or Path(__file__).resolve().parents[2] / "js")


def node_exe() -> str | None:
    return shutil.which(os.environ.get("ONNX_COMPAT_NODE") or "node")


def chromium_exe() -> str | None:
    env = os.environ.get("ONNX_COMPAT_CHROMIUM")
    return shutil.which(env) if env else shutil.which("chromium") or shutil.which("chromium-browser")


# ---------------------------------------------------------------------------------------------
# tensors <-> bytes


def _int4_dtypes():
    import ml_dtypes

    return {"int4": np.dtype(ml_dtypes.int4), "uint4": np.dtype(ml_dtypes.uint4)}


def pack_tensor(name: str, a: np.ndarray) -> tuple[dict, bytes]:
    """One feed as a descriptor and its exact bytes (int4/uint4: two to a byte, low nibble first)."""
    a = np.asarray(a)
    kind = a.dtype.name
    if kind not in _TO_JS:
        raise Unsupported(f"onnxruntime's JavaScript API has no tensor type for {kind} (input {name!r})")
    if kind in ("int4", "uint4"):
        nibbles = a.reshape(-1).view(np.uint8) & 0x0F
        if nibbles.size % 2:
            nibbles = np.concatenate([nibbles, np.zeros(1, np.uint8)])
        data = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
    else:
        data = np.ascontiguousarray(a).tobytes()
    return {"name": name, "dtype": _TO_JS[kind], "dims": list(a.shape), "nbytes": len(data)}, data


def unpack_tensor(desc: dict, payload: memoryview) -> np.ndarray:
    raw = bytes(payload[desc["offset"]:desc["offset"] + desc["nbytes"]])
    dims = tuple(int(d) for d in desc["dims"])
    kind = desc["dtype"]
    if kind in ("int4", "uint4"):
        packed = np.frombuffer(raw, np.uint8)
        nibbles = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(-1)[:int(np.prod(dims))]
        return nibbles.astype(np.uint8).view(_int4_dtypes()[kind]).reshape(dims)
    if kind not in _FROM_JS:
        raise RuntimeError(f"output {desc['name']!r} has JS tensor type {kind}, which onnx-compat cannot read")
    return np.frombuffer(raw, _FROM_JS[kind]).reshape(dims).copy()


def encode(header: dict, blobs: list[bytes] = ()) -> bytes:
    payload = sum(len(b) for b in blobs)
    text = json.dumps({**header, "payload": payload}).encode()
    return b"".join([MAGIC, struct.pack("<I", len(text)), text, *blobs])


# ---------------------------------------------------------------------------------------------
# the worker process


class JsWorker:
    """A live `node js/worker.mjs MODE` in its own process group."""

    def __init__(self, mode: str, timeout: float, startup: float = 60.0):
        self.mode, self.timeout, self.startup = mode, timeout, startup
        self.proc: subprocess.Popen | None = None
        self.hello: dict = {}
        self._stderr = None

    def _start(self) -> None:
        self._stderr = tempfile.TemporaryFile(prefix=f"onnx-compat-{self.mode}-")  # noqa: SIM115 - lives with the worker
        env = dict(os.environ, ONNXRUNTIME_NODE_INSTALL_CUDA="skip")
        if self.mode.startswith("chromium") and chromium_exe():
            env["ONNX_COMPAT_CHROMIUM"] = chromium_exe() or ""
        self.proc = subprocess.Popen([node_exe() or "node", str(js_dir() / "worker.mjs"), self.mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     cwd=str(js_dir()), env=env, start_new_session=True)
        self._buf = b""
        self.hello = self._exchange({"op": "hello"}, [], max(self.timeout, self.startup))[0]

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - STDERR_TAIL))
        return self._stderr.read().decode("utf-8", "replace").strip()

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                try:  # the worker's group: Chromium and its helpers go with it
                    os.killpg(self.proc.pid, 9)
                except ProcessLookupError:
                    pass
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                if f is not None and not f.closed:
                    f.close()
        self.proc = None
        if self._stderr is not None and not self._stderr.closed:
            self._stderr.close()
        self._stderr = None

    def _died(self, op: str) -> Crashed:
        code = self.proc.wait() if self.proc is not None else 0
        tail = self._stderr_tail()
        self.kill()
        return Crashed(f"{self.mode} worker {_signal_name(code)} during {op}" + (f"; stderr: {tail[-800:]}" if tail else ""))

    def _exchange(self, header: dict, blobs: list[bytes], limit: float) -> tuple[dict, memoryview]:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        op = header["op"]
        try:
            self.proc.stdin.write(encode(header, blobs))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(op) from None
        deadline = time.monotonic() + limit
        fd = self.proc.stdout.fileno()
        while True:
            frame = self._frame()
            if frame is not None:
                return frame
            left = deadline - time.monotonic()
            if left <= 0:
                tail = self._stderr_tail()
                self.kill()
                raise TimedOut(f"no answer from the {self.mode} worker within {limit:g} s ({op}); worker killed"
                               + (f"; stderr: {tail[-800:]}" if tail else ""))
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise self._died(op)
                self._buf += chunk

    def _frame(self) -> tuple[dict, memoryview] | None:
        buf = self._buf
        if len(buf) >= 4 and buf[:4] != MAGIC:
            self.kill()
            raise Crashed(f"the {self.mode} worker wrote something other than a frame on stdout: {buf[:80]!r}")
        if len(buf) < 8:
            return None
        (hlen,) = struct.unpack("<I", buf[4:8])
        if len(buf) < 8 + hlen:
            return None
        header = json.loads(buf[8:8 + hlen])
        end = 8 + hlen + header["payload"]
        if len(buf) < end:
            return None
        self._buf = buf[end:]
        return header, memoryview(buf)[8 + hlen:end]

    def request(self, header: dict, blobs: list[bytes] = ()) -> tuple[dict, memoryview]:
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            self._start()
        return self._exchange(header, list(blobs), self.timeout)

    def close(self) -> None:
        self.kill()
