"""The two scripts a repro bundle ships (harness/bundle.py writes them): repro.sh, and repro.py,
which runs the case on one runtime with numpy alone and judges it with the harness's own
compare.py, copied beside it. Templates only: nothing here runs inside the harness."""

REPRO_SH = """#!/bin/sh
# Reproduce onnx-compat case {case_id} on one backend alone.
# usage: sh repro.sh [BACKEND]   (ort-cpu, ort-cpu-noopt, ort-cuda, tract; default {backend})
# Needs python3 with numpy and that runtime (onnxruntime, or the tract Python package); ml_dtypes
# too where case.json's npz_dtypes names bfloat16/float8/int4 arrays. Not onnx, not onnx-compat:
# the verdict comes from onnx_compat_compare.py, the harness's own comparison, shipped here.
cd "$(dirname "$0")" || exit 2
exec python3 repro.py "${{1:-{backend}}}"
"""

REPRO_PY = r'''"""Standalone repro of one onnx-compat case: numpy plus the runtime under test, judged by
onnx_compat_compare.py (a copy of the harness's harness/compare.py), so it says what the matrix says.

usage: python3 repro.py BACKEND     BACKEND: ort-cpu | ort-cpu-noopt | ort-cuda | tract
Prints the verdict and each output's metrics; exits 0 on pass (or on another reading the operator
text allows: ambiguous), 1 on a mismatch, 2 when it cannot run here (a runtime not installed).
"""
import json
import os
import sys
from types import SimpleNamespace

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from onnx_compat_compare import judge_readings  # noqa: E402

meta = json.load(open(os.path.join(here, "case.json")))
backend = sys.argv[1] if len(sys.argv) > 1 else "ort-cpu"
MAX_STEPS = 10000


def need(module, package):
    """The runtime's module, or one line saying what to install (exit 2: not a verdict)."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        print(f"repro.py: {backend} needs the Python package {package}, which is not installed here: "
              f"pip install {package} (or run another backend: ort-cpu, ort-cpu-noopt, ort-cuda, tract)", file=sys.stderr)
        sys.exit(2)


def load(name):
    dtypes = meta.get("npz_dtypes", {}).get(name.replace(".npz", "") if name in ("inputs.npz", "expected.npz") else name, {})
    steps = {}
    with np.load(os.path.join(here, name), allow_pickle=False) as z:
        for k in z.files:
            v = z[k]
            if k in dtypes:
                v = v.view(getattr(need("ml_dtypes", "ml_dtypes"), dtypes[k]))
            key, _, i = k.rpartition("@")
            if not (key and i.isdigit()):
                key, i = k, "0"
            if int(i) >= MAX_STEPS:
                sys.exit(f"{name}: key {k!r} names step {i}, over {MAX_STEPS}")
            steps.setdefault(int(i), {})[key] = v
    return [steps.get(i, {}) for i in range(max(steps) + 1 if steps else 1)]


feeds = load("inputs.npz")
raw = load("expected.npz")
expected = [{k: v for k, v in s.items() if not k.endswith(".mask")} for s in raw]
masks = [{k[:-5]: v.astype(bool) for k, v in s.items() if k.endswith(".mask")} for s in raw]
readings = {r["name"]: load(r["file"]) for r in meta.get("readings", [])}
model = os.path.join(here, "model.onnx")

if backend.startswith("ort"):
    ort = need("onnxruntime", "onnxruntime-gpu" if backend == "ort-cuda" else "onnxruntime")
    so = ort.SessionOptions()
    if backend == "ort-cpu-noopt":
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ep = "CUDAExecutionProvider" if backend == "ort-cuda" else "CPUExecutionProvider"
    sess = ort.InferenceSession(model, so, providers=[ep])
    out_names = [o.name for o in sess.get_outputs()]
    print("onnxruntime", ort.__version__, ep, "opt" if backend != "ort-cpu-noopt" else "no-opt")

    def run(f):
        return dict(zip(out_names, sess.run(out_names, f)))
elif backend == "tract":
    tract = need("tract", "tract")
    print("tract", tract.version())
    plans = {}
    m0 = tract.onnx().load(model)
    names = [m0.input_name(i) for i in range(m0.input_count())]
    outs = meta["outputs"]  # tract renames outputs it rewrites; values come in graph order
    dt = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "uint8": "u8", "int8": "i8",
          "bool": "bool"}

    def run(f):
        key = tuple((n, f[n].shape, str(f[n].dtype)) for n in names)
        if key not in plans:
            m = tract.onnx().load(model)
            for i, n in enumerate(names):
                m.set_input_fact(i, ",".join([*map(str, f[n].shape), dt[str(f[n].dtype)]]))
            plans[key] = m.into_model().into_runnable()
        return {o: t.to_numpy() for o, t in zip(outs, plans[key].run([np.array(f[n], order="C") for n in names]))}
else:
    sys.exit(f"unknown backend {backend!r}: use ort-cpu, ort-cpu-noopt, ort-cuda or tract")

got = []
for step, f in enumerate(feeds):
    f = dict(f)
    if step > 0:
        for out_name, in_name in meta.get("carry", {}).items():
            f[in_name] = got[-1][out_name]
    got.append(run(f))

verdict, j = judge_readings(got, expected, masks, SimpleNamespace(**meta["tolerance"]), readings)
per_step = j.metrics.get("steps") or [j.metrics]
for step, m in enumerate(per_step):
    for name, o in (m.get("outputs") or {}).items():
        print(f"step {step} {name}: max|d| {o.get('max_abs', 0):.4g}  NMSE {o.get('nmse', 0):.4g}  "
              f"outside the bound: {o.get('bad', 0)}/{o.get('n', 0)}")
if j.message:
    print(j.message)
print(verdict.upper(), meta["case_id"], "on", backend)
sys.exit(0 if verdict in ("pass", "ambiguous") else 1)
'''
