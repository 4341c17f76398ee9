"""Repro bundles of zoo models with more than one graph (embed + decoder, prefill + decode).

The generic bundle holds one model.onnx; a multi-graph zoo model gets its graphs (and their
external data) copied, every step's planned feeds, the oracle's logits and a standalone
repro.py (numpy + onnxruntime or tract) that runs the same teacher-forced loop and judges each
step with the case's tolerance rule. Single-graph zoo models use the generic bundle (their
steps are feeds + carry, which it already replays).
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


def write_zoo_bundle(case, built, dest: str | os.PathLike, backend: str = "ort-cpu") -> Path:
    from ..bundle import _install

    d = built.driver
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        graphs = d.contract.graphs.all()
        for g in graphs:  # the graph and every file beside it that its external data may name
            src = d.root / g
            for p in [src] + [q for q in src.parent.iterdir() if q.is_file() and q.name.startswith(src.name)
                              and q != src]:
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
        np.savez(tmp / "feeds.npz", **feeds)
        np.savez(tmp / "expected.npz", **{f"step{i}": e for i, e in enumerate(d.expected)})
        tol = tolerances.get(case.tolerance)
        meta = {"case_id": case.id, "family": case.family, "features": dict(case.features), "oracle": d.oracle,
                "kind": "zoo", "graphs": {"embed": d.contract.graphs.embed,
                                                     "steps": [s.graph for s in d.steps]},
                "pairs": kv_names(d.contract), "logits": d.contract.logits, "tolerance": tol.as_record(),
                "tolerance_reason": tol.reason}
        (tmp / "case.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (tmp / "repro.py").write_text(REPRO_PY)
        (tmp / "repro.sh").write_text(f"#!/bin/sh\n# {case.id}: rerun with numpy and one runtime\n"
                                      f'cd "$(dirname "$0")" && exec python3 repro.py "${{1:-{backend}}}"\n')
        os.chmod(tmp / "repro.sh", 0o755)
        _install(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


REPRO_PY = r'''"""Standalone repro of an onnx-compat zoo model with several graphs: the teacher-forced loop
(embed graph for every step, then prefill/decoder with each step's presents fed back as pasts),
each step's logits judged with the case's tolerance (|a-b| <= atol + rtol|b| and NMSE bound).

usage: python3 repro.py BACKEND     BACKEND: ort-cpu | ort-cpu-noopt | ort-cuda | tract
"""
import json
import os
import sys

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
meta = json.load(open(os.path.join(here, "case.json")))
backend = sys.argv[1] if len(sys.argv) > 1 else "ort-cpu"
steps = len(meta["graphs"]["steps"])
feeds = [{"main": {}, "embed": {}} for _ in range(steps)]
with np.load(os.path.join(here, "feeds.npz")) as z:
    for k in z.files:
        i, role, name = k.split("|", 2)
        feeds[int(i)][role][name] = z[k]
with np.load(os.path.join(here, "expected.npz")) as z:
    expected = [z[f"step{i}"] for i in range(steps)]


def session(graph):
    path = os.path.join(here, "graphs", graph)
    if backend.startswith("ort"):
        import onnxruntime as ort
        so = ort.SessionOptions()
        if backend == "ort-cpu-noopt":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        s = ort.InferenceSession(path, so, providers=["CUDAExecutionProvider" if backend == "ort-cuda"
                                                      else "CPUExecutionProvider"])
        outs = [o.name for o in s.get_outputs()]
        return lambda f: dict(zip(outs, s.run(outs, f)))
    if backend == "tract":
        import onnx
        import tract
        g = onnx.load(path, load_external_data=False).graph
        inits = {i.name for i in g.initializer}
        names = [i.name for i in g.input if i.name not in inits]
        outs = [o.name for o in g.output]
        dt = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "bool": "bool"}
        plans = {}

        def run(f):
            key = tuple((n, f[n].shape) for n in names)
            if key not in plans:
                m = tract.onnx().load(path)
                for i, n in enumerate(names):
                    m.set_input_fact(i, ",".join([*map(str, f[n].shape), dt[str(f[n].dtype)]]))
                plans[key] = m.into_model().into_runnable()
            return {o: t.to_numpy() for o, t in zip(outs, plans[key].run([np.ascontiguousarray(f[n]) for n in names]))}
        return run
    sys.exit(f"unknown backend {backend!r}: use ort-cpu, ort-cpu-noopt, ort-cuda or tract")


embedded = []
if meta["graphs"]["embed"]:
    emb = session(meta["graphs"]["embed"])
    embedded = [emb(s["embed"]) for s in feeds]
sessions, carried, tol, ok = {}, {}, meta["tolerance"], True
for i, g in enumerate(meta["graphs"]["steps"]):
    sessions.setdefault(g, session(g))
    f = dict(feeds[i]["main"])
    if embedded:
        f.update(embedded[i])
    f.update({p: v for p, v in carried.items() if p not in f})
    res = sessions[g](f)
    carried = {p: res[q] for p, q in meta["pairs"] if q in res}
    a, b = np.asarray(res[meta["logits"]], np.float64), expected[i].astype(np.float64)
    if a.shape != b.shape and a.shape[1] == 1:
        b = b[:, -1:]
    d = np.abs(a - b)
    bad = int(np.count_nonzero(~(d <= tol["atol"] + tol["rtol"] * np.abs(b))))
    nmse = float(np.sum(d ** 2) / max(np.sum(b ** 2), 1e-30))
    top1 = float(np.mean(a.reshape(-1, a.shape[-1]).argmax(1) == b.reshape(-1, b.shape[-1]).argmax(1)))
    ok &= bad == 0 and nmse <= tol["max_nmse"]
    print(f"step {i} ({g}): max|d| {d.max():.4g}  NMSE {nmse:.4g}  top-1 {top1:.2f}  outside the bound: {bad}/{d.size}")
print(("PASS" if ok else "MISMATCH"), meta["case_id"], "on", backend, "judged against", meta["oracle"])
sys.exit(0 if ok else 1)
'''
