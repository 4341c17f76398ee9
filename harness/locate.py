"""`onnx-compat locate CASE --backend B`: the first node where a backend leaves the oracle.

Polygraphy's two methods, judged by this project's oracle (the reference backend):

1. **intermediates**: every node output becomes a graph output; the backend and the reference
   run that graph on the same feeds (for a zoo model: each graph run of the decode loop up to
   the step whose logits first diverge, with that step's feeds as the loop builds them on the
   reference), and the nodes are walked in topological order. A node whose outputs leave its
   op-class profile (`op_profile`) is a *candidate*; it is *located* once the node alone, fed
   the reference's recorded inputs, fails standalone on the backend and passes on the
   reference. A candidate that passes standalone only carried its inputs' rounding forward
   (drift): the walk goes on.
2. **bisect**: where the backend refuses the exposed graph, or exposing changes what it
   computes (a fused kernel it now cannot fuse), prefix subgraphs ending at node k (outputs =
   node k's outputs) are cut and judged; a binary search finds the first failing k.

The located node is extracted with its recorded inputs as a repro bundle (harness/bundle.py's
layout), checked to fail standalone on the backend and pass on the reference; where the node
alone passes, the smallest failing prefix is the bundle instead, and the result says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from .backends.base import Backend, ModelRef
from .case import Built, Case
from .json_clean import clean_for_json
from .node_profiles import agree, node_profiles, op_profile
from .subgraph import expose_all, node_attrs, node_key, prefix, single_node

#: a walk confirms at most this many candidates standalone before it stops (each is one load)
MAX_CONFIRM = 60


@dataclass
class Call:
    """One graph run of a case, as the oracle's run made it: which graph, the model, its feeds."""

    graph: str
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    step: int


def _calls(built: Built, ref: Backend) -> list[Call]:
    """Every graph run of the case on the reference, in order, with its feeds (a zoo model: as
    the decode loop builds them, carried presents from the reference's own run)."""
    calls: list[Call] = []
    if built.driver is None:
        sess = ref.prepare(ModelRef(built.model))
        prev: dict[str, np.ndarray] = {}
        for i, feeds in enumerate(built.feeds):
            f = dict(feeds)
            if i:
                f.update({inp: prev[out] for out, inp in built.carry.items()})
            calls.append(Call("model", built.model, f, i))
            prev = sess.run(f)
        return calls
    models: dict[str, onnx.ModelProto] = {}
    decoder_runs = [0]
    logits_graphs = {built.driver.contract.graphs.decoder, built.driver.contract.graphs.prefill}

    class Recording:
        def __init__(self, inner, graph):
            self.inner, self.graph = inner, graph

        def run(self, feeds):
            step = decoder_runs[0]
            if self.graph in logits_graphs:
                decoder_runs[0] += 1
            calls.append(Call(self.graph, models[self.graph], dict(feeds), step))
            return self.inner.run(feeds)

        def close(self):
            self.inner.close()

    def prepare(mref: ModelRef):
        graph = str(Path(mref.path).relative_to(built.driver.root))
        models[graph] = onnx.load(str(mref.path))
        return Recording(ref.prepare(ModelRef(models[graph])), graph)

    driven = built.driver.prepare(prepare)
    try:
        driven.run_steps()
    finally:
        driven.close()
    return calls


