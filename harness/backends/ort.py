"""ONNX Runtime columns: default session options (what users get), no graph optimisations
(separates a fusion that changes numerics from a kernel bug), and the CUDA provider."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .base import Backend, ModelRef, Session


def _ort():
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # kernel errors reach the cell's message, not stderr
    return onnxruntime


#: ml_dtypes element types onnxruntime's Python binding cannot take as numpy arrays ("Numpy_type
#: 256 can't be converted to MLDataType"): they travel as OrtValues of the ONNX type instead.
_ONNX_TYPE_OF = {"bfloat16": 16, "float8_e4m3fn": 17, "float8_e4m3fnuz": 18, "float8_e5m2": 19, "float8_e5m2fnuz": 20}
_NUMPY_OF = {"tensor(bfloat16)": "bfloat16", "tensor(float8e4m3fn)": "float8_e4m3fn",
             "tensor(float8e4m3fnuz)": "float8_e4m3fnuz", "tensor(float8e5m2)": "float8_e5m2",
             "tensor(float8e5m2fnuz)": "float8_e5m2fnuz"}


def to_ort_value(ort, a: np.ndarray):
    """A feed as an OrtValue: numpy-native dtypes directly, the others by their bits and ONNX type."""
    a = np.ascontiguousarray(a)
    onnx_type = _ONNX_TYPE_OF.get(a.dtype.name)
    if onnx_type is None:
        return ort.OrtValue.ortvalue_from_numpy(a)
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(a.view(np.uint8 if a.itemsize == 1 else np.uint16), onnx_type)


def from_ort_value(v) -> np.ndarray:
    """An output back to numpy; a bfloat16 / float8 tensor (no numpy type in the binding) is copied
    out by its bytes and viewed as the ml_dtypes type."""
    name = _NUMPY_OF.get(v.data_type())
    if name is None:
        return v.numpy()
    import ctypes

    import ml_dtypes

    dtype = np.dtype(getattr(ml_dtypes, name))
    out = np.empty(v.shape(), dtype=dtype)
    if out.nbytes:
        ctypes.memmove(out.ctypes.data, v.data_ptr(), out.nbytes)
    return out


#: dtype -> whether it must travel as an OrtValue (dtype.name is slow enough to matter per feed)
_BY_ORT_VALUE: dict[np.dtype, bool] = {}


def _by_ort_value(dtype: np.dtype) -> bool:
    hit = _BY_ORT_VALUE.get(dtype)
    if hit is None:
        hit = _BY_ORT_VALUE[dtype] = dtype.name in _ONNX_TYPE_OF
    return hit


def session_io(sess) -> tuple[list[str], frozenset[str], bool]:
    """Output names, input names, and whether any of them needs an OrtValue (bfloat16, float8):
    the same for every session of the same bytes (OrtBackend.prepare keeps them on the ModelRef)."""
    ins, outs = sess.get_inputs(), sess.get_outputs()
    return ([o.name for o in outs], frozenset(i.name for i in ins),
            any(x.type in _NUMPY_OF for x in (*ins, *outs)))


class OrtSession(Session):
    def __init__(self, sess, note: str = "", io: tuple[list[str], frozenset[str], bool] | None = None):
        self._sess = sess
        self._outputs, self._inputs, self._needs_ort_values = io if io is not None else session_io(sess)
        #: what the cell should say about how it ran (e.g. nodes placed on the CPU by a CUDA session)
        self.note = note

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self._inputs}
        if not self._needs_ort_values and not any(_by_ort_value(np.asarray(v).dtype) for v in feeds.values()):
            return dict(zip(self._outputs, self._sess.run(self._outputs, feeds)))
        ort = _ort()
        values = self._sess.run_with_ort_values(self._outputs, {k: to_ort_value(ort, np.asarray(v)) for k, v in feeds.items()})
        return {n: from_ort_value(v) for n, v in zip(self._outputs, values)}


class OrtBackend(Backend):
    provider = "CPUExecutionProvider"
    optimize = True
    #: execution-provider options (the CUDA column's strict variant turns TF32 off)
    provider_options: dict[str, str] = {}
    #: refuse a model when any node would fall back to the CPU EP (instead of running it there)
    no_cpu_fallback = False

    def available(self) -> tuple[bool, str]:
        try:
            ort = _ort()
        except ImportError as e:  # pragma: no cover - core dependency
            return False, f"onnxruntime is not installed ({e}); pip install onnxruntime"
        if self.provider not in ort.get_available_providers():
            return False, (f"{self.provider} is not in this onnxruntime build's providers "
                           f"({', '.join(ort.get_available_providers())})")
        return True, ""

    def _options(self):
        ort = _ort()
        so = ort.SessionOptions()
        so.log_severity_level = 4  # failures are kept in the cell's message
        if not self.optimize:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        # an idle intra-op pool must not spin a core while the harness compares outputs (timing
        # only: the numbers a session computes do not depend on it)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.no_cpu_fallback:
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        return so

    def version(self) -> str:
        try:
            ort = _ort()
        except ImportError:
            return "not installed"
        opt = "ORT_ENABLE_ALL (default)" if self.optimize else "ORT_DISABLE_ALL"
        extra = "".join(f"; {k}={v}" for k, v in self.provider_options.items())
        extra += "; cpu_fallback=disabled" if self.no_cpu_fallback else ""
        return f"onnxruntime {ort.__version__}; providers={self.provider}; graph_optimization_level={opt}{extra}"

    def _session(self, source, options):
        ort = _ort()
        providers = [(self.provider, dict(self.provider_options))] if self.provider_options else [self.provider]
        return ort.InferenceSession(source, sess_options=options, providers=providers)

    def prepare(self, model: ModelRef) -> Session:
        # protobuf cannot serialise past 2 GB: large in-memory models go through a file
        use_path = model.on_disk or model.byte_size() > 1_500_000_000
        source = str(model.path) if use_path else model.serialized()
        sess = self._session(source, self._options())
        if self.provider not in sess.get_providers():
            raise RuntimeError(f"{self.provider} was requested but the session runs on {sess.get_providers()}")
        io = model.memo.get("ort-io")
        if io is None:
            io = model.memo["ort-io"] = session_io(sess)
        return OrtSession(sess, self._placement_note(source), io)

    def _placement_note(self, source) -> str:
        """Where nodes ran, when that is not simply this backend's provider. Only a GPU provider
        can hand nodes to the CPU EP; ORT names them when fallback is disabled, so a second,
        strict session is tried and its refusal kept as the note (the cell's numbers still come
        from the default session, as a user gets them)."""
        if self.provider == "CPUExecutionProvider" or self.no_cpu_fallback:
            return ""
        strict = self._options()
        strict.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        return fallback_note(lambda: self._session(source, strict), self.provider)


def fallback_note(make_strict_session, provider: str) -> str:
    """'' when a session with CPU fallback disabled can be made, else the note that says some
    nodes run on the CPU, with ORT's own words (which name them)."""
    try:
        make_strict_session()
    except Exception as e:  # noqa: BLE001 - ORT's refusal is the information
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"some nodes have no {provider} kernel and ran on the CPU EP (with fallback disabled ORT says: {first[:500]})"
    return ""


