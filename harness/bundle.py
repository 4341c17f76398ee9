"""Repro bundles: what someone attaches to an upstream issue.

    model.onnx      the case's model
    inputs.npz      feeds, keyed by graph input name ("name@k" for step k >= 1 of a multi-step case)
    expected.npz    the oracle's outputs by graph output name ("name@k" likewise); "<name>.mask",
                    where present, is True on the elements the op specifies
    reading-N.npz   where the operator text allows other readings: their expected outputs, named
                    in case.json "readings" (a backend matching one is `ambiguous`, not a mismatch)
    case.json       id, features, tolerance, steps and carried outputs, graph outputs, oracle
    onnx_compat_compare.py  harness/compare.py itself: the bundle judges with the matrix's code
    repro.py        runs the case on one backend with numpy + that runtime (+ ml_dtypes for
                    bfloat16/float8/int4 arrays), judged by onnx_compat_compare
    repro.sh        `sh repro.sh [BACKEND]`

Writing never deletes what the tool did not write: into an existing directory only the files
above are replaced. Reading refuses, in one line naming the file and the fix, what would make a
backend look wrong or exhaust memory (see load_bundle and check_against_model).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import tolerances
from .case import Built, Case
from .model_io import GraphIO
from .repro_script import REPRO_PY, REPRO_SH

if TYPE_CHECKING:  # onnx is imported where a model is written: `check` of a bundle never needs it
    import onnx

EXTERNAL_DATA_LIMIT = 1_800_000_000
#: "name@k" keys: a bundle of more steps than this is refused (a key "x@999999999999" would
#: otherwise build a list of 10^12 steps)
MAX_STEPS = 10_000
COMPARE_MODULE = "onnx_compat_compare.py"
_WRITTEN = ("model.onnx", "model.onnx.data", "inputs.npz", "expected.npz", "case.json", "repro.py", "repro.sh",
            COMPARE_MODULE)
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
    if not dtypes:
        return arrays
    import ml_dtypes

    return {k: (v.view(getattr(ml_dtypes, dtypes[k])) if k in dtypes else v) for k, v in arrays.items()}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A bundle's arrays, deflated at level 1: a run writes one bundle per failing case (1 413 on
    the main job). On a 60-bundle sample of the quick grid and the twins, level 1 takes the bundles
    to 0.27 of their stored size in 2.7x the write time; numpy.savez_compressed (level 6) gains
    0.01 more for 5x. Any numpy.load reads it, as savez_compressed's files; safeload checks the
    declared (uncompressed) sizes before inflating anything."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)


def save_model(model: onnx.ModelProto, path: Path) -> None:
    import onnx

    big = model.ByteSize() > EXTERNAL_DATA_LIMIT
    onnx.save_model(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=path.name + ".data" if big else None)


def _ours(name: str) -> bool:
    """A file name this module writes into a bundle (and so may replace)."""
    return name in _WRITTEN or (name.startswith("reading-") and name.endswith(".npz"))


def _install(tmp: Path, dest: Path) -> None:
    """Move a finished bundle into place. A new `dest` appears whole (one rename); into an existing
    directory each file is renamed over its old version, the previous bundle's own files that this
    one lacks are removed, and nothing else there is touched."""
    if not dest.exists():
        os.replace(tmp, dest)
        return
    if not dest.is_dir():
        raise BundleError(f"{dest}: exists and is not a directory; choose another --out")
    was_bundle = (dest / "case.json").exists()
    new = {p.name for p in tmp.iterdir()}
    for name in sorted(new):
        os.replace(tmp / name, dest / name)
    if was_bundle:
        for p in dest.iterdir():
            if p.is_file() and _ours(p.name) and p.name not in new:
                p.unlink()
    tmp.rmdir()


def write_bundle(case: Case, built: Built, dest: str | os.PathLike, backend: str = "ort-cpu") -> Path:
    """Write atomically: a half-written bundle never appears under `dest`, and nothing in `dest`
    that the tool did not write is deleted."""
    if built.driver is not None and hasattr(built.driver, "write_bundle"):  # a zoo model of several graphs
        bundle = built.driver.write_bundle(case, built, dest, backend)
        if bundle is not None:
            return bundle
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    import tempfile  # writing only: `check` reads a bundle

    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        save_model(built.model, tmp / "model.onnx")
        feeds = {_key(n, i): v for i, step in enumerate(built.feeds) for n, v in step.items()}
        expected = {_key(n, i): v for i, step in enumerate(built.expected) for n, v in step.items()}
        expected.update({_key(f"{n}.mask", i): v for i, step in enumerate(built.masks) for n, v in step.items()})
        enc_in, dt_in = _encode(feeds)
        enc_ex, dt_ex = _encode(expected)
        save_npz(tmp / "inputs.npz", enc_in)
        save_npz(tmp / "expected.npz", enc_ex)
        readings, dt_readings = [], {}
        for i, (name, steps) in enumerate(built.alternates.items(), 1):
            enc, dt = _encode({_key(n, k): v for k, step in enumerate(steps) for n, v in step.items()})
            save_npz(tmp / f"reading-{i}.npz", enc)
            readings.append({"name": name, "file": f"reading-{i}.npz"})
            dt_readings[f"reading-{i}.npz"] = dt
        tol = tolerances.get(case.tolerance)
        meta = {
            "case_id": case.id, "family": case.family, "features": dict(case.features), "marks": list(case.marks),
            "tolerance": tol.as_record(), "tolerance_reason": tol.reason, "steps": built.steps,
            "carry": built.carry, "outputs": [o.name for o in built.model.graph.output], "oracle": built.oracle,
            "readings": readings, "npz_dtypes": {"inputs": dt_in, "expected": dt_ex, **dt_readings},
        }
        (tmp / "case.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (tmp / "repro.py").write_text(REPRO_PY)
        shutil.copyfile(Path(__file__).with_name("compare.py"), tmp / COMPARE_MODULE)
        (tmp / "repro.sh").write_text(REPRO_SH.format(case_id=case.id, backend=backend))
        os.chmod(tmp / "repro.sh", 0o755)
        _install(tmp, dest)
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
    #: the other readings' expected outputs, by reading name (case.json "readings")
    alternates: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Sizes checked before anything is decompressed, no pickles (harness/safeload.py)."""
    from .safeload import UnsafeInput, load_npz

    try:
        return load_npz(path)
    except UnsafeInput as e:
        raise BundleError(str(e)) from None
    except Exception as e:  # noqa: BLE001
        raise BundleError(f"{path}: not a readable .npz ({e}); write it with numpy.savez(path, name=array, …)") from None


