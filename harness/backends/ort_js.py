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
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .base import Backend, ModelRef, Session, Unsupported
from .js_worker import (  # noqa: F401 - the protocol's names stay importable from here
    JsWorker, chromium_exe, js_dir, node_exe, pack_tensor, unpack_tensor,
)

INSTALL = "onnx-compat install-js"
#: the message of a refusal that only the model's declared output shapes cause (see _shape_only)
SHAPE_ONLY = "refused only because of the model's declared output shapes (native ORT tolerates them)"


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