class OrtCpu(OrtBackend):
    name = "ort-cpu"
    description = "ONNX Runtime, CPU EP, default session options"


class OrtCpuNoOpt(OrtBackend):
    name = "ort-cpu-noopt"
    description = "ONNX Runtime, CPU EP, graph optimisations disabled"
    optimize = False


class OrtCuda(OrtBackend):
    name = "ort-cuda"
    description = "ONNX Runtime, CUDA EP (pip install -e .[cuda])"
    provider = "CUDAExecutionProvider"

    def available(self) -> tuple[bool, str]:
        ok, why = super().available()
        if not ok:
            return False, why + "; install the [cuda] extra (onnxruntime-gpu) on a machine with an NVIDIA GPU"
        try:  # a provider compiled in is not a device: ask the driver
            import ctypes

            lib = ctypes.CDLL("libcuda.so.1")
            count = ctypes.c_int(0)
            if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
                return False, "CUDA provider present but no CUDA device found (cuInit/cuDeviceGetCount)"
        except OSError as e:
            return False, f"CUDA provider present but the CUDA driver cannot be loaded ({e})"
        return True, ""


class OrtCudaStrict(OrtCuda):
    name = "ort-cuda-strict"
    description = ("ONNX Runtime, CUDA EP without TF32 and without CPU fallback: tells a precision "
                   "setting or a CPU-placed node from a CUDA kernel bug")
    provider_options = {"use_tf32": "0"}
    no_cpu_fallback = True