def _by_step(arrays: dict[str, np.ndarray], where: Path) -> list[dict[str, np.ndarray]]:
    steps: dict[int, dict[str, np.ndarray]] = {}
    for k, v in arrays.items():
        name, i = _split_key(k)
        if i >= MAX_STEPS:
            raise BundleError(f"{where}: key {k!r} names step {i}, over the limit of {MAX_STEPS} steps; key step k "
                              "of a multi-step case as name@k with k = 1, 2, … (no suffix for the first step)")
        steps.setdefault(i, {})[name] = v
    n = max(steps) + 1 if steps else 1
    return [steps.get(i, {}) for i in range(n)]


def _type_error(where: Path, key: str, want: str) -> BundleError:
    return BundleError(f"{where}: {key!r} must be {want}; fix it, or delete case.json (rewrite it with "
                       "`onnx-compat export`)")


def _check_meta(meta: Any, where: Path) -> dict[str, Any]:
    """case.json's fields that loading and judging read, with their types."""
    if not isinstance(meta, dict):
        raise BundleError(f"{where}: must hold a JSON object; fix it, or delete case.json")
    str_map = lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values())  # noqa: E731
    checks = {
        "case_id": (lambda v: isinstance(v, str) and v, "a non-empty string"),
        "family": (lambda v: isinstance(v, str), "a string"),
        "features": (lambda v: isinstance(v, dict), "an object"),
        "marks": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
        "carry": (str_map, "an object of output name -> input name"),
        "outputs": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of output names"),
        "tolerance": (lambda v: isinstance(v, dict) and isinstance(v.get("profile", ""), str), "an object with a "
                      "string 'profile'"),
        "npz_dtypes": (lambda v: isinstance(v, dict) and all(str_map(x) for x in v.values()),
                       "an object of file -> {array key -> dtype name}"),
        "readings": (lambda v: isinstance(v, list) and all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                                          and isinstance(r.get("file"), str) for r in v),
                     "a list of {\"name\": …, \"file\": …}"),
    }
    for key, (ok, want) in checks.items():
        if key in meta and not ok(meta[key]):
            raise _type_error(where, key, want)
    for r in meta.get("readings", []):
        if "/" in r["file"] or not _ours(r["file"]):
            raise _type_error(where, "readings", "a list of files named reading-N.npz in the bundle")
    return meta


