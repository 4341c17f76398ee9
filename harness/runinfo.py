"""run.json beside results.jsonl: which machine, when, and which versions produced each backend's
cells. Keyed per backend, so a report merging a CPU run with a GPU run (`onnx-compat report
A.jsonl B.jsonl`) says each column's own date and device.

It records what can change a verdict between two runs of one commit: the versions of the
packages constraints.txt pins (and any drift from it), and the CPU's vector instruction sets,
since tract picks its kernels by them (on a host without AVX-512 its float16 activations take
other kernels and six fp16 activation cells change verdict: docs/determinism.md)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

NAME = "run.json"
PACKAGES = ["onnx-compat", "onnx", "onnxruntime", "onnxruntime-gpu", "tract", "numpy", "ml_dtypes",
            "onnx_ir", "openvino", "onnxruntime-genai", "torch", "transformers"]
#: the instruction sets runtimes dispatch kernels on (/proc/cpuinfo flag names)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "amx_bf16", "amx_int8", "neon", "asimd", "fphp", "asimdhp", "sve", "sve2")
#: environment variables that change which kernels a runtime picks
KERNEL_ENV = ("TRACT_CPU_ISA", "OMP_NUM_THREADS")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _isa() -> list[str]:
    """The CPU's vector instruction sets among ISA_FLAGS (Linux; [] elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return []


def _gpu() -> str | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True,
                             check=False, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return "; ".join(f"{n.strip()} (driver {d.strip()})" for n, _, d in (x.partition(",") for x in out.splitlines())) or None


def machine() -> dict[str, Any]:
    """This process's machine and package versions, now."""
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    from .constraints import drift

    info = {"host": socket.gethostname(), "cpu": _cpu(), "cpus": os.cpu_count(), "isa": _isa(),
            "platform": platform.platform(), "python": sys.version.split()[0],
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "packages": versions,
            "constraints_drift": {k: {"installed": h, "pinned": w} for k, (h, w) in drift().items()}}
    env = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    if env:
        info["kernel_env"] = env
    return info


def describe(backends: dict[str, tuple[str, str | None]], devices: dict[str, str] | None = None) -> dict[str, Any]:
    """run.json's content for backends given as name -> (version, execution provider or None):
    a CUDA provider's device is the GPU nvidia-smi names, a backend that names its own device
    (`devices`: OpenVINO's FULL_DEVICE_NAME) that one, every other backend's the CPU."""
    m = machine()
    gpu = _gpu() if any((p or "").startswith("CUDA") for _, p in backends.values()) else None
    out = {}
    for name, (version, provider) in backends.items():
        dev = gpu if gpu and (provider or "").startswith("CUDA") else m["cpu"]
        if provider == "WebGpuExecutionProvider":  # the WebGPU adapter, as the column's version names it
            dev = _webgpu_adapter(version) or dev
        out[name] = {**m, "backend_version": version, "device": (devices or {}).get(name) or dev}
    return {"backends": out}


def _webgpu_adapter(version: str) -> str | None:
    import re

    m = re.search(r"adapter:? (.+?\])", version) or re.search(r"adapter:? ([^;]+)", version)
    return f"WebGPU adapter {m.group(1)}" if m else None


def write(out_dir: str | os.PathLike, info: dict[str, Any], keep_existing: bool = False) -> Path:
    """Atomically; with `keep_existing` (a resumed run) backends already recorded keep their entry."""
    from .results import atomic_write_text

    path = Path(out_dir) / NAME
    if keep_existing:
        old = read(path)
        info = {"backends": {**info["backends"], **old}}
    atomic_write_text(path, json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    return path


def read(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """backend -> its run's environment; {} when the file is absent or not a run.json (old runs)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    b = data.get("backends") if isinstance(data, dict) else None
    return {k: v for k, v in b.items() if isinstance(v, dict)} if isinstance(b, dict) else {}


def for_results(paths) -> dict[str, dict[str, Any]]:
    """Merged over the results files' sidecars; the first file naming a backend wins."""
    out: dict[str, dict[str, Any]] = {}
    for p in paths:
        for k, v in read(Path(p).parent / NAME).items():
            out.setdefault(k, v)
    return out
