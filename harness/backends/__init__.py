"""Backend registry: the `--backends` vocabulary (README "Backends", docs/architecture.md)."""

from __future__ import annotations

from typing import Callable

from .base import Backend, Crashed, DeviceLacks, ModelRef, Session, TimedOut, Unsupported


def _extra() -> dict[str, Callable[[], Backend]]:
    """Backends from ONNX_COMPAT_EXTRA_BACKENDS="name=module:Class,…" (plugins, test doubles)."""
    import importlib
    import os

    out: dict[str, Callable[[], Backend]] = {}
    for item in filter(None, (x.strip() for x in os.environ.get("ONNX_COMPAT_EXTRA_BACKENDS", "").split(","))):
        name, _, target = item.partition("=")
        mod, _, cls = target.partition(":")
        if not (name and mod and cls):
            raise KeyError(f"ONNX_COMPAT_EXTRA_BACKENDS entry {item!r}: write it as name=module:Class")
        out[name] = getattr(importlib.import_module(mod), cls)
    return out


#: built-in backends: name -> (module, class). Imported only when asked for: `check` on ORT alone
#: must not pay for onnx.reference, tract or the JS bridge (~1 s of imports together).
_BUILTIN: dict[str, tuple[str, str]] = {
    "reference": ("reference", "Reference"),
    "ort-cpu": ("ort", "OrtCpu"),
    "ort-cpu-noopt": ("ort", "OrtCpuNoOpt"),
    "ort-cuda": ("ort", "OrtCuda"),
    "ort-cuda-strict": ("ort", "OrtCudaStrict"),
    "tract": ("tract_backend", "Tract"),
    "tract-cli": ("tract_backend", "TractCli"),
    "ort-node": ("ort_js", "OrtNode"),
    "ort-web": ("ort_js", "OrtWeb"),
    "ort-web-chromium": ("ort_js", "OrtWebChromium"),
    "ort-genai": ("ort_genai", "OrtGenai"),
    "openvino": ("openvino_backend", "OpenVino"),
    "ort-web-webgpu": ("webgpu_web", "OrtWebWebgpu"),
    "ort-webgpu": ("ort_webgpu", "OrtWebgpu"),
}


def _builtin(module: str, cls: str) -> Callable[[], Backend]:
    def make() -> Backend:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{module}"), cls)()
    return make


def _registry() -> dict[str, Callable[[], Backend]]:
    builtin = {name: _builtin(mod, cls) for name, (mod, cls) in _BUILTIN.items()}
    extra = _extra()
    clash = set(extra) & set(builtin)
    if clash:
        raise KeyError(f"ONNX_COMPAT_EXTRA_BACKENDS redefines built-in backend(s) {sorted(clash)}; rename them")
    return {**builtin, **extra}


def names() -> list[str]:
    return list(_registry())


def get(name: str, isolated: bool | None = None, timeout: float = 120.0) -> Backend:
    """A backend by name. Backends marked `isolated` (tract) run in a worker process unless
    `isolated=False` (what the worker itself asks for); `isolated=True` isolates any backend."""
    reg = _registry()
    if name not in reg:
        raise KeyError(f"unknown backend {name!r}; choose from: {', '.join(reg)}")
    backend = reg[name]()
    if hasattr(backend, "cell_timeout"):  # backends that isolate themselves (ort_js) take the limit
        backend.cell_timeout = timeout
    if hasattr(backend, "timeout"):  # backends with their own per-run limit (tract-cli) obey --timeout
        backend.timeout = timeout
    wrap = backend.isolated if isolated is None else isolated
    if wrap:
        from .worker import IsolatedBackend

        return IsolatedBackend(backend, timeout=timeout)
    return backend


def parse_list(spec: str | None, default_available: bool = True) -> list[str]:
    """'a,b' -> validated names; None -> every available backend (in registry order)."""
    if spec:
        out = [s.strip() for s in spec.split(",") if s.strip()]
        for n in out:
            get(n, isolated=False)
        return list(dict.fromkeys(out))
    if default_available:
        return [n for n in names() if get(n, isolated=False).available()[0]]
    return names()


__all__ = ["Backend", "Session", "ModelRef", "Crashed", "DeviceLacks", "TimedOut", "Unsupported", "get", "names", "parse_list"]
