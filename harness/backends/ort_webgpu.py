"""`ort-webgpu`: ONNX Runtime's native WebGPU EP (PyPI `onnxruntime-webgpu` 1.27.0, Dawn inside).

The wheel installs the same `onnxruntime` module as the core's CPU wheel, so it lives in its own
venv (`onnx-compat install-webgpu` -> .zoo-envs/ort-webgpu) and every cell runs in a worker
process started with that venv's Python (harness/backends/worker.py; a crash or hang costs one
cell). The worker's side is `NativeWebgpu` below.

The adapter: Dawn finds Vulkan devices through the Vulkan loader. On a machine without a GPU,
the software one is SwiftShader's Vulkan ICD that Debian's `chromium` package ships
(libvk_swiftshader.so + vk_swiftshader_icd.json, whose `library_path` is relative): the worker
gets VK_ICD_FILENAMES pointing at a copy with an absolute path (and Chromium's libvulkan.so.1
where the system has no Vulkan loader). Mesa's lavapipe is rejected by Dawn, and ORT then falls
back to the CPU EP with only a log line, so each cell reads the session's profile for where the
nodes ran (webgpu_common). ONNX_COMPAT_WEBGPU_ADAPTER=system leaves the machine's own Vulkan
drivers (a GPU) to Dawn.
"""

from __future__ import annotations

import ctypes.util
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .base import Backend, DeviceLacks, ModelRef, Session, Unsupported
from .ort import OrtSession, _ort
from .webgpu_common import (PROVIDER, SLOW_FACTOR, SOFTWARE_LABEL, f16_unavailable, lacks_f16, placement_note,
                            subset_skip)
from .worker import IsolatedSession, WorkerProcess

WHEEL = "onnxruntime-webgpu==1.27.0"
#: what the column's venv holds: the wheel and what the harness's worker imports
VENV_PACKAGES = [WHEEL, "numpy>=1.26", "onnx>=1.19", "ml_dtypes>=0.5"]
INSTALL = "onnx-compat install-webgpu"
INNER = "harness.backends.ort_webgpu:NativeWebgpu"
#: where distributions put Chromium's bundled SwiftShader (Debian/Ubuntu, Fedora)
SWIFTSHADER_DIRS = ("/usr/lib/chromium", "/usr/lib/chromium-browser", "/usr/lib64/chromium-browser")
SWIFTSHADER_ADAPTER = "Vulkan SwiftShader (Chromium's libvk_swiftshader.so) [software; no shader-f16]"


def venv_dir() -> Path:
    env = os.environ.get("ONNX_COMPAT_WEBGPU_VENV")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".zoo-envs" / "ort-webgpu"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def adapter_mode() -> str:
    return "system" if os.environ.get("ONNX_COMPAT_WEBGPU_ADAPTER") == "system" else "swiftshader"


def swiftshader_dir() -> Path | None:
    env = os.environ.get("ONNX_COMPAT_SWIFTSHADER_DIR")
    for d in ([env] if env else SWIFTSHADER_DIRS):
        p = Path(d)
        if (p / "libvk_swiftshader.so").is_file() and (p / "vk_swiftshader_icd.json").is_file():
            return p
    return None


@functools.cache
def vulkan_env() -> dict[str, str]:
    """The worker's environment for the chosen adapter (made once per process, in a temp dir
    that this process owns)."""
    if adapter_mode() == "system":
        return {}
    src = swiftshader_dir()
    if src is None:
        return {}
    tmp = Path(tempfile.mkdtemp(prefix="onnx-compat-vulkan-"))
    icd = json.loads((src / "vk_swiftshader_icd.json").read_text())
    icd.setdefault("ICD", {})["library_path"] = str((src / "libvk_swiftshader.so").resolve())
    (tmp / "vk_swiftshader_icd.json").write_text(json.dumps(icd))
    env = {"VK_ICD_FILENAMES": str(tmp / "vk_swiftshader_icd.json"), "VK_DRIVER_FILES": str(tmp / "vk_swiftshader_icd.json")}
    if ctypes.util.find_library("vulkan") is None and (src / "libvulkan.so.1").is_file():
        os.symlink((src / "libvulkan.so.1").resolve(), tmp / "libvulkan.so.1")  # the loader Dawn dlopens
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(tmp), os.environ.get("LD_LIBRARY_PATH")]))
    return env


