"""What the two WebGPU columns (`ort-web-webgpu`, `ort-webgpu`) share: proving the WebGPU EP ran,
naming the nodes ORT put on the CPU, telling a missing device feature from a finding, and the
label a finding on a software adapter carries.

ORT creates a WebGPU session even when the EP cannot work: natively it logs "Falling back to
['CPUExecutionProvider']" and runs every node on the CPU, so a cell that only looked at the
outputs would be an ORT CPU result under a WebGPU name. A session that lost the EP is
`unavailable` (no adapter); each cell also reads where the nodes were placed (the session's
verbose log in the browser, its profile natively): the nodes ORT put on the CPU are named, and a
model none of whose nodes has a WebGPU kernel is `unsupported`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .base import DeviceLacks, Unsupported

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
    """The cell's note from {provider: {"count": n, "nodes": ["OpType (name)", ...]}} of a session
    whose WebGPU EP is live (a session that lost the EP, no adapter, is refused before this).
    Raises Unsupported when every node went to another EP: the WebGPU EP has no kernel for this
    model's ops, so its outputs would be a CPU result under a WebGPU name. An empty `placement`
    (no node left after optimisation) says nothing."""
    if not placement:
        return ""
    if PROVIDER not in placement:
        placed = "; ".join(f"{v.get('count')} on {p}" + (" (" + ", ".join(str(n) for n in v["nodes"][:6]) + ")"
                                                          if v.get("nodes") else "") for p, v in placement.items())
        raise Unsupported(f"the WebGPU EP has no kernel for any node of this model: ORT placed them all elsewhere "
                          f"({placed}; {where}), so there is no WebGPU result to judge")
    cpu = {p: v for p, v in placement.items() if p != PROVIDER}
    if not cpu:
        return ""
    parts = []
    for p, v in cpu.items():
        nodes = [str(n) for n in v.get("nodes") or []]
        shown = ", ".join(nodes[:12]) + (f", … {len(nodes) - 12} more" if len(nodes) > 12 else "")
        parts.append(f"{v.get('count')} node(s) on {p}" + (f" ({shown})" if shown else ""))
    return f"WebGPU EP ran {placement[PROVIDER].get('count')} node(s); " + "; ".join(parts) + f" ({where})"


# ---------------------------------------------------------------------------------------------
# the main job's subset (a software adapter is ~100x slower per cell than ORT's CPU EP)

#: the main job (`onnx-compat run` with no --backends, -k or -m) runs one op case in this many,
#: chosen by a hash of the case id (stable, spread over every family), and the twins below; set
#: ONNX_COMPAT_WEBGPU_SUBSET=0 for everything (the nightly does), or name the column / select cases
SUBSET_EVERY = 8
#: one twin per export form that a WebGPU adapter without shader-f16 can run (fp32 and q4 with
#: fp32 scales): transformers.js' optimum export, the GenAI builder's, the transformers.js Gemma-4
SUBSET_TWINS = ("zoo/qwen25-optimum-fp32", "zoo/qwen25-optimum-q4", "zoo/gemma3-genai-current-fp32",
                "zoo/gemma4-tjs-fp32")


def subset_skip(case_id: str, software: bool) -> str:
    """'' when the cell runs; else the `skip` reason of a cell outside the main job's subset."""
    import hashlib
    import os

    from .long_subset import long_prompt_skip

    if not software or os.environ.get("ONNX_COMPAT_WEBGPU_SUBSET") != "1":
        return ""
    long = long_prompt_skip(case_id)  # a shape-true twin's extracted case can fall in the 1-in-8 (75 s a cell)
    if long:
        return long
    if case_id.startswith("zoo/"):
        keep = case_id in SUBSET_TWINS
    else:
        keep = int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:4], "little") % SUBSET_EVERY == 0
    return "" if keep else (
        f"not in the main job's WebGPU subset (a software adapter: 1 op case in {SUBSET_EVERY} and the twins "
        f"{', '.join(SUBSET_TWINS)}); the nightly runs every case (ONNX_COMPAT_WEBGPU_SUBSET=0, or --backends/-k/-m)")
