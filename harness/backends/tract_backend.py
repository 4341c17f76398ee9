"""tract, through its PyPI bindings (in a worker process) or a `tract` executable on PATH.

tract types a model for concrete input shapes: the session sets every input's fact from
the first feeds of each shape signature and keeps one runnable per signature, so a prefill
shape and a decode shape each get their own plan. Refusals while loading, analysing or
typing are `unsupported` (tract's own words, backtrace stripped); failures while running
are `error`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from .base import Backend, ModelRef, Session, Unsupported
from .worker import _preexec_die_with_parent

_DTYPES = {
    "float32": "f32", "float16": "f16", "float64": "f64", "int64": "i64", "int32": "i32",
    "int8": "i8", "uint8": "u8", "bool": "bool", "int16": "i16", "uint16": "u16",
}


def _innermost_first(lines: list[str]) -> list[str]:
    """anyhow prints a chain outermost first (`Building node  (GroupQueryAttention)`, then
    `Caused by:` and the causes); the reason is the innermost cause, so it goes first and the
    rest of the chain follows, inner to outer, each as `  while: ...`."""
    if "Caused by:" not in lines:
        return lines
    at = lines.index("Caused by:")
    head = " ".join(ln.strip() for ln in lines[:at])
    head = head[len("Error: "):] if head.startswith("Error: ") else head
    causes: list[str] = []
    for ln in lines[at + 1:]:
        m = re.match(r"\s*\d+: (.*)", ln)
        if m or not causes:
            causes.append((m.group(1) if m else ln).strip())
        else:
            causes[-1] += " " + ln.strip()
    if not causes:
        return lines
    chain = [head, *causes]
    return [chain[-1], *(f"  while: {c}" for c in reversed(chain[:-1]))]


def clean_message(text: str, max_lines: int = 12) -> str:
    """tract's error chain without the Rust backtrace: the innermost cause (the reason) first,
    then the chain it came through."""
    text = re.split(r"\n\s*(Stack backtrace:|stack backtrace:|Backtrace:)", str(text))[0]
    lines = _innermost_first([ln.rstrip() for ln in text.strip().splitlines() if ln.strip()])
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"… ({len(lines) - max_lines} more lines)"]
    return "\n".join(lines)


def fact_spec(a: np.ndarray) -> str:
    dt = _DTYPES.get(str(a.dtype))
    if dt is None:
        raise Unsupported(f"onnx-compat cannot express dtype {a.dtype} as a tract fact")
    return ",".join([*(str(d) for d in a.shape), dt])


class TractSession(Session):
    def __init__(self, model_path: Path):
        import tract

        self._tract = tract
        try:
            self._inference = tract.onnx().load(str(model_path))
        except Exception as e:  # noqa: BLE001
            raise Unsupported(clean_message(e)) from None
        self._names = [self._inference.input_name(i) for i in range(self._inference.input_count())]
        # tract renames outputs it rewrites ("Y" -> "Y.scaled"); values come in graph order,
        # so they are named from the ONNX graph itself.
        import onnx

        graph = onnx.load(str(model_path), load_external_data=False).graph
        self._out_names = [o.name for o in graph.output]
        self._plans: dict[tuple, object] = {}
        self._path = model_path

    def _plan(self, feeds: Mapping[str, np.ndarray]):
        key = tuple((n, feeds[n].shape, str(feeds[n].dtype)) for n in self._names)
        if key not in self._plans:
            model = self._tract.onnx().load(str(self._path))
            try:
                for i, n in enumerate(self._names):
                    model.set_input_fact(i, fact_spec(feeds[n]))
                model.analyse()
                typed = model.into_model()
                self._plans[key] = typed.into_runnable()
            except Unsupported:
                raise
            except Exception as e:  # noqa: BLE001
                raise Unsupported(clean_message(e)) from None
        return self._plans[key]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self._names if n not in feeds]
        if missing:
            raise RuntimeError(f"no feed for graph input(s) {missing}")
        plan = self._plan(feeds)
        try:
            outs = plan.run([np.array(feeds[n], order="C", copy=True) for n in self._names])
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(clean_message(e)) from None
        return {n: o.to_numpy() for n, o in zip(self._out_names, outs)}


class Tract(Backend):
    name = "tract"
    description = "tract (PyPI bindings), in a worker subprocess"
    isolated = True

    def available(self) -> tuple[bool, str]:
        try:
            import tract  # noqa: F401
        except Exception as e:  # noqa: BLE001
            return False, f"the tract package does not import ({e}); pip install tract"
        return True, ""

    def version(self) -> str:
        try:
            import tract

            return f"tract {tract.version()} (python bindings)"
        except Exception:  # noqa: BLE001
            return "not installed"

    def prepare(self, model: ModelRef) -> Session:
        return TractSession(model.path)


class TractCliSession(Session):
    """One `tract` process per run: `tract MODEL -O --input-facts-from-bundle in.npz run
    --input-from-bundle in.npz --save-outputs-npz out.npz` (the CLI's documented flags)."""

    def __init__(self, exe: str, model_path: Path, timeout: float):
        self.exe, self.model_path, self.timeout = exe, model_path, timeout
        import onnx

        self.outputs = [o.name for o in onnx.load(str(model_path), load_external_data=False).graph.output]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .base import Crashed, KilledFromOutside, TimedOut, external_signal

        with tempfile.TemporaryDirectory(prefix="onnx-compat-tract-cli-") as d:
            fin, fout = Path(d) / "inputs.npz", Path(d) / "outputs.npz"
            np.savez(fin, **dict(feeds))
            cmd = [self.exe, str(self.model_path), "-O", "--input-facts-from-bundle", str(fin),
                   "run", "--input-from-bundle", str(fin), "--save-outputs-npz", str(fout)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout,
                                      preexec_fn=_preexec_die_with_parent)
            except subprocess.TimeoutExpired:
                raise TimedOut(f"tract CLI gave no answer within {self.timeout:g} s") from None
            if proc.returncode != 0:
                msg = clean_message(proc.stderr or proc.stdout)
                outside = external_signal(proc.returncode)
                if outside:
                    raise KilledFromOutside(f"the tract CLI was killed from outside ({outside})", outside)
                if proc.returncode < 0:
                    raise Crashed(f"tract CLI killed by signal {-proc.returncode}: {msg}")
                if re.search(r"(analys|Translating|ToTypedTranslator|Unimplemented|unsupported|not supported|"
                             r"Building node|Unknown DatumType)", msg, re.I):
                    raise Unsupported(msg)
                raise RuntimeError(msg)
            with np.load(fout, allow_pickle=False) as z:
                got = {k: z[k] for k in z.files}
        if set(self.outputs) <= set(got):
            return {k: got[k] for k in self.outputs}
        # tract names rewritten outputs its own way ("Y.scaled"); values come in graph order
        return dict(zip(self.outputs, got.values()))


class TractCli(Backend):
    name = "tract-cli"
    description = "a `tract` executable found on PATH (not installable from PyPI)"
    timeout = 120.0  # set from --timeout by backends.get; the process is killed past it

    def _exe(self) -> str | None:
        return os.environ.get("ONNX_COMPAT_TRACT_CLI") or shutil.which("tract")

    def available(self) -> tuple[bool, str]:
        exe = self._exe()
        if not exe:
            return False, "no `tract` executable on PATH (build it with `cargo install tract`, or set ONNX_COMPAT_TRACT_CLI)"
        try:
            subprocess.run([exe, "--version"], capture_output=True, timeout=30, check=True)
        except Exception as e:  # noqa: BLE001
            return False, f"{exe} --version failed: {e}"
        return True, ""

    def version(self) -> str:
        exe = self._exe()
        if not exe:
            return "not installed"
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception as e:  # noqa: BLE001
            return f"unknown ({e})"
        return f"{out} (CLI at {exe})"

    def prepare(self, model: ModelRef) -> Session:
        return TractCliSession(self._exe() or "tract", model.path, self.timeout)