_PROBE = r"""
import json, os, tempfile, numpy as np, onnx, onnxruntime as ort
from onnx import helper as h, TensorProto as T
out = {"version": ort.__version__, "providers": ort.get_available_providers()}
try:
    g = h.make_graph([h.make_node("MatMul", ["a", "b"], ["c"])], "probe",
                     [h.make_tensor_value_info("a", T.FLOAT, [2, 3]), h.make_tensor_value_info("b", T.FLOAT, [3, 4])],
                     [h.make_tensor_value_info("c", T.FLOAT, [2, 4])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)]); m.ir_version = 8
    so = ort.SessionOptions(); so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["WebGpuExecutionProvider"])
    out["session_providers"] = s.get_providers()
    c = s.run(None, {"a": np.ones((2, 3), np.float32), "b": np.ones((3, 4), np.float32)})[0]
    out["ran"] = bool(np.all(c == 3))
except Exception as e:
    out["error"] = str(e).strip().splitlines()[0][:400]
print(json.dumps(out))
"""


def probe() -> dict:
    """What the venv's onnxruntime does on this machine: version, providers, and whether a
    one-MatMul session keeps the WebGPU EP (stderr holds ORT's own fallback message); asked once
    per process for each venv and adapter environment."""
    return _probe(str(venv_python()), json.dumps(vulkan_env(), sort_keys=True))


@functools.cache
def _probe(python: str, env_json: str) -> dict:
    try:
        r = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, **json.loads(env_json)), check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": f"the venv's python did not run ({e})"}
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"the venv's probe failed: {(r.stderr or r.stdout).strip()[-400:]}"}
    said = [ln for ln in r.stderr.splitlines() if "adapter" in ln.lower() or "Falling back" in ln]
    if said:
        out["stderr"] = " ".join(s.strip() for s in said)[:500]
    return out


class OrtWebgpu(Backend):
    name = "ort-webgpu"
    description = ("ONNX Runtime's native WebGPU EP (onnxruntime-webgpu 1.27.0, own venv: onnx-compat "
                   "install-webgpu); a software adapter (SwiftShader Vulkan) without a GPU")
    provider = PROVIDER
    _cell_timeout = 120.0

    def __init__(self) -> None:
        self._worker: WorkerProcess | None = None

    @property
    def cell_timeout(self) -> float:
        return self._cell_timeout * (SLOW_FACTOR if adapter_mode() == "swiftshader" else 1.0)

    @cell_timeout.setter
    def cell_timeout(self, value: float) -> None:
        self._cell_timeout = value

    def subset_skip(self, case_id: str) -> str:
        return subset_skip(case_id, adapter_mode() == "swiftshader")

    def available(self) -> tuple[bool, str]:
        if not venv_python().exists():
            return False, (f"no venv with onnxruntime-webgpu (.zoo-envs/ort-webgpu, or ONNX_COMPAT_WEBGPU_VENV); run "
                           f"`{INSTALL}` (python -m venv + pip install {WHEEL})")
        if adapter_mode() == "swiftshader" and swiftshader_dir() is None:
            return False, ("no SwiftShader Vulkan ICD (libvk_swiftshader.so + vk_swiftshader_icd.json) in "
                           f"{', '.join(SWIFTSHADER_DIRS)}: Debian's `apt-get install chromium` ships it (or set "
                           "ONNX_COMPAT_SWIFTSHADER_DIR; on a GPU machine ONNX_COMPAT_WEBGPU_ADAPTER=system)")
        p = probe()
        if "providers" not in p:
            return False, f"{p.get('error')}; rerun `{INSTALL}`"
        if PROVIDER not in p["providers"]:
            return False, f"the venv's onnxruntime {p['version']} has no {PROVIDER} ({p['providers']}); rerun `{INSTALL}`"
        if PROVIDER not in p.get("session_providers", []) or "error" in p:
            return False, ("a WebGPU session fell back to the CPU EP: Dawn found no usable adapter ("
                           + (p.get("error") or p.get("stderr") or f"session providers {p.get('session_providers')}")
                           + "); lavapipe is rejected by Dawn: point at SwiftShader (see README)")
        return True, ""

    def version(self) -> str:
        p = probe() if venv_python().exists() else {}
        ver = p.get("version", "not installed")
        adapter = SWIFTSHADER_ADAPTER if adapter_mode() == "swiftshader" else "the machine's Vulkan drivers (ONNX_COMPAT_WEBGPU_ADAPTER=system)"
        return (f"onnxruntime-webgpu {ver}; providers={PROVIDER} (+ CPU EP for nodes without a WebGPU kernel); "
                f"graph_optimization_level=ORT_ENABLE_ALL (default); adapter: {adapter}")

    def prepare(self, model: ModelRef) -> Session:
        if self._worker is None:
            self._worker = WorkerProcess(INNER, self.cell_timeout, python=str(venv_python()), env=vulkan_env(),
                                         label=self.name)
        reply = self._worker.request({"op": "prepare", "model": str(Path(model.path).resolve())})
        if not reply.get("ok"):
            if reply.get("kind") == "unavailable":
                raise DeviceLacks(reply.get("message", ""))
            raise Unsupported(reply.get("message", ""))
        session = IsolatedSession(self._worker)
        session.finding_label = SOFTWARE_LABEL if adapter_mode() == "swiftshader" else ""  # type: ignore[attr-defined]
        return session

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


