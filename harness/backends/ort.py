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


class OrtSession(Session):
    def __init__(self, sess):
        self._sess = sess
        self._outputs = [o.name for o in sess.get_outputs()]
        self._inputs = {i.name for i in sess.get_inputs()}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self._inputs}
        values = self._sess.run(self._outputs, feeds)
        return dict(zip(self._outputs, values))


class OrtBackend(Backend):
    provider = "CPUExecutionProvider"
    optimize = True

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
        return so

    def version(self) -> str:
        try:
            ort = _ort()
        except ImportError:
            return "not installed"
        opt = "ORT_ENABLE_ALL (default)" if self.optimize else "ORT_DISABLE_ALL"
        return f"onnxruntime {ort.__version__}; providers={self.provider}; graph_optimization_level={opt}"

    def prepare(self, model: ModelRef) -> Session:
        ort = _ort()
        # protobuf cannot serialise past 2 GB: large in-memory models go through a file
        use_path = model.on_disk or model.proto.ByteSize() > 1_500_000_000
        source = str(model.path) if use_path else model.serialized()
        sess = ort.InferenceSession(source, sess_options=self._options(), providers=[self.provider])
        if self.provider not in sess.get_providers():
            raise RuntimeError(f"{self.provider} was requested but the session runs on {sess.get_providers()}")
        return OrtSession(sess)


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
