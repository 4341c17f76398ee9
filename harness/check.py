"""`onnx-compat check PATH`: a user's bundle directory or model on every backend.

Without expected.npz the reference backend is the oracle (and so is not a column of its own).
A bare model gets seeded random inputs from its graph input types; symbolic dimensions are
set to 1 (printed), as Polygraphy does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

from . import backends as registry
from . import tolerances
from .backends.base import ModelRef
from .bundle import Bundle, BundleError, check_feeds_match, load_bundle
from .case import Built, Case, seed_for


def _random_feeds(model: onnx.ModelProto, path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed_for(str(path.name)))
    init = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        tt = vi.type.tensor_type
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            else:
                shape.append(1)
                print(f"check: {path}: input {vi.name!r} dim {d.dim_param or '?'} set to 1", file=sys.stderr)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            feeds[vi.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _load(path: Path) -> Bundle:
    if path.is_dir():
        return load_bundle(path)
    if path.suffix != ".onnx" or not path.exists():
        raise BundleError(f"{path}: not a bundle directory or an .onnx file; pass a directory with model.onnx "
                          "and inputs.npz, or a model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise BundleError(f"{path}: not an ONNX model ({type(e).__name__}); pass a .onnx file or a bundle directory") from None
    return Bundle(path.parent, path, [_random_feeds(model, path)], None, [{}])


def _default_profile(expected: list[dict[str, np.ndarray]]) -> str:
    low = any(np.asarray(v).dtype.name in ("float16", "bfloat16") for s in expected for v in s.values())
    return "fp16-attention" if low else "fp32-attention"


def check(path_str: str, names: list[str], out: str | None = None, tolerance: str | None = None,
          timeout: float = 120.0) -> int:
    from .runner import run_cell

    path = Path(path_str)
    bundle = _load(path)
    try:
        model = onnx.load(str(bundle.model_path))
    except Exception as e:  # noqa: BLE001
        raise BundleError(f"{bundle.model_path}: not an ONNX model ({type(e).__name__}: {e}); re-export it") from None
    check_feeds_match(model, bundle.feeds[0], bundle.root / "inputs.npz")
    ref = ModelRef(model, bundle.model_path)
    expected = bundle.expected
    oracle = "expected.npz"
    if expected is None:
        ref_backend = registry.get("reference")
        try:
            sess = ref_backend.prepare(ref)
            from .runner import execute_steps

            expected = execute_steps(sess, Built(model, bundle.feeds, [{} for _ in bundle.feeds], carry=bundle.carry))
        except Exception as e:  # noqa: BLE001
            raise BundleError(f"{bundle.root}: no expected.npz and the reference backend cannot run the model "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); add expected.npz") from None
        names = [n for n in names if n != "reference"]
        oracle = "reference backend"
    profile = tolerance or bundle.meta.get("tolerance", {}).get("profile") or _default_profile(expected)
    try:
        tolerances.get(profile)
    except KeyError as e:
        raise BundleError(f"--tolerance: {e.args[0]}") from None
    built = Built(model, bundle.feeds, expected, bundle.masks, bundle.carry, oracle=oracle)
    meta = bundle.meta
    case = Case(meta.get("case_id", f"check/{path.name}"), meta.get("family", "check"), meta.get("features", {}),
                tuple(meta.get("marks", ())), profile, lambda _rng: built)
    records = []
    print(f"check {path}  oracle: {oracle}  tolerance: {profile}")
    print(f"{'backend':<14} {'status':<12} {'max|Δ|':>10} {'NMSE':>10}  message")
    for n in names:
        b = registry.get(n, timeout=timeout)
        try:
            rec = run_cell(case, b, built, ref)
        finally:
            b.close()
        records.append(rec)
        m = rec["metrics"] or {}
        ma = m.get("max_abs")
        nm = m.get("nmse")
        msg = (rec["message"] or "").splitlines()[0][:110] if rec["message"] else ""
        print(f"{n:<14} {rec['status']:<12} {ma if ma is None else f'{ma:.3g}':>10} {nm if nm is None else f'{nm:.3g}':>10}  {msg}")
    if out:
        from .report import write_report
        from .results import ResultsWriter

        with ResultsWriter(Path(out) / "results.jsonl", resume=True) as w:
            for r in records:
                if (r["case_id"], r["backend"]) not in w.done:
                    w.append(r)
        from .results import read_results

        write_report(read_results(Path(out) / "results.jsonl"), out)
    bad = [r for r in records if r["status"] != "pass"]
    return 1 if bad else 0
