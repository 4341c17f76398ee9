"""Repro bundles of zoo cells: the decode loop of the export's contract, standalone.

Every zoo cell (one graph, embed + decoder, prefill + decode, a hub model) gets the same bundle:
its graphs (and their external data; a hub model's big weights are linked into the hub cache,
not copied), every step's planned feeds, the oracle's logits, where the twin has one the logits
of eager changed as the exporter changed the model (as_exported.npz), and a repro.py (numpy +
onnxruntime or tract; neither onnx nor onnx-compat) that runs the same teacher-forced loop as
harness/zoo/decode.py — each step's presents fed back under the names of the graph that made
them — and judges with the matrix's own code: harness/compare.py and harness/zoo/metrics.py
ship beside it. So `sh repro.sh BACKEND` prints the cell's verdict: PASS, EXPORTER, MISMATCH,
UNSUPPORTED (refused at load) or ERROR (failed while running).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import tolerances
from .decode import kv_names

LINK_OVER = 64 << 20  # bytes
COMPARE_MODULE = "onnx_compat_compare.py"
LOGITS_MODULE = "onnx_compat_logits.py"
#: metrics.py's imports and what they become beside onnx_compat_compare.py in a bundle
_LOGITS_IMPORTS = {"from ..compare import Judgement, tensor_metrics, worst\n":
                   "from onnx_compat_compare import Judgement, tensor_metrics, worst\n",
                   "from ..tolerances import Tolerance\n": ""}


def logits_module_source() -> str:
    """harness/zoo/metrics.py with its package imports pointed at the shipped compare module."""
    src = Path(__file__).with_name("metrics.py").read_text(encoding="utf-8")
    for old, new in _LOGITS_IMPORTS.items():
        if old not in src:
            raise RuntimeError(f"harness/zoo/metrics.py no longer imports {old.strip()!r}: update _LOGITS_IMPORTS")
        src = src.replace(old, new)
    return src


def _graph_outputs(path: Path) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


def _cache_folder(root: Path) -> Path:
    """What a bundle may read from: a hub snapshot's repo cache folder (models--org--name/, whose
    blobs/ its links point into), else the twin's own directory."""
    parts = root.parts
    if "snapshots" in parts:
        return Path(os.path.realpath(Path(*parts[: len(parts) - 1 - parts[::-1].index("snapshots")])))
    return Path(os.path.realpath(root))


