"""Backend registry: the `--backends` vocabulary of DESIGN.md."""

from __future__ import annotations

from typing import Callable

from .base import Backend, Crashed, ModelRef, Session, TimedOut, Unsupported


def _registry() -> dict[str, Callable[[], Backend]]:
    from . import ort, reference, tract_backend

    return {
        "reference": reference.Reference,
        "ort-cpu": ort.OrtCpu,
        "ort-cpu-noopt": ort.OrtCpuNoOpt,
        "ort-cuda": ort.OrtCuda,
        "tract": tract_backend.Tract,
        "tract-cli": tract_backend.TractCli,
    }


def names() -> list[str]:
    return list(_registry())


def get(name: str, isolated: bool | None = None, timeout: float = 120.0) -> Backend:
    """A backend by name. Backends marked `isolated` (tract) run in a worker process unless
    `isolated=False` (what the worker itself asks for); `isolated=True` isolates any backend."""
    reg = _registry()
    if name not in reg:
        raise KeyError(f"unknown backend {name!r}; choose from: {', '.join(reg)}")
    backend = reg[name]()
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


__all__ = ["Backend", "Session", "ModelRef", "Crashed", "TimedOut", "Unsupported", "get", "names", "parse_list"]
