"""`onnx-compat extract MODEL.onnx`: a real export's attention, quantisation, rotary and norm
nodes as op cases (llama.cpp's test-backend-ops idea, fed from real graphs).

Every distinct configuration (op type, attributes, each input's dtype and shape as a recorded
run of the export saw them, whether it is a constant or absent, which outputs are wired) becomes
one case: the node alone, its constants as the export has them (packed weights, scales, cos/sin
caches), its integer inputs as recorded (seqlens, lengths, positions, indices: the op's
bookkeeping must stay consistent with the shapes), its float activations random from the case
seed. The oracle is the reference backend on those bytes, so the reference column would agree by
construction: its cell is `skip`, saying so (Case.oracle_backend), and every other column is judged
against the spec. Attention ops are judged on
their first output only: a shared or windowed KV buffer's present holds rows the text leaves
unspecified (the gqa family judges presents, with masks).

Shapes come from a run of the export on ORT CPU without graph optimisations (shape inference
does not know the com.microsoft ops): a twin runs its decode loop's first two steps (prefill and
one decode: two configurations of each attention node); a bare model runs once on seeded random
feeds with symbolic dimensions set to 1, as `check` does.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .case import Built, Case

#: op type -> the mark (and op class) its cases carry
TARGETS = {
    **dict.fromkeys(["GroupQueryAttention", "Attention", "MultiHeadAttention", "SparseAttention"], "attention"),
    **dict.fromkeys(["MatMulNBits", "GatherBlockQuantized", "DequantizeLinear"], "quant"),
    "RotaryEmbedding": "rotary",
    **dict.fromkeys(["SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "RMSNormalization",
                     "LayerNormalization", "SkipLayerNormalization"], "norm"),
}
#: integer inputs up to this many elements are kept as recorded (larger ones: random in range)
MAX_RECORDED = 1 << 16
#: bump when what a configuration holds changes (invalidates the on-disk cache)
VERSION = 1


class ExtractError(ValueError):
    """A model that cannot be extracted; the message names the file and the fix."""

    user_facing = True


@dataclass
class Config:
    """One distinct configuration of a target node, with what building its case needs."""

    model: str  # the export's name (twin name, or --name)
    graph: str  # path of the graph file
    node: str
    op_type: str
    domain: str
    attrs: dict[str, Any]
    #: per input: {"kind": absent|const|input, "dtype", "shape", "name", "value" (recorded ints)}
    inputs: list[dict[str, Any]]
    outputs: list[str]  # "" where the export leaves an output unwired
    opsets: dict[str, int]
    ir_version: int

    def key(self) -> str:
        ins = [(i["kind"], i.get("dtype"), i.get("shape")) for i in self.inputs]
        return json.dumps([self.op_type, self.domain, self.attrs, ins, [bool(o) for o in self.outputs]],
                          sort_keys=True, default=str)


def _attr_json(node: onnx.NodeProto) -> dict[str, Any]:
    from .subgraph import node_attrs as _attrs

    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in sorted(_attrs(node).items())}


def record(model_path: Path, runs: list[dict[str, np.ndarray]], name: str, graph: str) -> list[Config]:
    """The target nodes of one graph, once per distinct configuration over `runs` (feeds)."""
    try:
        model = onnx.load(str(model_path))
    except Exception as e:  # noqa: BLE001
        raise ExtractError(f"{model_path}: not a loadable ONNX model ({type(e).__name__}: {e}); pass an .onnx file "
                           "(with its external data beside it)") from None
    targets = [n for n in model.graph.node if n.op_type in TARGETS]
    if not targets:
        return []
    inits = {t.name: t for t in model.graph.initializer}
    produced = {o: n for n in model.graph.node for o in n.output if o}
    wanted = {i for n in targets for i in n.input if i and i not in inits}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    have = {o.name for o in exposed.graph.output}
    for t in sorted(wanted - have):
        if t in produced:
            exposed.graph.output.append(helper.make_empty_tensor_value_info(t))
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(exposed.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise ExtractError(f"{model_path}: ORT CPU cannot load it to record shapes ({str(e)[:200]}); extract needs "
                           "a model ORT CPU runs") from None
    names = [o.name for o in sess.get_outputs()]
    in_names = {i.name for i in sess.get_inputs()}
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    seen: dict[str, Config] = {}
    for feeds in runs:
        vals = dict(zip(names, sess.run(names, {k: v for k, v in feeds.items() if k in in_names})))
        vals.update({k: np.asarray(v) for k, v in feeds.items()})
        for n in targets:
            ins = []
            for i in n.input:
                if not i:
                    ins.append({"kind": "absent"})
                elif i in inits:
                    t = inits[i]
                    ins.append({"kind": "const", "name": i, "shape": list(t.dims),
                                "dtype": str(helper.tensor_dtype_to_np_dtype(t.data_type))})
                elif i in produced and produced[i].op_type == "Constant":
                    a = np.asarray(vals[i])
                    ins.append({"kind": "const", "name": i, "shape": list(a.shape), "dtype": str(a.dtype),
                                "value": a.tolist()})
                else:
                    a = np.asarray(vals[i])
                    rec = {"kind": "input", "name": i, "shape": list(a.shape), "dtype": str(a.dtype)}
                    if a.dtype.kind in "iub" and a.size <= MAX_RECORDED:
                        rec["value"] = a.tolist()
                    ins.append(rec)
            c = Config(name, graph, n.name, n.op_type, n.domain or "ai.onnx", _attr_json(n), ins, list(n.output),
                       opsets, model.ir_version)
            seen.setdefault(c.key(), c)
    del sess
    return list(seen.values())


def twin_runs(twin_dir: Path, steps: int = 2) -> dict[str, list[dict[str, np.ndarray]]]:
    """Feeds of each graph of a twin over its decode loop's first `steps` steps, as the loop
    builds them (carried presents from ORT CPU's own run)."""
    from .backends.ort import OrtCpuNoOpt
    from .locate import _calls
    from .zoo.cases import _make_twin

    built = _make_twin(str(twin_dir))
    out: dict[str, list[dict[str, np.ndarray]]] = {}
    for call in _calls(built, OrtCpuNoOpt()):
        if call.step < steps:
            out.setdefault(call.graph, []).append(call.feeds)
    return out


def model_configs(model_path: Path, name: str) -> list[Config]:
    """A bare model (or a graph inside a twin directory: then the twin's decode loop feeds it)."""
    twin = next((p for p in [model_path.parent, *model_path.parents] if (p / "manifest.json").exists()), None)
    if twin is not None:
        graph = str(model_path.resolve().relative_to(twin.resolve()))
        runs = twin_runs(twin).get(graph)
        if runs:
            return record(model_path, runs, name, graph)
    from .check import _random_feeds

    try:
        m = onnx.load(str(model_path), load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise ExtractError(f"{model_path}: not an ONNX model ({type(e).__name__}); pass an .onnx file") from None
    return record(model_path, [_random_feeds(m, model_path)], name, model_path.name)


def twin_configs(twin_dir: Path) -> list[Config]:
    """Every graph of a twin, cached on disk by the graphs' bytes (a run per twin otherwise)."""
    from .zoo.twins import load_manifest

    m = load_manifest(twin_dir)
    graphs = [g for g in m.contract.graphs.all()]
    h = hashlib.sha256(f"v{VERSION}".encode())
    for g in graphs:
        h.update(g.encode())
        h.update(hashlib.sha256((twin_dir / g).read_bytes()).digest())
    cache = _cache_dir() / f"{m.name}-{h.hexdigest()[:16]}.json"
    if cache.exists():
        try:
            return [Config(**c) for c in json.loads(cache.read_text())]
        except (ValueError, TypeError):
            pass
    runs = twin_runs(twin_dir)
    out: list[Config] = []
    for g in graphs:
        if g in runs:
            out += record(twin_dir / g, runs[g], m.name, g)
    from .results import atomic_write_text

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps([c.__dict__ for c in out], default=str))
    except OSError:
        pass  # a cache that cannot be written costs time, not results
    return out


def _cache_dir() -> Path:
    base = os.environ.get("ONNX_COMPAT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "onnx-compat")
    return Path(base) / "extracted"


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@lru_cache(maxsize=2)
def _initializers(path: str) -> dict[str, onnx.TensorProto]:
    """An export's initializers by name, loaded once for all the cases extracted from it (a twin
    has a dozen; coverage reads ~300 such models in one process). Callers copy what they take."""
    return {t.name: t for t in onnx.load(path).graph.initializer}


def _graph(cfg: Config, root: Path, rng: np.random.Generator | None) -> tuple[onnx.ModelProto, dict, list[str]]:
    """The one-node model, its feeds (none drawn when rng is None) and its output names."""
    from .graph import np_to_tensor_type

    inits = _initializers(str(root / cfg.graph)) if any(i["kind"] == "const" and "value" not in i for i in cfg.inputs) \
        else {}
    g_inputs, g_inits, feeds, names = [], [], {}, []
    for k, i in enumerate(cfg.inputs):
        if i["kind"] == "absent":
            names.append("")
            continue
        name = f"in{k}"
        names.append(name)
        dt = _np_dtype(i["dtype"])
        if i["kind"] == "const":
            if "value" in i:
                g_inits.append(numpy_helper.from_array(np.asarray(i["value"], dt).reshape(i["shape"]), name))
            else:
                t = onnx.TensorProto()
                t.CopyFrom(inits[i["name"]])
                t.name = name
                g_inits.append(t)
            continue
        shape = i["shape"]
        if rng is None:
            pass
        elif "value" in i:
            feeds[name] = np.asarray(i["value"], dt).reshape(shape)
        elif dt.kind == "f" or dt.name == "bfloat16":
            feeds[name] = rng.standard_normal(shape).astype(dt)
        else:
            feeds[name] = rng.integers(0, 2, size=shape).astype(dt)
        g_inputs.append(helper.make_tensor_value_info(name, np_to_tensor_type(dt), shape))
    outs = [f"out{k}" if o else "" for k, o in enumerate(cfg.outputs)]
    node = helper.make_node(cfg.op_type, names, outs, domain=None if cfg.domain == "ai.onnx" else cfg.domain,
                            name=cfg.node, **cfg.attrs)
    outputs = [helper.make_empty_tensor_value_info(o) for o in outs if o]
    g = helper.make_graph([node], f"extracted_{cfg.op_type}", g_inputs, outputs, initializer=g_inits)
    ops = [helper.make_opsetid("" if d == "ai.onnx" else d, v) for d, v in cfg.opsets.items()]
    m = helper.make_model(g, opset_imports=ops, producer_name="onnx-compat extract")
    m.ir_version = cfg.ir_version
    return m, feeds, outs


def _build(cfg: Config, root: Path, rng: np.random.Generator) -> Built:
    from .backends.base import ModelRef
    from .backends.reference import Reference
    from .graph import np_to_tensor_type

    m, feeds, outs = _graph(cfg, root, rng)
    ref = Reference().prepare(ModelRef(m)).run(feeds)
    keep = outs[:1] if TARGETS[cfg.op_type] == "attention" else [o for o in outs if o]
    expected = {o: ref[o] for o in keep if o in ref}
    # the outputs' types, now known, go into the graph (a backend may want them declared)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(o, np_to_tensor_type(np.asarray(ref[o]).dtype), None)
                          for o in outs if o and o in ref)
    return Built(model=m, feeds=[feeds], expected=[expected],
                 oracle="reference backend (onnx.reference + onnx-compat refops) on the same node and bytes")


def to_cases(configs: list[Config], root: Path) -> list[Case]:
    from .node_profiles import op_profile

    counts: dict[str, int] = {}
    out = []
    for c in configs:
        n = counts.get(c.op_type, 0)
        counts[c.op_type] = n + 1
        floats = [i["dtype"] for i in c.inputs if i["kind"] != "absent" and i["dtype"] in ("float32", "float16",
                                                                                           "bfloat16")]
        dt = floats[0] if floats else "float32"
        cls = TARGETS[c.op_type]
        marks = ("extracted", cls) + (("fp16",) if dt == "float16" else ("bf16",) if dt == "bfloat16" else ())
        wired = [i["kind"] != "absent" for i in c.inputs]
        features = {"model": c.model, "graph": c.graph, "node": c.node, "op": c.op_type, "attrs": c.attrs,
                    "shapes": [i.get("shape") if i["kind"] != "absent" else None for i in c.inputs],
                    "dtypes": [i.get("dtype") for i in c.inputs], "wired": wired,
                    "const": [i["kind"] == "const" for i in c.inputs]}
        out.append(Case(id=f"extracted/{c.model}/{c.op_type}-{n}", family="extracted", features=features,
                        marks=marks, tolerance=op_profile(c.op_type, _np_dtype(dt), c.attrs),
                        make=partial(_make, c, str(root)), model_only=partial(_model_only, c, str(root)),
                        oracle_backend="reference",
                        description=f"{c.op_type} {c.node} of {c.model} ({c.graph}), its export's configuration"))
    return out


def _make(cfg: Config, root: str, rng: np.random.Generator) -> Built:
    return _build(cfg, Path(root), rng)


def _model_only(cfg: Config, root: str) -> onnx.ModelProto:
    """The case's node without feeds or oracle: what coverage reads (an extracted case's oracle
    runs the reference over export-sized tensors, e.g. 2 100 tokens of Phi-3 attention)."""
    return _graph(cfg, Path(root), None)[0]


def cmd_extract(model: str, name: str | None, backends_spec: list[str], out: str | None, as_json: bool) -> int:
    """Print the extracted cases of one model and their verdict on each backend."""
    from . import backends
    from .bundle import write_bundle
    from .runner import run_cell

    path = Path(model)
    if not path.is_file() or path.suffix != ".onnx":
        raise ExtractError(f"{path}: not an .onnx file; pass a model file (a twin's graph, or any export)")
    twin = next((p for p in [path.parent, *path.parents] if (p / "manifest.json").exists()), None)
    name = name or (twin.name if twin else path.stem)
    root = twin if twin is not None else path.parent
    cfgs = model_configs(path, name)
    if twin is not None:
        for c in cfgs:
            c.graph = str(path.resolve().relative_to(twin.resolve()))
    else:
        for c in cfgs:
            c.graph = path.name
    cases = to_cases(cfgs, root)
    rows = []
    bes = {n: backends.get(n) for n in backends_spec}
    try:
        for case in cases:
            built = case.build()
            for n, b in bes.items():
                rec = run_cell(case, b, built)
                row = {"case_id": case.id, "backend": n, "status": rec["status"], "nmse": rec["metrics"].get("nmse"),
                       "max_abs": rec["metrics"].get("max_abs"), "message": rec["message"][:200]}
                if out and rec["status"] != "pass":
                    row["repro"] = str(write_bundle(case, built, Path(out) / case.id, backend=n))
                rows.append(row)
    finally:
        for b in bes.values():
            b.close()
    if as_json:
        print(json.dumps({"model": str(path), "name": name, "cases": [
            {"id": c.id, **c.features} for c in cases], "cells": rows}, indent=1, default=str))
    else:
        print(f"{path}: {len(cases)} distinct configuration(s) of "
              f"{', '.join(sorted({c.op_type for c in cfgs})) or 'no attention/quantisation/rotary/norm op'}")
        for r in rows:
            nm = "" if r["nmse"] is None else f"  NMSE {r['nmse']:.3g}"
            print(f"{r['case_id']:<60} {r['backend']:<14} {r['status']}{nm}")
    return 0
