"""Repro bundles: what someone attaches to an upstream issue.

    model.onnx      the case's model
    inputs.npz      feeds, keyed by graph input name ("name@k" for step k >= 1 of a multi-step case)
    expected.npz    the oracle's outputs by graph output name ("name@k" likewise); "<name>.mask",
                    where present, is True on the elements the op specifies
    case.json       id, features, tolerance, steps and carried outputs, oracle
    repro.py        runs the case on one backend with only numpy + that runtime installed
    repro.sh        `sh repro.sh [BACKEND]`
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import tolerances
from .case import Built, Case

EXTERNAL_DATA_LIMIT = 1_800_000_000
_VIEW = {"bfloat16": np.uint16, "float8_e4m3fn": np.uint8, "int4": np.int8, "uint4": np.uint8}


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the fix."""


def _key(name: str, step: int) -> str:
    return name if step == 0 else f"{name}@{step}"


def _split_key(key: str) -> tuple[str, int]:
    if "@" in key:
        name, _, k = key.rpartition("@")
        if k.isdigit():
            return name, int(k)
    return key, 0


def _encode(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    out, dtypes = {}, {}
    for k, v in arrays.items():
        v = np.asarray(v)
        if v.dtype.name in _VIEW:
            dtypes[k] = v.dtype.name
            v = v.view(_VIEW[v.dtype.name])
        out[k] = v
    return out, dtypes


def _decode(arrays: dict[str, np.ndarray], dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    import ml_dtypes

    return {k: (v.view(getattr(ml_dtypes, dtypes[k])) if k in dtypes else v) for k, v in arrays.items()}


def save_model(model: onnx.ModelProto, path: Path) -> None:
    big = model.ByteSize() > EXTERNAL_DATA_LIMIT
    onnx.save_model(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=path.name + ".data" if big else None)


def write_bundle(case: Case, built: Built, dest: str | os.PathLike, backend: str = "ort-cpu") -> Path:
    """Write atomically: a half-written bundle never appears under `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        save_model(built.model, tmp / "model.onnx")
        feeds = {_key(n, i): v for i, step in enumerate(built.feeds) for n, v in step.items()}
        expected = {_key(n, i): v for i, step in enumerate(built.expected) for n, v in step.items()}
        expected.update({_key(f"{n}.mask", i): v for i, step in enumerate(built.masks) for n, v in step.items()})
        enc_in, dt_in = _encode(feeds)
        enc_ex, dt_ex = _encode(expected)
        np.savez(tmp / "inputs.npz", **enc_in)
        np.savez(tmp / "expected.npz", **enc_ex)
        tol = tolerances.get(case.tolerance)
        meta = {
            "case_id": case.id, "family": case.family, "features": dict(case.features), "marks": list(case.marks),
            "tolerance": tol.as_record(), "tolerance_reason": tol.reason, "steps": built.steps,
            "carry": built.carry, "oracle": built.oracle, "npz_dtypes": {"inputs": dt_in, "expected": dt_ex},
        }
        (tmp / "case.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (tmp / "repro.py").write_text(REPRO_PY)
        (tmp / "repro.sh").write_text(REPRO_SH.format(case_id=case.id, backend=backend))
        os.chmod(tmp / "repro.sh", 0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


@dataclass
class Bundle:
    root: Path
    model_path: Path
    feeds: list[dict[str, np.ndarray]]
    expected: list[dict[str, np.ndarray]] | None
    masks: list[dict[str, np.ndarray]]
    carry: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise BundleError(f"{path}: not a readable .npz ({e}); write it with numpy.savez(path, name=array, …)") from None


def _by_step(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    steps: dict[int, dict[str, np.ndarray]] = {}
    for k, v in arrays.items():
        name, i = _split_key(k)
        steps.setdefault(i, {})[name] = v
    n = max(steps) + 1 if steps else 1
    return [steps.get(i, {}) for i in range(n)]


def load_bundle(path: str | os.PathLike) -> Bundle:
    root = Path(path)
    if root.is_file():
        raise BundleError(f"{root}: a bundle is a directory with model.onnx and inputs.npz")
    model_path = root / "model.onnx"
    if not model_path.exists():
        raise BundleError(f"{model_path}: missing; a bundle directory needs model.onnx (and inputs.npz)")
    inputs_path = root / "inputs.npz"
    if not inputs_path.exists():
        raise BundleError(f"{inputs_path}: missing; save the model's inputs with numpy.savez(inputs.npz, <input name>=array)")
    meta = {}
    if (root / "case.json").exists():
        try:
            meta = json.loads((root / "case.json").read_text())
        except json.JSONDecodeError as e:
            raise BundleError(f"{root / 'case.json'}: not JSON ({e.msg}); delete it or rewrite it with `onnx-compat export`") from None
    dts = meta.get("npz_dtypes", {})
    feeds = _by_step(_decode(_load_npz(inputs_path), dts.get("inputs", {})))
    expected = masks = None
    if (root / "expected.npz").exists():
        raw = _by_step(_decode(_load_npz(root / "expected.npz"), dts.get("expected", {})))
        expected = [{k: v for k, v in s.items() if not k.endswith(".mask")} for s in raw]
        masks = [{k[: -len(".mask")]: v.astype(bool) for k, v in s.items() if k.endswith(".mask")} for s in raw]
    n = len(feeds)
    if expected is not None and len(expected) != n:
        raise BundleError(f"{root / 'expected.npz'}: {len(expected)} step(s) but inputs.npz has {n}")
    return Bundle(root, model_path, feeds, expected, masks or [{} for _ in range(n)], meta.get("carry", {}), meta)


def check_feeds_match(model: onnx.ModelProto, feeds: dict[str, np.ndarray], where: Path, carried: set[str] = frozenset()) -> None:
    init = {i.name for i in model.graph.initializer}
    graph_inputs = [i.name for i in model.graph.input if i.name not in init]
    missing = [n for n in graph_inputs if n not in feeds and n not in carried]
    extra = [n for n in feeds if n not in graph_inputs]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no array for graph input(s) {missing}")
        if extra:
            parts.append(f"array(s) {extra} match no graph input")
        raise BundleError(f"{where}: {'; '.join(parts)}; the graph's inputs are {graph_inputs} — key inputs.npz by those names")


REPRO_SH = """#!/bin/sh
# Reproduce onnx-compat case {case_id} on one backend alone.
# usage: sh repro.sh [BACKEND]   (ort-cpu, ort-cpu-noopt, ort-cuda, tract; default {backend})
# Needs only python3 with numpy and that runtime (onnxruntime or tract) installed.
cd "$(dirname "$0")" || exit 2
exec python3 repro.py "${{1:-{backend}}}"
"""

REPRO_PY = r'''"""Standalone repro of one onnx-compat case: numpy plus the runtime under test, nothing else.

usage: python3 repro.py BACKEND     BACKEND: ort-cpu | ort-cpu-noopt | ort-cuda | tract
Prints the metrics of every compared output and exits 1 if any is outside the case's tolerance.
"""
import json
import sys

import numpy as np

here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
meta = json.load(open(f"{here}/case.json"))
backend = sys.argv[1] if len(sys.argv) > 1 else "ort-cpu"


def load(path, dtypes):
    z = np.load(path)
    out = {}
    for k in z.files:
        v = z[k]
        if k in dtypes:
            import ml_dtypes
            v = v.view(getattr(ml_dtypes, dtypes[k]))
        out[k] = v
    return out


def by_step(arrays):
    steps = {}
    for k, v in arrays.items():
        name, _, i = k.rpartition("@")
        if not (name and i.isdigit()):
            name, i = k, "0"
        steps.setdefault(int(i), {})[name] = v
    return [steps.get(i, {}) for i in range(max(steps) + 1)]


feeds = by_step(load(f"{here}/inputs.npz", meta["npz_dtypes"]["inputs"]))
expected = by_step(load(f"{here}/expected.npz", meta["npz_dtypes"]["expected"]))

if backend.startswith("ort"):
    import onnxruntime as ort
    so = ort.SessionOptions()
    if backend == "ort-cpu-noopt":
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ep = "CUDAExecutionProvider" if backend == "ort-cuda" else "CPUExecutionProvider"
    sess = ort.InferenceSession(f"{here}/model.onnx", so, providers=[ep])
    out_names = [o.name for o in sess.get_outputs()]
    print("onnxruntime", ort.__version__, ep, "opt" if backend != "ort-cpu-noopt" else "no-opt")

    def run(f):
        return dict(zip(out_names, sess.run(out_names, f)))
elif backend == "tract":
    import tract
    print("tract", tract.version())
    plans = {}

    def run(f):
        m = tract.onnx().load(f"{here}/model.onnx")
        names = [m.input_name(i) for i in range(m.input_count())]
        import onnx  # tract renames rewritten outputs; values come in graph order
        outs = [o.name for o in onnx.load(f"{here}/model.onnx", load_external_data=False).graph.output]
        key = tuple((n, f[n].shape, str(f[n].dtype)) for n in names)
        if key not in plans:
            dt = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "uint8": "u8", "int8": "i8", "bool": "bool"}
            for i, n in enumerate(names):
                m.set_input_fact(i, ",".join([*map(str, f[n].shape), dt[str(f[n].dtype)]]))
            plans[key] = (m.into_model().into_runnable(), names, outs)
        plan, names, outs = plans[key]
        return {o: t.to_numpy() for o, t in zip(outs, plan.run([f[n] for n in names]))}
else:
    sys.exit(f"unknown backend {backend!r}: use ort-cpu, ort-cpu-noopt, ort-cuda or tract")

tol = meta["tolerance"]
ok = True
prev = {}
for step, (f, exp) in enumerate(zip(feeds, expected)):
    f = dict(f)
    for out_name, in_name in meta.get("carry", {}).items():
        if step > 0:
            f[in_name] = prev[out_name]
    got = run(f)
    prev = got
    for name, e in exp.items():
        if name.endswith(".mask"):
            continue
        a = np.asarray(got[name]).astype(np.float64)
        b = np.asarray(e).astype(np.float64)
        m = exp.get(name + ".mask")
        if a.shape != b.shape:
            print(f"step {step} {name}: shape {a.shape} != expected {b.shape}")
            ok = False
            continue
        if m is not None:
            a, b = a[m.astype(bool)], b[m.astype(bool)]
        d = np.abs(a - b)
        nonfinite = int(np.count_nonzero(np.isfinite(b) & ~np.isfinite(a)))
        d = np.where(np.isfinite(d), d, np.inf)
        bad = int(np.count_nonzero(d > tol["atol"] + tol["rtol"] * np.abs(b)))
        nmse = float(np.sum((a - b) ** 2) / max(np.sum(b * b), 1e-300))
        status = "ok" if bad == 0 and nmse <= tol["max_nmse"] else "MISMATCH"
        ok &= status == "ok"
        print(f"step {step} {name}: max|d| {d.max() if d.size else 0:.4g}  NMSE {nmse:.4g}  "
              f"outside atol {tol['atol']:g}+rtol {tol['rtol']:g}: {bad}/{d.size}  non-finite: {nonfinite}  -> {status}")
print("PASS" if ok else "FAIL", meta["case_id"], "on", backend)
sys.exit(0 if ok else 1)
'''