def load_bundle(path: str | os.PathLike) -> Bundle:
    from .safeload import UnsafeInput, require_regular

    root = Path(path)
    if root.is_file():
        raise BundleError(f"{root}: a bundle is a directory with model.onnx and inputs.npz")
    try:  # a FIFO or a device blocks open() for ever: refused before anything is opened
        for name in ("model.onnx", "inputs.npz", "expected.npz", "case.json"):
            require_regular(root / name, f"a bundle's {name}")
    except UnsafeInput as e:
        raise BundleError(str(e)) from None
    model_path = root / "model.onnx"
    if not model_path.exists() and (root / "feeds.npz").exists() and (root / "graphs").is_dir():
        raise BundleError(f"{root}: a zoo cell's bundle (graphs/, feeds.npz), which `check` does not take; "
                          f"rerun it with `sh {root / 'repro.sh'} BACKEND`")
    if not model_path.exists():
        raise BundleError(f"{model_path}: missing; a bundle directory needs model.onnx (and inputs.npz)")
    inputs_path = root / "inputs.npz"
    if not inputs_path.exists():
        raise BundleError(f"{inputs_path}: missing; save the model's inputs with numpy.savez(inputs.npz, <input name>=array)")
    meta = {}
    if (root / "case.json").exists():
        try:
            meta = json.loads((root / "case.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            why = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
            raise BundleError(f"{root / 'case.json'}: not JSON ({why}); delete it or rewrite it with `onnx-compat export`") from None
        meta = _check_meta(meta, root / "case.json")
    dts = meta.get("npz_dtypes", {})
    feeds = _by_step(_decode_checked(_load_npz(inputs_path), dts.get("inputs", {}), root / "case.json"), inputs_path)
    expected = masks = None
    n = len(feeds)
    if (root / "expected.npz").exists():
        raw = _by_step(_decode_checked(_load_npz(root / "expected.npz"), dts.get("expected", {}), root / "case.json"),
                       root / "expected.npz")
        expected = [{k: v for k, v in s.items() if not k.endswith(".mask")} for s in raw]
        masks = [{k[: -len(".mask")]: v.astype(bool) for k, v in s.items() if k.endswith(".mask")} for s in raw]
        if len(expected) != n:
            raise BundleError(f"{root / 'expected.npz'}: {len(expected)} step(s) but inputs.npz has {n}; key both "
                              "files' arrays by the same steps (name, name@1, …)")
    alternates = {}
    for r in meta.get("readings", []) if expected is not None else []:
        path = root / r["file"]
        steps = _by_step(_decode_checked(_load_npz(path), dts.get(r["file"], {}), root / "case.json"), path)
        if len(steps) != n:
            raise BundleError(f"{path}: {len(steps)} step(s) but inputs.npz has {n}; re-export the bundle")
        alternates[r["name"]] = steps
    return Bundle(root, model_path, feeds, expected, masks or [{} for _ in range(n)], meta.get("carry", {}), meta,
                  alternates)


def _decode_checked(arrays: dict[str, np.ndarray], dtypes: dict[str, str], where: Path) -> dict[str, np.ndarray]:
    if not dtypes:  # ml_dtypes costs ~0.3-1.6 s to import: only for bundles that hold such arrays
        return arrays
    import ml_dtypes

    for k, name in dtypes.items():
        if not hasattr(ml_dtypes, name) or name not in _VIEW:
            raise _type_error(where, "npz_dtypes", f"an object naming only {', '.join(_VIEW)} (got {name!r} for {k!r})")
    return _decode(arrays, dtypes)


def graph_io(model: onnx.ModelProto | GraphIO) -> GraphIO:
    """Graph inputs (not initialisers) with their declared dtype and rank (None where undeclared),
    and the graph's output names: of a loaded model, or as `model_io.read_graph_io` read them from
    the file (what `check` does, without importing onnx)."""
    if isinstance(model, GraphIO):
        return model
    from .model_io import elem_dtype

    init = {i.name for i in model.graph.initializer}
    io = GraphIO()
    for vi in model.graph.input:
        if vi.name in init:
            continue
        tt = vi.type.tensor_type
        io.inputs[vi.name] = (elem_dtype(tt.elem_type) if tt.elem_type else None,
                              len(tt.shape.dim) if tt.HasField("shape") else None)
    io.outputs = [o.name for o in model.graph.output]
    return io


def check_against_model(model: onnx.ModelProto | GraphIO, bundle: Bundle) -> None:
    """The bundle's fault, not a backend's: feeds for every graph input of every step (carried
    inputs aside) with the graph's dtype and rank, and expected outputs the graph has."""
    io = graph_io(model)
    ins, outs = io.inputs, io.outputs
    inputs_path = bundle.root / "inputs.npz"
    carried = set(bundle.carry.values())
    for step, feeds in enumerate(bundle.feeds):
        check_feeds_match(io, feeds, inputs_path, carried if step else frozenset())
        for name, arr in feeds.items():
            dt, rank = ins[name]
            key = name if step == 0 else f"{name}@{step}"
            arr = np.asarray(arr)
            if dt is not None and np.dtype(arr.dtype) != np.dtype(dt):
                raise BundleError(f"{inputs_path}: {key!r} is {arr.dtype} but the graph input is {np.dtype(dt).name}; "
                                  f"save it as {np.dtype(dt).name}")
            if rank is not None and arr.ndim != rank:
                raise BundleError(f"{inputs_path}: {key!r} has rank {arr.ndim} (shape {list(arr.shape)}) but the graph "
                                  f"input has rank {rank}; reshape it to the graph's input shape")
    files = [("expected.npz", bundle.expected or [])] + [(r["file"], bundle.alternates.get(r["name"], []))
                                                         for r in bundle.meta.get("readings", [])]
    for fname, steps in files:
        for step, exp in enumerate(steps):
            unknown = sorted(set(exp) - set(outs))
            if unknown:
                raise BundleError(f"{bundle.root / fname}: array(s) {unknown} name no graph output; the graph's outputs "
                                  f"are {outs}: key expected arrays by those names (or drop them)")


def check_feeds_match(model: onnx.ModelProto | GraphIO, feeds: dict[str, np.ndarray], where: Path,
                      carried: set[str] = frozenset()) -> None:
    graph_inputs = list(graph_io(model).inputs)
    missing = [n for n in graph_inputs if n not in feeds and n not in carried]
    extra = [n for n in feeds if n not in graph_inputs]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no array for graph input(s) {missing}")
        if extra:
            parts.append(f"array(s) {extra} match no graph input")
        raise BundleError(f"{where}: {'; '.join(parts)}; the graph's inputs are {graph_inputs} — key inputs.npz by those names")
