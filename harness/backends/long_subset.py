"""The main job's subset for slow columns on long prompts.

The shape-true twins (zoo.yaml `shape_true:`: the hub models' attention geometry, 600-token
prompts that cross the real 512-token window, Phi-3's 2100 past its 2047) cost one to three minutes a cell on the runtimes
that run through JavaScript (ort-node, ort-web, ort-web-chromium: 5-10x ORT CPU per cell) on two
cores, and so do the op cases extracted from them, which carry the same shapes (Phi-3's 2100-token
GroupQueryAttention took 260-316 s a cell there, 1 674 s for its 90 extracted cells, against ~5 s
for a Gemma-3 shape-true twin's). The main job (`onnx-compat run` with no --backends/-k/-m, which
sets ONNX_COMPAT_LONG_SUBSET=1) runs them on reference, the ORT CPU columns, tract and OpenVINO,
and skips them on the JS and WebGPU columns, saying so;
the nightly (ONNX_COMPAT_LONG_SUBSET unset) and any run that names its selection run them all.
The WebGPU columns have their own, smaller subset (webgpu_common.py).
"""

from __future__ import annotations

import functools
import os

ENV = "ONNX_COMPAT_LONG_SUBSET"


@functools.lru_cache(maxsize=1)
def long_prompt_cases() -> frozenset[str]:
    """Case ids of the shape-true twins zoo.yaml names (their extracted cases: `long_prompt_case`)."""
    try:
        from ..zoo.twins import load_zoo

        zoo = load_zoo()
    except Exception:  # noqa: BLE001 - a broken zoo.yaml is reported where it is read for the run
        return frozenset()
    return frozenset(f"zoo/{name}" for m in zoo.models for name in m.shape_true)


def long_prompt_case(case_id: str) -> bool:
    """A shape-true twin, or an op case extracted from one (`extracted/<twin>/<op>-<i>`)."""
    twins = long_prompt_cases()
    if case_id.startswith("extracted/"):
        return f"zoo/{case_id.split('/')[1]}" in twins
    return case_id in twins


def long_prompt_skip(case_id: str) -> str:
    """'' when the cell runs; else the `skip` reason."""
    if os.environ.get(ENV) != "1" or not long_prompt_case(case_id):
        return ""
    what = "an op case extracted from a shape-true twin" if case_id.startswith("extracted/") else "a shape-true twin"
    return (f"{what} (a 600- to 2100-token prompt): the main job runs it on reference, ORT CPU, tract and "
            f"OpenVINO, and this column in the nightly or when asked for (-m zoo, or {ENV}=0)")
