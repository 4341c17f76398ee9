"""OpenVINO: its ONNX frontend (`Core.read_model`) and its CPU plugin (`Core.compile_model`).

An independent implementation of the com.microsoft ops the LLM exports use (GroupQueryAttention,
MatMulNBits, GatherBlockQuantized, RotaryEmbedding, ...): the frontend decomposes them into
OpenVINO's own opset, so a wrong value here is not ONNX Runtime's.

Settings: one inference thread, one stream, no core pinning (two columns share two cores) and
`INFERENCE_PRECISION_HINT=f32`: the CPU plugin's default on a CPU with bf16 instructions is
bf16, which would judge a precision setting instead of the frontend's semantics. Everything
else is OpenVINO's default (as users get it), and the settings that change numerics are in
the version string.

Runs isolated in a worker process (`worker.py`): a native runtime can abort or segfault, and
OpenVINO's thread pool must not be inherited through the run's `fork`. The worker keeps one
`Core`, so the plugin loads once per worker; `ONNX_COMPAT_OPENVINO_CACHE=DIR` turns on
OpenVINO's compiled-model cache (`CACHE_DIR`), which a rerun of the same grid reuses.

A refusal while reading or compiling is `unsupported` (OpenVINO's own words, without its
source-file prefixes); a failure while inferring is `error`.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Mapping

import numpy as np

from .base import Backend, ModelRef, Session

#: what every compile gets (see the module docstring for why)
CONFIG = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32",
          "ENABLE_CPU_PINNING": False}
#: defaults that change numerics, recorded in the version string (not changed: users get them)
RECORDED_DEFAULTS = ("DYNAMIC_QUANTIZATION_GROUP_SIZE",)
CACHE_ENV = "ONNX_COMPAT_OPENVINO_CACHE"

#: element types numpy has no native dtype for: they travel by their bits (ml_dtypes on our side)
_BITS_OF = {"bfloat16": ("bf16", np.uint16), "float8_e4m3fn": ("f8e4m3", np.uint8), "float8_e5m2": ("f8e5m2", np.uint8)}
_NIBBLE_OF = {"int4": "i4", "uint4": "u4"}
_ML_DTYPE_OF = {"bf16": "bfloat16", "f8e4m3": "float8_e4m3fn", "f8e5m2": "float8_e5m2"}


_COUNTER = re.compile(r"\b([A-Z][A-Za-z0-9]*)_\d+\b")  # OpenVINO's node names: Range_22672 -> Range_#


def _lines(text: str) -> list[str]:
    """OpenVINO's exception text without the `Exception from src/....cpp:NN:` lines it stacks at
    every rethrow, the `failed at src/...cpp:NN:` locations and the per-compile node counters, so
    that one refusal reads the same in every cell (refusals are grouped by message)."""
    out: list[str] = []
    for ln in str(text).splitlines():
        ln = ln.strip()
        if not ln or re.fullmatch(r"Exception from \S+:\d+:", ln):
            continue
        ln = re.sub(r"^Exception from \S+:\d+:\s*", "", ln)
        ln = re.sub(r"\s*failed at \S+:\d+:?$", " failed:", ln)
        ln = _COUNTER.sub(r"\1_#", ln)
        if ln and (not out or out[-1] != ln):
            out.append(ln)
    return out


def _is_frame(ln: str) -> bool:
    """A line that says where, not why: `Check '...' failed:`, `While validating ...`."""
    return bool(re.match(r"(Check '.*' failed:|While validating |Shape inference input shapes |Summary:|-- Conversion is failed)", ln))


def clean_message(text: str, max_lines: int = 12) -> str:
    """The reason first, in OpenVINO's words, then the lines it came through.

    A frontend refusal (`OpConversionFailure`) leads with `<op>: <innermost reason>`, one line
    per op it could not convert; anything else with its innermost line that is not a frame."""
    lines = _lines(text)
    if not lines:
        return str(text).strip()
    heads: list[str] = []
    if any("Model wasn't fully converted" in ln for ln in lines):
        op, reason = None, None
        for ln in [*lines, "-- "]:
            m = re.match(r"-- (\S+) with a message:", ln)
            if (m or ln.startswith("-- ") or ln == "Summary:") and op:
                heads.append(f"OpenVINO's ONNX frontend cannot convert {op}: {reason or '(no reason given)'}")
                op = reason = None
            if m:
                op = m.group(1)
            elif op and not _is_frame(ln) and not ln.startswith("While validating"):
                reason = ln
    else:
        reasons = [ln for ln in lines if not _is_frame(ln)]
        heads = [reasons[-1]] if reasons else []
    rest = [ln for ln in lines if ln not in heads]
    out = list(dict.fromkeys(heads)) + rest
    if len(out) > max_lines:
        out = out[:max_lines] + [f"… ({len(out) - max_lines} more lines)"]
    return "\n".join(out)


def _to_tensor(ov, a: np.ndarray):
    """A feed as an ov.Tensor of exactly its shape (a 0-d array stays 0-d: OpenVINO refuses a
    shape-(1) tensor for a scalar input); bfloat16/float8 arrays by their bits."""
    a = np.array(a, order="C", copy=None)  # not ascontiguousarray: it turns a 0-d array into shape (1)
    if a.dtype.name in _NIBBLE_OF:  # OpenVINO packs 4-bit tensors two to a byte, element 0 in the low nibble
        t = ov.Tensor(getattr(ov.Type, _NIBBLE_OF[a.dtype.name]), list(a.shape))
        flat = a.reshape(-1).view(np.uint8) & 0x0F
        flat = np.concatenate([flat, np.zeros(flat.size % 2, np.uint8)])
        t.data.view(np.uint8).reshape(-1)[...] = flat[0::2] | (flat[1::2] << 4)
        return t
    bits = _BITS_OF.get(a.dtype.name)
    if bits is None:
        return ov.Tensor(a, shared_memory=False)
    t = ov.Tensor(getattr(ov.Type, bits[0]), list(a.shape))
    t.data.view(bits[1])[...] = a.view(bits[1])
    return t


def _from_tensor(t) -> np.ndarray:
    kind = t.element_type.get_type_name()
    if kind in ("i4", "u4"):  # two to a byte, element 0 in the low nibble
        import ml_dtypes

        packed = np.array(t.data, copy=True).view(np.uint8).reshape(-1)
        vals = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(-1)[:int(np.prod(t.shape))]
        if kind == "i4":
            return ((vals.astype(np.int8) ^ 8) - 8).astype(ml_dtypes.int4).reshape(list(t.shape))
        return vals.astype(ml_dtypes.uint4).reshape(list(t.shape))
    name = _ML_DTYPE_OF.get(kind)
    if name is None:
        return np.array(t.data, copy=True)
    import ml_dtypes

    raw = t.data
    return np.array(raw.view(np.uint16 if raw.itemsize == 2 else np.uint8), copy=True).view(getattr(ml_dtypes, name))


class OpenVinoSession(Session):
    def __init__(self, core, model_path: Path, config: dict):
        import onnx

        self._ov = _ov()
        try:
            model = core.read_model(str(model_path))
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # noqa: BLE001 - the refusal, in OpenVINO's words
            raise RuntimeError(clean_message(e)) from None
        self._request = self._compiled.create_infer_request()
        graph = onnx.load(str(model_path), load_external_data=False).graph
        self._inputs = [(i, port.get_names()) for i, port in enumerate(self._compiled.inputs)]
        self._out_names = self._output_names([o.name for o in graph.output])
        self._declared = {o.name: _static_shape(o) for o in graph.output}
        # GroupQueryAttention nodes whose total_sequence_length is a feed and present_key an output:
        # present must hold that many rows unless OpenVINO wrote the new ones past its end
        self._gqa = [(n.input[6], n.output[1]) for n in graph.node if n.op_type == "GroupQueryAttention"
                     and len(n.input) > 6 and len(n.output) > 1 and n.input[6] and n.output[1]]
        #: set when an output's shape differs from the model's static declaration: the sign of the
        #: GroupQueryAttention bug that writes past a buffer, so the worker is replaced (worker.py)
        self.suspect = ""

    def _output_names(self, graph_outputs: list[str]) -> list[str]:
        """The ONNX output name of each compiled output: by tensor name where OpenVINO kept it,
        else by position (the frontend keeps the graph's output order)."""
        names = []
        for i, port in enumerate(self._compiled.outputs):
            hit = [n for n in graph_outputs if n in port.get_names()]
            names.append(hit[0] if hit else graph_outputs[i] if i < len(graph_outputs) else port.get_any_name())
        return names

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {}
        for i, names in self._inputs:
            hit = [n for n in names if n in feeds]
            if not hit:
                raise RuntimeError(f"no feed for graph input {sorted(names)}")
            tensors[i] = _to_tensor(self._ov, np.asarray(feeds[hit[0]]))
        try:
            self._request.infer(tensors)
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(clean_message(e)) from None
        out = {n: _from_tensor(self._request.get_output_tensor(i)) for i, n in enumerate(self._out_names)}
        for n, a in out.items():
            want = self._declared.get(n)
            if want is not None and list(a.shape) != want:
                self.suspect = f"output {n!r} has shape {list(a.shape)}, the model declares {want}"
        for total, present in self._gqa:
            if total in feeds and present in out and out[present].ndim == 4 \
                    and out[present].shape[2] < int(np.asarray(feeds[total]).reshape(-1)[0]):
                self.suspect = f"{present!r} holds {out[present].shape[2]} rows, total_sequence_length is larger"
        return out

    def close(self) -> None:
        self._request = self._compiled = None


def _static_shape(value_info) -> list[int] | None:
    """A graph output's declared shape when every dimension is a number, else None."""
    t = value_info.type.tensor_type
    if not t.HasField("shape") or any(not d.HasField("dim_value") for d in t.shape.dim):
        return None
    return [d.dim_value for d in t.shape.dim]


def _ov():
    import openvino

    return openvino


@functools.lru_cache(maxsize=1)
def _probe() -> dict[str, str]:
    """Version, device name and recorded defaults, asked of a fresh interpreter: the process
    that forks the run's workers must not start OpenVINO's thread pool itself."""
    code = ("import json, openvino as ov; c = ov.Core(); "
            "print(json.dumps({'version': ov.get_version(), 'device': c.get_property('CPU', 'FULL_DEVICE_NAME'), "
            f"**{{k: str(c.get_property('CPU', k)) for k in {list(RECORDED_DEFAULTS)!r}}}}}))")
    import json

    try:
        out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": f"could not start Python to ask OpenVINO ({e})"}
    if out.returncode != 0:
        return {"error": clean_message(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else
                                       f"exit code {out.returncode}")}
    return json.loads(out.stdout.strip().splitlines()[-1])


class OpenVino(Backend):
    name = "openvino"
    description = "OpenVINO: ONNX frontend, CPU plugin (f32 precision, 1 thread), in a worker subprocess"
    isolated = True

    def __init__(self):
        self._core = None

    def available(self) -> tuple[bool, str]:
        try:
            from importlib import metadata

            metadata.version("openvino")
        except Exception:  # noqa: BLE001
            return False, "the openvino package is not installed; pip install openvino (or pip install -e . again)"
        info = _probe()
        if "error" in info:
            return False, f"openvino is installed but its CPU plugin does not load: {info['error']}"
        return True, ""

    def version(self) -> str:
        info = _probe()
        if "error" in info:
            return "not installed"
        settings = "; ".join(f"{k}={v}" for k, v in CONFIG.items() if k != "ENABLE_CPU_PINNING")
        defaults = "; ".join(f"{k}={info[k]} (default)" for k in RECORDED_DEFAULTS if k in info)
        return f"openvino {info['version']}; CPU plugin; {settings}; {defaults}"

    def device(self) -> str | None:
        """The CPU plugin's FULL_DEVICE_NAME (run.json's device)."""
        return _probe().get("device")

    def _config(self) -> dict:
        cache = os.environ.get(CACHE_ENV)
        return {**CONFIG, "CACHE_DIR": cache} if cache else dict(CONFIG)

    def prepare(self, model: ModelRef) -> Session:
        if self._core is None:
            self._core = _ov().Core()
        return OpenVinoSession(self._core, model.path, self._config())
