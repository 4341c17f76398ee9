"""The JavaScript ONNX Runtime columns, each in a Node worker process (js/worker.mjs):

- `ort-node`: onnxruntime-node, CPU EP (what transformers.js runs in Node);
- `ort-web`: onnxruntime-web's WASM EP as transformers.js 4.3 loads it in a browser
  (`onnxruntime-web/webgpu` -> ort.webgpu.bundle.min.mjs + the asyncify WASM binary), in Node;
- `ort-web-chromium`: the same bundle and binary in headless Chromium, served from 127.0.0.1.

Frames on the worker's stdin/stdout (js/protocol.mjs) carry a JSON header and raw tensor
bytes, so values cross without loss (int64, fp16 bits, bool, 0-d, int4/uint4 packed). The
isolation rules are tract's: the worker dying is `crash`, no answer in time is `timeout` (the
worker's process group is killed, Chromium included), and the next cell gets a fresh worker.
Install: `onnx-compat install-js` (npm ci in js/ from the shipped lock file).
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .base import Backend, Crashed, ModelRef, Session, TimedOut, Unsupported
from .worker import _signal_name

MAGIC = b"OCJ1"
STDERR_TAIL = 4000
INSTALL = "onnx-compat install-js"
#: the message of a refusal that only the model's declared output shapes cause (see _shape_only)
SHAPE_ONLY = "refused only because of the model's declared output shapes (native ORT tolerates them)"

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


# ---------------------------------------------------------------------------------------------
# sessions and backends


def _external_files(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out = []
    for t in list(model.graph.initializer):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            out += [e.value for e in t.external_data if e.key == "location"]
    return sorted(set(out))


def _native_ort_loads(path: Path) -> bool:
    """The claim in SHAPE_ONLY, checked: native onnxruntime (CPU EP) creates a session from the
    model as declared."""
    try:
        import onnxruntime

        so = onnxruntime.SessionOptions()
        so.log_severity_level = 4
        onnxruntime.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - refused natively too: not the JS runtime's strictness
        return False
    return True


class JsSession(Session):
    def __init__(self, worker: JsWorker, inputs: list[str], outputs: list[str]):
        self.worker, self.inputs, self.outputs = worker, inputs, outputs

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise RuntimeError(f"no feed for graph input(s) {missing}")
        descs, blobs, offset = [], [], 0
        for n in self.inputs:
            d, b = pack_tensor(n, feeds[n])
            descs.append({**d, "offset": offset})
            blobs.append(b)
            offset += len(b)
        reply, payload = self.worker.request({"op": "run", "tensors": descs}, blobs)
        if not reply.get("ok"):
            if reply.get("kind") == "unsupported":
                raise Unsupported(reply.get("message", ""))
            raise RuntimeError(reply.get("message", ""))
        return {d["name"]: unpack_tensor(d, payload) for d in reply["tensors"]}


class OrtJsBackend(Backend):
    mode = ""
    package = ""
    #: per-request limit; `backends.get(..., timeout=)` sets it from `run --timeout`
    cell_timeout = 120.0

    def __init__(self) -> None:
        self._worker: JsWorker | None = None

    def subset_skip(self, case_id: str) -> str:
        """The main job leaves the long-prompt twins to the nightly on these columns (long_subset.py)."""
        from .long_subset import long_prompt_skip

        return long_prompt_skip(case_id)

    def available(self) -> tuple[bool, str]:
        if not node_exe():
            return False, f"no `node` on PATH (install Node.js >= 18, e.g. apt-get install nodejs npm), then run `{INSTALL}`"
        major, minor = _node_major_minor()
        if (major, minor) < (20, 6):  # import.meta.resolve, which finds the bundle as a bundler would
            return False, f"node {_node_version()} is too old: the JS columns need Node.js >= 20.6"
        want = _pinned(self.package)
        have = _installed(self.package)
        if have is None:
            return False, f"{self.package} is not installed in {js_dir()}/node_modules; run `{INSTALL}`"
        if want and have != want:
            return False, f"{self.package} {have} is installed but js/package-lock.json pins {want}; run `{INSTALL}`"
        return True, ""

    def version(self) -> str:
        return f"{self.package} {_installed(self.package) or 'not installed'}; {self.detail}; node {_node_version()}"

    @property
    def detail(self) -> str:
        return ""

    def prepare(self, model: ModelRef) -> Session:
        if self._worker is None:
            self._worker = JsWorker(self.mode, self.cell_timeout)
        path = model.path
        header = {"op": "prepare", "model": str(path.resolve())}
        if self.mode != "node":
            header["external"] = _external_files(path)
        reply, _ = self._worker.request(header)
        self.last_prepare = reply  # what the page said beyond ok (the WebGPU column's node placement)
        if not reply.get("ok"):
            message = reply.get("message", "")
            if self._shape_only(path):
                message = f"{SHAPE_ONLY}: {message}"
            raise Unsupported(message)
        return JsSession(self._worker, reply["inputs"], reply["outputs"])

    def _shape_only(self, path: Path) -> bool:
        """Does the same model load once its graph outputs' declared shapes are dropped (types
        kept), and does native ORT load it as declared? Then the refusal is this runtime's strict
        merge of inferred and declared output shapes."""
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        declared = [o for o in model.graph.output if o.type.HasField("tensor_type") and o.type.tensor_type.HasField("shape")]
        if not declared:
            return False
        for o in declared:
            o.type.tensor_type.ClearField("shape")
        external = _external_files(path)
        # external data is found relative to the model file: then the copy sits next to it
        fd, name = tempfile.mkstemp(prefix=".onnx-compat-shapes-", suffix=".onnx", dir=path.parent if external else None)
        os.close(fd)
        stripped = Path(name)
        try:
            onnx.save(model, str(stripped))
            header = {"op": "prepare", "model": str(stripped.resolve())}
            if self.mode != "node":
                header["external"] = external
            assert self._worker is not None
            reply, _ = self._worker.request(header)
        finally:
            stripped.unlink(missing_ok=True)
        return bool(reply.get("ok")) and _native_ort_loads(path)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


class OrtNode(OrtJsBackend):
    name = "ort-node"
    description = "onnxruntime-node (npm), CPU EP, in a Node worker (onnx-compat install-js)"
    mode = "node"
    package = "onnxruntime-node"
    provider = "CPUExecutionProvider"  # what refusals the operator text requires are matched on

    @property
    def detail(self) -> str:
        return "CPU EP, default session options"


class OrtWeb(OrtJsBackend):
    name = "ort-web"
    description = "onnxruntime-web WASM EP as transformers.js 4.3 loads it, in a Node worker (onnx-compat install-js)"
    mode = "web"
    package = "onnxruntime-web"
    # the WASM EP runs ORT's CPU EP kernels compiled to WASM (its refusals name ep:'CPUExecutionProvider')
    provider = "CPUExecutionProvider"

    @property
    def detail(self) -> str:
        return "WASM EP; onnxruntime-web/webgpu bundle + asyncify binary (as transformers.js 4.3); 1 thread"


class OrtWebChromium(OrtWeb):
    name = "ort-web-chromium"
    description = "onnxruntime-web WASM EP as transformers.js 4.3 loads it, in headless Chromium (onnx-compat install-js)"
    mode = "chromium"

    def available(self) -> tuple[bool, str]:
        ok, why = super().available()
        if not ok:
            return ok, why
        if not chromium_exe():
            return False, "no `chromium` on PATH (Debian: apt-get install chromium; or set ONNX_COMPAT_CHROMIUM)"
        return True, ""

    @property
    def detail(self) -> str:
        return super().detail + f"; {_chromium_version()}"


# ---------------------------------------------------------------------------------------------
# versions (read from files; no worker started)


@functools.cache
def _pinned(package: str) -> str | None:
    try:
        lock = json.loads((js_dir() / "package-lock.json").read_text())
    except (OSError, ValueError):
        return None
    return lock.get("packages", {}).get(f"node_modules/{package}", {}).get("version")


def _installed(package: str) -> str | None:
    try:
        return json.loads((js_dir() / "node_modules" / package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


@functools.cache
def _node_version() -> str:
    try:
        return subprocess.run([node_exe() or "node", "--version"], capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"unknown ({e})"


def _node_major_minor() -> tuple[int, int]:
    import re

    m = re.match(r"v(\d+)\.(\d+)", _node_version())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@functools.cache
def _chromium_version() -> str:
    exe = chromium_exe()
    if not exe:
        return "chromium not found"
    try:
        return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"chromium version unknown ({e})"


def install_js() -> int:
    """`onnx-compat install-js`: `npm ci` in js/ from the shipped lock file. onnxruntime-node's
    postinstall would fetch a CUDA provider from a host this network cannot reach; its CPU
    binary ships in the package, so that step is skipped."""
    import sys

    npm = shutil.which("npm")
    if not node_exe() or not npm:
        print("onnx-compat install-js: error: needs `node` and `npm` on PATH (Node.js >= 18; Debian: apt-get install "
              "nodejs npm)", file=sys.stderr)
        return 2
    env = dict(os.environ, ONNXRUNTIME_NODE_INSTALL_CUDA="skip")
    cmd = [npm, "ci", "--no-audit", "--no-fund"]
    print(f"onnx-compat install-js: {' '.join(cmd)} in {js_dir()} (ONNXRUNTIME_NODE_INSTALL_CUDA=skip)", file=sys.stderr)
    rc = subprocess.run(cmd, cwd=str(js_dir()), env=env, check=False).returncode
    if rc != 0:
        print(f"onnx-compat install-js: error: npm ci exited {rc}; see npm's output above", file=sys.stderr)
        return 3
    for cls in (OrtNode, OrtWeb, OrtWebChromium):
        ok, why = cls().available()
        print(f"{cls.name:<17} {'available' if ok else 'unavailable: ' + why}")
    return 0
