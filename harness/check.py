"""`onnx-compat check PATH`: a user's bundle directory or model on every backend.

Without expected.npz the reference backend is the oracle (and so is not a column of its own).
A bare model gets seeded random inputs from its graph input types; symbolic dimensions are
set to 1 (printed), as Polygraphy does; inputs over MAX_RANDOM_FEED_BYTES are refused.

Exit 0 when every cell is `pass` or `ambiguous` (the bundle's other readings, case.json
"readings"), else 1. With --out, each cell is appended to DIR/results.jsonl as it ends (as `run` does). Checking the
same model (same case id) into the same DIR again replaces its earlier cells, and says so.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from . import backends
from . import tolerances
from .backends.base import ModelRef
from .bundle import Bundle, BundleError, check_against_model, graph_io, load_bundle
from .model_io import ModelFormatError, read_graph_io
from .case import Built, Case, seed_for
from .verdict import Status

if TYPE_CHECKING:  # imported where a model must be parsed: the reference backend, a bare model, no expected.npz
    import onnx

#: random feeds for a bare model: a model that declares more than this is refused, not allocated
MAX_RANDOM_FEED_BYTES = 1 << 30


def _random_feeds(model: onnx.ModelProto, path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed_for(str(path.name)))
    init = {i.name for i in model.graph.initializer}
    feeds = {}
    total = 0
    for vi in model.graph.input:
        if vi.name in init:
            continue
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type" or not vi.type.tensor_type.elem_type:
            what = {"sequence_type": "a sequence", "map_type": "a map", "optional_type": "an optional",
                    "sparse_tensor_type": "a sparse tensor", "tensor_type": "a tensor of no element type",
                    None: "of no declared type"}.get(kind, kind)
            raise BundleError(f"{path}: input {vi.name!r} is {what}, not a tensor; random feeds are made for tensor "
                              "inputs only: pass a model whose inputs are tensors")
        tt = vi.type.tensor_type
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            else:
                shape.append(1)
                print(f"check: {path}: input {vi.name!r} dim {d.dim_param or '?'} set to 1", file=sys.stderr)
        import onnx

        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        nbytes = math.prod(shape) * dtype.itemsize
        total += nbytes
        if total > MAX_RANDOM_FEED_BYTES:
            raise BundleError(f"{path}: input {vi.name!r} of shape {shape} needs {nbytes / 2**30:.3g} GiB of random "
                              f"feeds (limit {MAX_RANDOM_FEED_BYTES / 2**30:g} GiB for all inputs); pass a bundle "
                              "directory with inputs.npz of the sizes you mean")
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
    _regular(path, "an .onnx file or a bundle directory")
    if path.suffix != ".onnx" or not path.exists():
        raise BundleError(f"{path}: not a bundle directory or an .onnx file; pass a directory with model.onnx "
                          "and inputs.npz, or a model file")
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise BundleError(f"{path}: not an ONNX model ({type(e).__name__}); pass a .onnx file or a bundle directory") from None
    return Bundle(path.parent, path, [_random_feeds(model, path)], None, [{}])


def _regular(path: Path, what: str) -> None:
    from .safeload import UnsafeInput, require_regular

    try:
        require_regular(path, what)
    except UnsafeInput as e:
        raise BundleError(str(e)) from None


def _load_model(path: Path) -> onnx.ModelProto:
    """The model with its external data, each external file checked to be a regular file first
    (onnx.load would block on a FIFO named as a tensor's location)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        for t in onnx.external_data_helper._get_all_tensors(model):
            if onnx.external_data_helper.uses_external_data(t):
                loc = next((e.value for e in t.external_data if e.key == "location"), "")
                _regular(path.parent / loc, f"the external data file of tensor {t.name!r}")
        onnx.load_external_data_for_model(model, str(path.parent))
    except BundleError:
        raise
    except Exception as e:  # noqa: BLE001
        raise BundleError(f"{path}: not an ONNX model ({type(e).__name__}: {e}); re-export it") from None
    return model


def _default_profile(expected: list[dict[str, np.ndarray]]) -> str:
    low = any(np.asarray(v).dtype.name in ("float16", "bfloat16") for s in expected for v in s.values())
    return "fp16-attention" if low else "fp32-attention"


def _fmt(x) -> str:
    """A metric for the table: none (the cell did not run to a comparison), or 3 digits;
    clean_for_json has already turned NaN/Inf into strings."""
    if x is None:
        return "-"
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return f"{x:.3g}"
    return str(x)


def _check_id(path: Path, meta: dict) -> str:
    """The bundle's case id, else one from the model's bytes: the same model checked twice gets
    the same id (and replaces its cells), two models with the same file name do not collide."""
    if meta.get("case_id"):
        return meta["case_id"]
    model_file = path if path.is_file() else path / "model.onnx"
    import hashlib  # here: its OpenSSL binding costs ~3 ms of a 0.15 s check that seldom needs it

    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()[:10]
    return f"check/{path.name}-{digest}"


def _drop_earlier(results: Path, case_id: str) -> int:
    """Remove an earlier check's cells of `case_id` from results.jsonl (atomically); their count."""
    from .results import atomic_write_bytes

    if not results.exists():
        return 0
    kept, dropped = [], 0
    for raw in results.read_bytes().splitlines(keepends=True):
        try:
            same = json.loads(raw).get("case_id") == case_id
        except (ValueError, AttributeError):
            same = False
        if same:
            dropped += 1
        else:
            kept.append(raw if raw.endswith(b"\n") else raw + b"\n")
    if dropped:
        atomic_write_bytes(results, b"".join(kept))
    return dropped


def _forks(backend) -> bool:
    """Run this backend's cell in a forked child: native code in this process (ONNX Runtime), not a
    backend with a worker or a limit of its own (tract, the JS runtimes), nor numpy-only code."""
    return (hasattr(os, "fork") and getattr(backend, "native", True) and not getattr(backend, "isolated", False)
            and not hasattr(backend, "cell_timeout") and not hasattr(backend, "drive"))


def _run_isolated(case: Case, backend, built: Built, ref: ModelRef, timeout: float) -> dict:
    """One cell that a segfault or a hang cannot take `check` down with it (harness/forked.py)."""
    import time

    from .forked import ForkedOutcome, run_forked
    from .cell_run import _record, run_cell

    if not _forks(backend):
        return run_cell(case, backend, built, ref)
    version = backend.version()
    t0 = time.perf_counter()
    got = run_forked(lambda: run_cell(case, backend, built, ref, version=version), timeout)
    if isinstance(got, ForkedOutcome):
        return _record(case, backend, Status(got.status), None, got.message, time.perf_counter() - t0, version)
    return got


def check(path_str: str, names: list[str], out: str | None = None, tolerance: str | None = None,
          timeout: float = 120.0) -> int:
    path = Path(path_str)
    bundle = _load(path)
    # The model is parsed by onnx only where something needs the proto (the reference backend, a
    # model without expected outputs); the bundle is validated from the file's graph inputs and
    # outputs, and ONNX Runtime / tract read the file themselves: importing onnx alone costs more
    # than checking a bundle on ONNX Runtime.
    needs_proto = bundle.expected is None or "reference" in names
    model = None
    if needs_proto:
        model = _load_model(bundle.model_path)
        io = graph_io(model)
    else:
        try:
            io = read_graph_io(bundle.model_path)
        except (ModelFormatError, ValueError) as e:
            raise BundleError(f"{bundle.model_path}: not an ONNX model ({type(e).__name__}: {e}); re-export it") from None
        for loc in io.external_locations:  # the runtime would block on a FIFO named as a tensor's location
            _regular(bundle.model_path.parent / loc, "an external data file of the model")
    check_against_model(io, bundle)
    ref = ModelRef(model, bundle.model_path)
    expected = bundle.expected
    oracle = "expected.npz"
    if expected is None:
        ref_backend = backends.get("reference")
        try:
            sess = ref_backend.prepare(ref)
            from .cell_run import execute_steps

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
        where = "--tolerance" if tolerance else f"{bundle.root / 'case.json'}: tolerance.profile"
        fix = "" if tolerance else "; fix case.json, or pass --tolerance PROFILE"
        raise BundleError(f"{where}: {e.args[0]}{fix}") from None
    built = Built(model, bundle.feeds, expected, bundle.masks, bundle.carry, oracle=oracle,
                  alternates=bundle.alternates if bundle.expected is not None else {})
    meta = bundle.meta
    case = Case(_check_id(path, meta), meta.get("family", "check"), meta.get("features", {}),
                tuple(meta.get("marks", ())), profile, lambda _rng: built)
    records = []
    writer = None
    if out:
        from .results import ResultsWriter

        results = Path(out) / "results.jsonl"
        dropped = _drop_earlier(results, case.id)
        if dropped:
            print(f"check: {results} held {dropped} cell(s) of {case.id} from an earlier check; replacing them")
        writer = ResultsWriter(results, resume=True)
    if not gc.isenabled():  # the console script started this command with the collector off:
        # what exists now (modules, the bundle) lives as long as the command: frozen, no
        # collection walks it again, nor touches its pages in the forked children (gc.freeze's
        # documented use); the collector is on again for what the cells make
        gc.freeze()
        gc.enable()
    print(f"check {path}  oracle: {oracle}  tolerance: {profile}")
    print(f"{'backend':<14} {'status':<12} {'max|Δ|':>10} {'NMSE':>10}  message")
    try:
        for n in names:
            b = backends.get(n, timeout=timeout)
            try:  # a hang ends at --timeout, a segfault costs its cell, as under `run`
                rec = _run_isolated(case, b, built, ref, timeout)
            finally:
                b.close()
            records.append(rec)
            if writer:
                writer.append(rec)  # as the cell ends, like `run`
            m = rec["metrics"] or {}
            msg = (rec["message"] or "").splitlines()[0][:110] if rec["message"] else ""
            print(f"{n:<14} {rec['status']:<12} {_fmt(m.get('max_abs')):>10} {_fmt(m.get('nmse')):>10}  {msg}",
                  flush=True)
    finally:
        if writer:
            writer.close()
    if out:
        from .report import write_report
        from .results import read_results

        write_report(read_results(Path(out) / "results.jsonl"), out)
        print(f"check: {len(records)} cell(s) -> {Path(out) / 'results.jsonl'}, {Path(out) / 'report.html'}")
    # `ambiguous` (another reading the text allows) gates like a pass, as in pytest and repro.sh
    bad = [r for r in records if not Status(r["status"]).acceptable]
    return 1 if bad else 0