def write_zoo_bundle(case, built, dest: str | os.PathLike, backend: str = "ort-cpu") -> Path:
    from ..bundle import _encode, _install, save_npz

    d = built.driver
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        graphs = d.contract.graphs.all()
        base, left_out = _cache_folder(d.root), []
        for g in graphs:  # the graph and every file beside it that its external data may name
            src = d.root / g
            for p in [src] + [q for q in src.parent.iterdir() if q.is_file() and q.name.startswith(src.name)
                              and q != src]:
                if not Path(os.path.realpath(p)).is_relative_to(base):  # a link out of the hub cache: not read
                    left_out.append(str(p.relative_to(d.root)))
                    continue
                target = tmp / "graphs" / p.relative_to(d.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                if p.stat().st_size > LINK_OVER:  # a hub model's weights stay in the hub cache: linked, not copied
                    os.symlink(p.resolve(), target)
                else:
                    shutil.copyfile(p, target)
        feeds = {}
        for i, s in enumerate(d.steps):
            feeds.update({f"{i}|main|{k}": v for k, v in s.feeds.items()})
            feeds.update({f"{i}|embed|{k}": v for k, v in s.embed_feeds.items()})
        enc, dtypes = _encode(feeds)
        save_npz(tmp / "feeds.npz", enc)
        save_npz(tmp / "expected.npz", {f"step{i}": e for i, e in enumerate(d.expected)})
        as_exported = None
        if d.as_exported is not None:
            steps, as_exported = d.as_exported
            save_npz(tmp / "as_exported.npz", {f"step{i}": e for i, e in enumerate(steps)})
        tol = tolerances.get(case.tolerance)
        step_graphs = [s.graph for s in d.steps]
        meta = {"case_id": case.id, "family": case.family, "features": dict(case.features), "oracle": d.oracle,
                "kind": "zoo", "graphs": {"embed": d.contract.graphs.embed, "steps": step_graphs},
                # each graph's (past input, present output) pairs: a prefill graph names its presents its own way
                "pairs": {g: kv_names(d.contract, g) for g in dict.fromkeys(step_graphs)},
                "outputs": {g: _graph_outputs(d.root / g) for g in graphs},
                "logits": d.contract.logits, "as_exported": as_exported, "npz_dtypes": {"feeds": dtypes},
                "tolerance": tol.as_record(), "tolerance_reason": tol.reason}
        if left_out:
            meta["left_out"] = {"files": left_out, "why": "links that leave the hub cache; onnx-compat reads none"}
        (tmp / "case.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (tmp / "repro.py").write_text(REPRO_PY)
        shutil.copyfile(Path(__file__).parents[1] / "compare.py", tmp / COMPARE_MODULE)
        (tmp / LOGITS_MODULE).write_text(logits_module_source(), encoding="utf-8")
        (tmp / "repro.sh").write_text(f"#!/bin/sh\n# {case.id}: rerun with numpy and one runtime "
                                      "(ort-cpu, ort-cpu-noopt, ort-cuda, tract)\n"
                                      f'cd "$(dirname "$0")" && exec python3 repro.py "${{1:-{backend}}}"\n')
        os.chmod(tmp / "repro.sh", 0o755)
        _install(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


REPRO_PY = r'''"""Standalone repro of an onnx-compat zoo cell: the teacher-forced loop of the export's contract
(embed graph for every step, then prefill/decoder with each step's presents fed back as the
next step's pasts), judged by onnx_compat_logits.py (harness/zoo/metrics.py) as the matrix is.

usage: python3 repro.py BACKEND     BACKEND: ort-cpu | ort-cpu-noopt | ort-cuda | tract
Prints each step's metrics and the verdict (PASS, EXPORTER, MISMATCH, UNSUPPORTED, ERROR);
exits 0 on PASS or EXPORTER (the backend runs the export faithfully), 1 otherwise.
"""
import json
import os
import sys
from types import SimpleNamespace

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from onnx_compat_logits import zoo_verdict  # noqa: E402

meta = json.load(open(os.path.join(here, "case.json")))
backend = sys.argv[1] if len(sys.argv) > 1 else "ort-cpu"
steps = len(meta["graphs"]["steps"])
dtypes = meta.get("npz_dtypes", {}).get("feeds", {})
feeds = [{"main": {}, "embed": {}} for _ in range(steps)]
with np.load(os.path.join(here, "feeds.npz"), allow_pickle=False) as z:
    for k in z.files:
        v = z[k]
        if k in dtypes:
            import ml_dtypes
            v = v.view(getattr(ml_dtypes, dtypes[k]))
        i, role, name = k.split("|", 2)
        feeds[int(i)][role][name] = v


def steps_of(name):
    with np.load(os.path.join(here, name), allow_pickle=False) as z:
        return [z[f"step{i}"] for i in range(steps)]


expected = steps_of("expected.npz")
as_exported = (steps_of("as_exported.npz"), meta["as_exported"]) if meta.get("as_exported") else None


def verdict(word, why=""):
    print(f"{word} {meta['case_id']} on {backend}" + (f": {why}" if why else ""))
    sys.exit(0 if word in ("PASS", "EXPORTER") else 1)


class Refused(Exception):
    """The runtime refused a graph at load (the matrix's `unsupported`)."""


def session(graph):
    path = os.path.join(here, "graphs", graph)
    outs = meta["outputs"][graph]  # values come in graph order (tract renames outputs it rewrites)
    if backend.startswith("ort"):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.log_severity_level = 4
        if backend == "ort-cpu-noopt":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            s = ort.InferenceSession(path, so, providers=["CUDAExecutionProvider" if backend == "ort-cuda"
                                                          else "CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            raise Refused(f"{graph}: {e}")
        names = [o.name for o in s.get_outputs()]
        return lambda f: dict(zip(names, s.run(names, f)))
    if backend == "tract":
        import tract
        try:
            m0 = tract.onnx().load(path)
        except Exception as e:  # noqa: BLE001
            raise Refused(f"{graph}: {e}")
        names = [m0.input_name(i) for i in range(m0.input_count())]
        dt = {"float32": "f32", "float16": "f16", "float64": "f64", "int64": "i64", "int32": "i32", "int8": "i8",
              "uint8": "u8", "bool": "bool"}
        plans = {}

        def run(f):
            key = tuple((n, f[n].shape, str(f[n].dtype)) for n in names)
            if key not in plans:
                try:
                    m = tract.onnx().load(path)
                    for i, n in enumerate(names):
                        m.set_input_fact(i, ",".join([*map(str, f[n].shape), dt[str(f[n].dtype)]]))
                    m.analyse()
                    plans[key] = m.into_model().into_runnable()
                except Exception as e:  # noqa: BLE001
                    raise Refused(f"{graph}: {e}")
            res = plans[key].run([np.array(f[n], order="C", copy=True) for n in names])
            return {o: t.to_numpy() for o, t in zip(outs, res)}
        return run
    sys.exit(f"unknown backend {backend!r}: use ort-cpu, ort-cpu-noopt, ort-cuda or tract")


print("backend", backend, "| oracle", meta["oracle"])
try:
    sessions = {}
    embed = meta["graphs"]["embed"]
    embedded = []
    if embed:
        sessions[embed] = session(embed)
        embedded = [sessions[embed](s["embed"]) for s in feeds]
    carried, logits = {}, []
    for i, g in enumerate(meta["graphs"]["steps"]):
        if g not in sessions:
            sessions[g] = session(g)
        f = dict(feeds[i]["main"])
        if embedded:
            f.update(embedded[i])
        f.update({p: v for p, v in carried.items() if p not in feeds[i]["main"]})
        res = sessions[g](f)
        if meta["logits"] not in res:
            raise RuntimeError(f"{g} gave no output {meta['logits']!r}")
        if i + 1 < steps:
            for p, q in meta["pairs"][g]:
                if q not in res:
                    raise RuntimeError(f"{g} gave no output {q!r} to feed back as {p!r}")
                carried[p] = res[q]
        logits.append(np.asarray(res[meta["logits"]]))
except Refused as e:
    verdict("UNSUPPORTED", str(e).splitlines()[0] if str(e) else "")
except Exception as e:  # noqa: BLE001 - failed while running: the matrix's `error`
    verdict("ERROR", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

j = zoo_verdict(logits, expected, SimpleNamespace(**meta["tolerance"]), meta["oracle"], as_exported)
for i, m in enumerate(j.metrics.get("steps", [])):
    if "error" in m:
        print(f"step {i}: {m['error']}")
        continue
    print(f"step {i} ({meta['graphs']['steps'][i]}): max|d| {m['max_abs']:.4g}  NMSE {m['nmse']:.4g}  "
          f"top-1 {m['top1']:.2f}  KL {m['kl']:.3g}  outside the bound: {m['bad']}/{m['n']}")
print(j.message)
verdict(j.status.upper() if j.status else "PASS" if j.passed else "MISMATCH")
'''
