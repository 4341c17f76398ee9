"""`ort-web-webgpu`: onnxruntime-web's WebGPU EP exactly as transformers.js loads it for
`device: 'webgpu'` (the pinned `onnxruntime-web/webgpu` bundle, `executionProviders: ['webgpu']`),
in headless Chromium started with `--enable-unsafe-webgpu` (js/worker.mjs `chromium-webgpu`).

On a machine without a GPU Chromium's adapter is SwiftShader (a Vulkan implementation on the CPU,
"fallback" adapter, no `shader-f16`). The adapter's info (vendor, architecture, device,
description, features) is asked once per process and goes into the version string, so every
cell and run.json carry it. Each prepare reads the session's verbose log for node placement
(webgpu_common). ONNX_COMPAT_WEBGPU_ADAPTER=swiftshader forces the software adapter where a GPU
exists; the default leaves Chromium's choice.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import numpy as np

from .base import ModelRef, Session
from .ort_js import JsSession, JsWorker, OrtWebChromium, chromium_exe, js_dir
from .webgpu_common import (PROVIDER, SLOW_FACTOR, SOFTWARE_LABEL, f16_unavailable, is_software, lacks_f16,
                            placement_note, subset_skip)


def probe_adapter() -> dict:
    """The adapter `navigator.gpu.requestAdapter()` gives the page, as ORT itself asks for it:
    {vendor, architecture, device, description, isFallbackAdapter, features} or {error}; asked
    once per process for each (js dir, browser, adapter choice)."""
    return _probe(str(js_dir()), chromium_exe(), os.environ.get("ONNX_COMPAT_WEBGPU_ADAPTER", ""))


@functools.cache
def _probe(js: str, browser: str | None, choice: str, timeout: float = 90.0) -> dict:
    worker = JsWorker("chromium-webgpu", timeout)
    try:
        hello, _ = worker.request({"op": "hello"})
    except Exception as e:  # noqa: BLE001 - the reason is the availability message
        return {"error": f"the chromium-webgpu worker did not start: {e}"}
    finally:
        worker.close()
    return hello.get("adapter") or {"error": "the page sent no adapter info"}


def describe_adapter(a: Mapping) -> str:
    if "error" in a:
        return f"no adapter ({a['error']})"
    name = "/".join(str(a.get(k)) for k in ("vendor", "architecture") if a.get(k)) or "unnamed"
    extra = ", ".join(str(a.get(k)) for k in ("device", "description") if a.get(k))
    feats = list(a.get("features") or [])
    kind = "software, fallback adapter" if a.get("isFallbackAdapter") else ("software" if is_software(a) else "hardware")
    f16 = "shader-f16" if "shader-f16" in feats else "no shader-f16"
    return (f"adapter {name}" + (f" ({extra})" if extra else "") + f" [{kind}; {f16}; features: "
            + " ".join(feats) + "]")


class WebgpuJsSession(JsSession):
    def __init__(self, worker: JsWorker, inputs: list[str], outputs: list[str], note: str, adapter: str,
                 software: bool):
        super().__init__(worker, inputs, outputs)
        self.note, self._adapter = note, adapter
        self.finding_label = SOFTWARE_LABEL if software else ""

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return super().run(feeds)
        except RuntimeError as e:
            if lacks_f16(str(e)):
                raise f16_unavailable(str(e), self._adapter) from None
            raise


class OrtWebWebgpu(OrtWebChromium):
    name = "ort-web-webgpu"
    description = ("onnxruntime-web WebGPU EP as transformers.js loads it (device: 'webgpu'), in headless "
                   "Chromium; a software adapter (SwiftShader) without a GPU (onnx-compat install-js)")
    mode = "chromium-webgpu"
    provider = PROVIDER
    _cell_timeout = 120.0

    @property
    def cell_timeout(self) -> float:
        return self._cell_timeout * (SLOW_FACTOR if self._software() else 1.0)

    @cell_timeout.setter
    def cell_timeout(self, value: float) -> None:
        self._cell_timeout = value

    def _software(self) -> bool:
        a = probe_adapter()
        return "error" in a or is_software(a)

    def subset_skip(self, case_id: str) -> str:
        return subset_skip(case_id, self._software())

    def available(self) -> tuple[bool, str]:
        ok, why = super().available()
        if not ok:
            return ok, why
        a = probe_adapter()
        if "error" in a:
            return False, (f"headless Chromium gave no WebGPU adapter: {a['error']} (needs a Chromium with WebGPU and "
                           "Vulkan: Debian's `chromium` ships SwiftShader; see README)")
        return True, ""

    @property
    def detail(self) -> str:
        base = "WebGPU EP (executionProviders: ['webgpu']), session log at verbose for node placement"
        if not OrtWebChromium.available(self)[0]:  # no browser or bundle: nothing to ask for an adapter
            return base
        return f"{base}; {describe_adapter(probe_adapter())}; {self._chromium()}"

    @staticmethod
    def _chromium() -> str:
        from .ort_js import _chromium_version

        return _chromium_version()

    def prepare(self, model: ModelRef) -> Session:
        session = super().prepare(model)
        assert isinstance(session, JsSession)
        note = placement_note(self.last_prepare.get("placement") or {}, "from the session's verbose log")
        a = probe_adapter()
        return WebgpuJsSession(session.worker, session.inputs, session.outputs, note,
                               describe_adapter(a).split(" [")[0], "error" in a or is_software(a))