# ---------------------------------------------------------------------------------------------
# the worker's side (runs in the column's venv)


class NativeWebgpuSession(OrtSession):
    """An ORT session on the WebGPU EP whose first run is profiled: the profile names the
    provider of every kernel that ran, so the note says which nodes ran on the CPU, and a
    session with none on the WebGPU EP is `unavailable` (a fallback, not a WebGPU result)."""

    def __init__(self, sess, adapter: str):
        super().__init__(sess)
        self._adapter = adapter
        self._profiled = False

    def run(self, feeds):
        try:
            out = super().run(feeds)
        except Exception as e:  # noqa: BLE001 - re-raised unless it is the device's limit
            if lacks_f16(str(e)):
                raise f16_unavailable(str(e), self._adapter) from None
            raise
        if not self._profiled:
            self._profiled = True
            self.note = placement_note(_placement(self._sess.end_profiling()), "from the session's profile")
        return out


def _placement(profile: str) -> dict[str, dict]:
    """{provider: {count, nodes}} from an ORT profile (the kernel events of the profiled runs)."""
    try:
        events = json.loads(Path(profile).read_text())
    finally:
        Path(profile).unlink(missing_ok=True)
    out: dict[str, dict] = {}
    seen = set()
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or "provider" not in args:
            continue
        node = e["name"][: -len("_kernel_time")]
        if node in seen:
            continue
        seen.add(node)
        d = out.setdefault(args["provider"], {"count": 0, "nodes": []})
        d["count"] += 1
        d["nodes"].append(f"{args.get('op_name', '?')} ({node})")
    return out


class NativeWebgpu(Backend):
    """The worker's backend: one WebGPU session per prepare, default session options."""

    name = "ort-webgpu"
    provider = PROVIDER

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="onnx-compat-webgpu-profile-")

    def available(self) -> tuple[bool, str]:
        ort = _ort()
        return (PROVIDER in ort.get_available_providers(), "")

    def version(self) -> str:
        return f"onnxruntime-webgpu {_ort().__version__}"

    def prepare(self, model: ModelRef) -> Session:
        ort = _ort()
        so = ort.SessionOptions()
        so.log_severity_level = 4
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(self._dir, "profile")
        try:
            sess = ort.InferenceSession(str(model.path), sess_options=so, providers=[PROVIDER])
        except Exception as e:
            if lacks_f16(str(e)):
                raise f16_unavailable(str(e), SWIFTSHADER_ADAPTER) from None
            raise
        if PROVIDER not in sess.get_providers():
            raise DeviceLacks(f"ORT fell back to {sess.get_providers()}: the WebGPU EP could not start (no adapter)")
        adapter = SWIFTSHADER_ADAPTER if "VK_ICD_FILENAMES" in os.environ else "the machine's Vulkan adapter"
        return NativeWebgpuSession(sess, adapter)

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def install_webgpu() -> int:
    """`onnx-compat install-webgpu`: the column's venv (.zoo-envs/ort-webgpu) with the pinned wheel."""
    d = venv_dir()
    print(f"onnx-compat install-webgpu: python -m venv {d.name} (under {d.parent.name}/) + pip install {' '.join(VENV_PACKAGES)}",
          file=sys.stderr)
    if not venv_python().exists():
        rc = subprocess.run([sys.executable, "-m", "venv", str(d)], check=False).returncode
        if rc != 0:
            print(f"onnx-compat install-webgpu: error: python -m venv exited {rc} (Debian: apt-get install python3-venv)",
                  file=sys.stderr)
            return 3
    rc = subprocess.run([str(venv_python()), "-m", "pip", "install", "-q", *VENV_PACKAGES], check=False).returncode
    if rc != 0:
        print(f"onnx-compat install-webgpu: error: pip install exited {rc}; see pip's output above", file=sys.stderr)
        return 3
    _probe.cache_clear()
    ok, why = OrtWebgpu().available()
    print(f"ort-webgpu  {'available' if ok else 'unavailable: ' + why}")
    return 0
