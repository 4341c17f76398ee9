"""What the two WebGPU columns (`ort-web-webgpu`, `ort-webgpu`) share: proving the WebGPU EP ran,
naming the nodes ORT put on the CPU, telling a missing device feature from a finding, and the
label a finding on a software adapter carries.

ORT creates a WebGPU session even when the EP cannot work: natively it logs "Falling back to
['CPUExecutionProvider']" and runs every node on the CPU, so a cell that only looked at the
outputs would be an ORT CPU result under a WebGPU name. Each cell therefore reads where the
nodes were placed (the session's verbose log in the browser, its profile natively) and is
`unavailable` when none ran on the WebGPU EP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .base import DeviceLacks

PROVIDER = "WebGpuExecutionProvider"
#: the label a mismatch or error on a software adapter starts its message with (runner._labelled)
SOFTWARE_LABEL = "software adapter: confirm on a GPU"
#: a software adapter compiles every shader on the CPU (a twin took 90-190 s in a probe): the
#: per-request limit is this many times `run --timeout`
SLOW_FACTOR = 5.0
#: ORT's WebGPU EP, asked to build an fp16 program on an adapter without `shader-f16`
_NO_F16 = re.compile(r"requires f16 but the device does not support it")
#: software adapters: SwiftShader (Chromium's and Dawn's), Mesa's lavapipe / llvmpipe
_SOFTWARE = re.compile(r"swiftshader|lavapipe|llvmpipe|software", re.I)


def lacks_f16(message: str) -> bool:
    return bool(_NO_F16.search(message or ""))


def f16_unavailable(message: str, adapter: str) -> DeviceLacks:
    return DeviceLacks(f"the WebGPU adapter ({adapter}) has no `shader-f16` feature, so ORT's WebGPU EP cannot "
                       f"run this model's fp16 programs (a device limit, not a finding); ORT said: {message[:400]}")


def is_software(adapter: Mapping[str, object] | str) -> bool:
    if isinstance(adapter, str):
        return bool(_SOFTWARE.search(adapter))
    if adapter.get("isFallbackAdapter"):
        return True
    return bool(_SOFTWARE.search(" ".join(str(adapter.get(k) or "") for k in ("vendor", "architecture", "device",
                                                                           "description"))))


def placement_note(placement: Mapping[str, Mapping[str, object]], where: str) -> str:
    """The cell's note from {provider: {"count": n, "nodes": ["OpType (name)", ...]}}; raises
    DeviceLacks when the WebGPU EP ran nothing (ORT fell back to the CPU EP: not a WebGPU cell).
    An empty `placement` (a model with no node left after optimisation) is not a fallback."""
    if not placement:
        return ""
    if PROVIDER not in placement:
        placed = ", ".join(f"{p}: {v.get('count')}" for p, v in placement.items())
        raise DeviceLacks(f"the WebGPU EP ran no node of this model ({where}: {placed}): ORT fell back to the CPU, "
                          "so this is not a WebGPU result (is there a WebGPU adapter? see `onnx-compat backends`)")
    cpu = {p: v for p, v in placement.items() if p != PROVIDER}
    if not cpu:
        return ""
    parts = []
    for p, v in cpu.items():
        nodes = [str(n) for n in v.get("nodes") or []]
        shown = ", ".join(nodes[:12]) + (f", … {len(nodes) - 12} more" if len(nodes) > 12 else "")
        parts.append(f"{v.get('count')} node(s) on {p}" + (f" ({shown})" if shown else ""))
    return f"WebGPU EP ran {placement[PROVIDER].get('count')} node(s); " + "; ".join(parts) + f" ({where})"