def _run(backend: Backend, model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    ref = ModelRef(model)  # held until the run ends: an isolated backend's worker reads its file then
    s = backend.prepare(ref)
    try:
        return s.run(dict(feeds))
    finally:
        s.close()
        del ref


def _first_bad_step(case: Case, built: Built, backend: Backend) -> tuple[int | None, str]:
    """The step whose outputs first leave the case's oracle on this backend; None if none does."""
    from .runner import run_cell

    rec = run_cell(case, backend, built)
    if rec["status"] in ("pass",):
        return None, rec["status"]
    return int(rec["metrics"].get("first_bad_step", 0) or 0), rec["status"]


class _Judge:
    """Standalone checks of one node (or prefix) on the backend and the reference."""

    def __init__(self, backend: Backend, ref: Backend):
        self.backend, self.ref = backend, ref

    def node(self, model, node, values, produced) -> tuple[bool, dict[str, Any], Any]:
        """(fails on the backend and not on the reference, per-output metrics, (model, feeds, expected))."""
        m, feeds = single_node(model, node, values, produced)
        try:
            expected = _run(self.ref, m, feeds)
        except Exception as e:  # noqa: BLE001 - the node cannot stand alone on the oracle
            return False, {"standalone": f"the reference could not run it alone: {e}"}, None
        try:
            got = _run(self.backend, m, feeds)
        except Exception as e:  # noqa: BLE001
            return False, {"standalone": f"the backend refused it alone: {_brief(e, 300)}"}, (m, feeds, expected)
        metrics, failed = {}, False
        for o, e in expected.items():
            ok, mm = agree(got.get(o, np.array([])), e, op_profile(node.op_type, np.asarray(e).dtype, node_attrs(node)))
            metrics[o] = mm
            failed |= not ok
        return failed, metrics, (m, feeds, expected)


def locate(case: Case, backend: Backend, ref: Backend, out_dir: str | Path | None = None,
           log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Find, extract and check the first diverging node of one cell; the result record."""
    built = case.build()
    bad_step, status = _first_bad_step(case, built, backend)
    result: dict[str, Any] = {"case_id": case.id, "backend": backend.name, "cell_status": status}
    if bad_step is None:
        result.update(found=False, why="the cell passes: no output leaves the oracle")
        return result
    calls = _calls(built, ref)
    upto = [c for c in calls if c.step <= bad_step]
    log(f"{len(upto)} graph run(s) up to step {bad_step}")
    judge = _Judge(backend, ref)
    exposed_ok = False
    for call in upto:
        found, exposed = _walk(call, backend, ref, judge, log)
        exposed_ok |= exposed
        if found:
            result.update(found)
            break
    else:
        found = _bisect(upto[-1], backend, ref, judge, log)
        if found:
            result.update(found)
        else:
            result.update(found=False, why=(
                "no node leaves its profile against the reference, exposed or cut: the backend agrees with the "
                "reference here, so the cell's mismatch is against the case's own oracle (the reference "
                "mismatches it too, or the divergence needs the whole graph)"))
            result["reference_cell"] = _first_bad_step(case, built, ref)[1]
            return result
    result["step"] = result.pop("_step")
    if out_dir is not None and result.get("_extract"):
        result.update(_write_repro(case, backend, ref, result, Path(out_dir)))
    result.pop("_extract", None)
    return clean_for_json(result)


def _node_record(node: onnx.NodeProto, index: int) -> dict[str, Any]:
    return {"name": node.name, "op_type": node.op_type, "domain": node.domain or "ai.onnx", "index": index,
            "attributes": node_attrs(node), "inputs": list(node.input), "outputs": list(node.output)}


def _walk(call: Call, backend: Backend, ref: Backend, judge: _Judge, log) -> tuple[dict | None, bool]:
    model = call.model
    exposed = expose_all(model)
    ref_vals = _run(ref, exposed, call.feeds)
    method = "intermediates"
    try:
        got = _run(backend, exposed, call.feeds)
    except Exception as e:  # noqa: BLE001 - refuses the modified graph: float tensors only, else bisect
        log(f"{call.graph} step {call.step}: the backend refused the exposed graph ({_brief(e)}); "
            "exposing float tensors only")
        try:
            got = _run(backend, expose_all(model, floats_only=True), call.feeds)
            method = "intermediates (float tensors only)"
        except Exception as e2:  # noqa: BLE001
            log(f"refused again ({_brief(e2)}); bisecting")
            return None, False
    produced = {o: n for n in model.graph.node for o in n.output if o}
    profiles = node_profiles(model, ref_vals)
    drift = 0
    confirmed = 0
    seen_unexposed = 0
    for i, node in enumerate(model.graph.node):
        outs = [o for o in node.output if o and o in ref_vals]
        obs = [o for o in outs if o in got]
        seen_unexposed += len(outs) - len(obs)
        if not obs:
            continue
        metrics, bad = {}, False
        profile = profiles[node_key(node, i)]
        for o in obs:
            ok, m = agree(got[o], ref_vals[o], profile)
            metrics[o] = m
            bad |= not ok
        if not bad:
            continue
        if confirmed >= MAX_CONFIRM:
            log(f"stopped after {MAX_CONFIRM} candidates that pass standalone")
            return None, True
        confirmed += 1
        fails, alone, extract = judge.node(model, node, {**call.feeds, **ref_vals}, produced)
        if not fails:
            drift += 1
            continue
        # inputs judged by this node's own profile: "agree" means "close enough that this node
        # had no excuse"
        inputs = {}
        for name in node.input:
            if not name:
                continue
            if name not in produced:
                inputs[name] = "graph input or initializer: fed identically"
            elif name in got:
                inputs[name] = agree(got[name], ref_vals[name], profile)[1]
            else:
                inputs[name] = "not exposed by the backend"
        log(f"located {node.op_type} {node.name!r} ({call.graph} step {call.step}, intermediates)")
        return {"found": True, "method": method, "graph": call.graph, "_step": call.step,
                "node": _node_record(node, i), "profile": profile, "inputs_profile": profile, "metrics": metrics, "standalone_metrics": alone,
                "inputs_metrics": inputs, "drift_candidates": drift, "unexposed_outputs": seen_unexposed,
                "extracted": "node", "_extract": extract}, True
    log(f"{call.graph} step {call.step}: no node fails standalone ({drift} drifted within the graph only)")
    return None, True


def _bisect(call: Call, backend: Backend, ref: Backend, judge: _Judge, log) -> dict | None:
    """Prefix cuts: a binary search for a node whose cut fails while the cut before it passes,
    then down through failing producers until every input's cut passes (the divergence starts
    at that node, not upstream: a binary search alone can land on a node whose own input was
    already off, because the cuts' failures are not monotone over a branching graph)."""
    model = call.model
    nodes = list(model.graph.node)
    ref_vals = _run(ref, expose_all(model), call.feeds)
    profiles = node_profiles(model, ref_vals)
    index = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    out_names = {o.name for o in model.graph.output}
    last = max((i for i, n in enumerate(nodes) if out_names & set(n.output)), default=len(nodes) - 1)
    cache: dict[int, tuple[bool, Any]] = {}

    def fails(k: int) -> bool:
        if k not in cache:
            cut = prefix(model, k)
            exp = {o: ref_vals[o] for o in nodes[k].output if o in ref_vals}
            try:
                got = _run(backend, cut, call.feeds)
            except Exception as e:  # noqa: BLE001 - a cut the backend refuses (a constant output, say)
                cache[k] = (False, {"refused": _brief(e, 500)})  # says nothing of the numbers: not a divergence
                return False
            metrics, bad = {}, False
            for o, e in exp.items():
                ok, m = agree(got.get(o, np.array([])), e, profiles[node_key(nodes[k], k)])
                metrics[o], bad = m, bad or not ok
            cache[k] = (bad, metrics)
        return cache[k][0]

    if not fails(last):
        log("the last cut passes: the divergence needs more than the graph's prefix")
        return None
    lo, hi = 0, last
    while lo < hi:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid + 1
    k = lo
    while True:  # down to a node whose inputs' cuts all pass
        bad_inputs = [index[i] for i in nodes[k].input if i in index and fails(index[i])]
        if not bad_inputs:
            break
        k = min(bad_inputs)
    node = nodes[k]
    log(f"bisected to node {k} {node.op_type} {node.name!r} in {len(cache)} cuts")
    produced = {o: n for n in nodes for o in n.output if o}
    alone_fails, alone, extract = judge.node(model, node, {**call.feeds, **ref_vals}, produced)
    rec = {"found": True, "method": "bisect", "graph": call.graph, "_step": call.step, "node": _node_record(node, k),
           "profile": profiles[node_key(node, k)], "metrics": cache[k][1], "standalone_metrics": alone,
           "cuts": len(cache), "refused_cuts": sum("refused" in v[1] for v in cache.values()), "inputs_metrics": {n: ("graph input or initializer: fed identically" if n not in index
                                                      else {"cut_passes": True, **cache[index[n]][1]})
                                                  for n in node.input if n}}
    if alone_fails:
        rec.update(extracted="node", _extract=extract)
    else:
        cut = prefix(model, k)
        rec.update(extracted="prefix", _extract=(cut, dict(call.feeds), {o: ref_vals[o] for o in node.output if o}))
    return rec


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")[:120] or "node"


def _write_repro(case: Case, backend: Backend, ref: Backend, result: dict, out_dir: Path) -> dict[str, Any]:
    """The extracted node (or prefix) as a bundle, checked: fails on the backend, passes on the reference."""
    from .bundle import write_bundle
    from .runner import run_cell

    model, feeds, expected = result["_extract"]
    feeds = {k: v for k, v in feeds.items() if k in {i.name for i in model.graph.input}}
    node = result["node"]
    sub_built = Built(model=model, feeds=[feeds], expected=[dict(expected)],
                      oracle="reference backend (onnx.reference + onnx-compat refops), on the recorded inputs")
    sub = Case(id=f"locate/{case.id}/{_safe(node['name'] or node['op_type'])}", family="locate",
               features={"source_case": case.id, "node": node["name"], "op_type": node["op_type"],
                         "step": result["step"], "graph": result["graph"], "extracted": result["extracted"]},
               marks=(), tolerance=result["profile"], make=lambda rng: sub_built,
               description=f"{node['op_type']} {node['name']} of {case.id}, extracted by onnx-compat locate")
    dest = out_dir / f"{_safe(case.id)}--{_safe(backend.name)}"
    write_bundle(sub, sub_built, dest, backend=backend.name)
    on_b = run_cell(sub, backend, sub_built)["status"]
    on_r = run_cell(sub, ref, sub_built)["status"]
    return {"repro": str(dest), "repro_check": {backend.name: on_b, "reference": on_r},
            "repro_ok": on_b != "pass" and on_r == "pass"}


def _brief(e: BaseException, limit: int = 160) -> str:
    """A backend's error in a line: its first line (a Rust error's backtrace and "Caused by" chain
    follow it; a terminal or a cell's message has no use for them)."""
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return first if len(first) <= limit else first[:limit] + "…"


def summary_line(res: dict[str, Any]) -> str:
    """One line for a terminal or a cell's message."""
    if not res.get("found"):
        return f"{res['case_id']} on {res['backend']}: not located: {res.get('why', '')}"
    n = res["node"]
    worst = max((m.get("nmse", 0) for m in res.get("metrics", {}).values() if isinstance(m, dict)), default=0)
    return (f"{res['case_id']} on {res['backend']}: first diverging node {n['op_type']} {n['name']!r} "
            f"({res['graph']}, step {res['step']}, by {res['method']}; profile {res['profile']}, NMSE {worst:.3g}); "
            f"repro {res.get('repro', '-')} ({'fails there, passes on the reference' if res.get('repro_ok') else 'check: ' + str(res.get('repro_check'))})")


def locate_cell(case: Case, backend_name: str, out_dir: str | Path | None, timeout: float = 120.0,
                log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """locate() with backends by name (isolated ones in their worker), closed afterwards."""
    from . import backends

    b = backends.get(backend_name, timeout=timeout)
    r = backends.get("reference", isolated=False)
    try:
        return locate(case, b, r, out_dir, log)
    finally:
        b.close()
        r.close()


def locate_records(records: list[dict[str, Any]], out: Path, timeout: float, log=print) -> int:
    """`run --locate`: every zoo cell that ran to a mismatch gets metrics["located"] (the node,
    its method and its checked repro under out/located/); returns how many were located."""
    from .zoo import zoo_cases

    zoo = {c.id: c for c in zoo_cases("twins")}
    n = 0
    for rec in records:
        if rec["family"] != "zoo" or rec["status"] not in ("mismatch", "ambiguous") or rec["backend"] == "reference":
            continue
        case = zoo.get(rec["case_id"])
        if case is None:
            continue
        try:
            res = locate_cell(case, rec["backend"], out / "located", timeout)
        except Exception as e:  # noqa: BLE001 - locating is best effort; the cell's verdict stands
            res = {"found": False, "why": f"locate failed: {type(e).__name__}: {_brief(e, 300)}"}
        keep = {k: res.get(k) for k in ("found", "why", "method", "graph", "step", "node", "profile", "repro",
                                         "repro_ok", "extracted") if k in res}
        rec["metrics"]["located"] = clean_for_json(keep)
        n += bool(res.get("found"))
        if log:
            log(summary_line({"case_id": rec["case_id"], "backend": rec["backend"], **res}))
    return n
