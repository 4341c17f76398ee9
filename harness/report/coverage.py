"""Which attributes, optional inputs and optional outputs of each targeted op the grid exercises,
read from the operator text (ORT's `get_all_operator_schema()` for the contrib ops, `onnx.defs`
for the standard ones) and from the cases' own models, never written by hand.

A *hole* is an attribute with no value other than its default exercised, or an optional input or
output no case wires. Required attributes are listed with their values but are never holes.
"""

from __future__ import annotations

import functools
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import onnx
from onnx import helper

#: standard-domain ops the families target (their com.microsoft counterparts are found by domain)
STANDARD_TARGETS = {"Attention", "RotaryEmbedding", "RMSNormalization", "DequantizeLinear",
                    "SimplifiedLayerNormalization"}
#: attributes that only steer the schema's own bookkeeping, or that exist to be left alone
_NOT_A_FEATURE = {"domain"}
ABSENT = "(absent)"  # an attribute with no default that a node leaves out


@dataclass
class OpCoverage:
    domain: str
    op: str
    since: int
    nodes: int = 0
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {default, required, values}
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # optional input -> {wired}
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def holes(self) -> list[str]:
        out = []
        for name, a in self.attributes.items():
            if a["required"] or name in _NOT_A_FEATURE:
                continue
            non_default = [v for v in a["values"] if v not in (a["default"], ABSENT)]
            if not non_default:
                out.append(f"attribute {name}")
        out += [f"input {n}" for n, i in self.inputs.items() if not i["wired"]]
        out += [f"output {n}" for n, o in self.outputs.items() if not o["wired"]]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "op": self.op, "since": self.since, "nodes": self.nodes,
                "attributes": self.attributes, "inputs": self.inputs, "outputs": self.outputs, "holes": self.holes()}


def _fmt(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, float):
        return f"{v:g}"
    return json.dumps(v) if isinstance(v, (list, tuple)) else str(v)


def _ort_schema(domain: str, op: str, version: int):
    from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema

    cands = [s for s in get_all_operator_schema() if s.name == op and s.domain == domain and s.since_version <= version]
    return max(cands, key=lambda s: s.since_version) if cands else None


@functools.lru_cache(maxsize=None)
def _schema(domain: str, op: str, version: int):
    """(since_version, {attr: (required, default)}, [(input, optional)], [(output, optional)])."""
    try:
        s = onnx.defs.get_schema(op, version, domain)
        attrs = {n: (a.required, helper.get_attribute_value(a.default_value) if a.default_value.type else None)
                 for n, a in s.attributes.items()}
        opt = onnx.defs.OpSchema.FormalParameterOption.Optional
        return (s.since_version, attrs, [(i.name, i.option == opt) for i in s.inputs],
                [(o.name, o.option == opt) for o in s.outputs])
    except onnx.defs.SchemaError:
        pass
    s = _ort_schema(domain, op, version)
    if s is None:
        return None
    attrs = {}
    for n, a in s.attributes.items():
        default = None
        raw = a._default_value
        if raw:
            ap = onnx.AttributeProto()
            ap.ParseFromString(raw)
            if ap.type:
                default = helper.get_attribute_value(ap)
        attrs[n] = (a.required, default)
    opt = s.FormalParameterOption.Optional
    return (s.since_version, attrs, [(i.name, i.option == opt) for i in s.inputs],
            [(o.name, o.option == opt) for o in s.outputs])


def _targeted(node: onnx.NodeProto) -> bool:
    return node.domain == "com.microsoft" or (node.domain in ("", "ai.onnx") and node.op_type in STANDARD_TARGETS)


def collect(models: Iterable[onnx.ModelProto]) -> dict[tuple[str, str, int], OpCoverage]:
    seen: dict[tuple[str, str, int], OpCoverage] = {}
    values: dict[tuple, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for model in models:
        opsets = {o.domain or "": o.version for o in model.opset_import}
        for node in model.graph.node:
            if not _targeted(node):
                continue
            domain = "" if node.domain == "ai.onnx" else node.domain
            version = opsets.get(domain, 1)
            sch = _schema(domain, node.op_type, version)
            if sch is None:
                continue
            since, attrs, inputs, outputs = sch
            key = (domain, node.op_type, since)
            cov = seen.get(key)
            if cov is None:
                cov = seen[key] = OpCoverage(domain, node.op_type, since)
                for n, (req, default) in attrs.items():
                    cov.attributes[n] = {"required": req, "default": default, "values": []}
                cov.inputs = {n: {"wired": 0} for n, opt in inputs if opt}
                cov.outputs = {n: {"wired": 0} for n, opt in outputs if opt}
            cov.nodes += 1
            given = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            for n, a in cov.attributes.items():
                values[key][n][_fmt(given[n]) if n in given else
                               (ABSENT if a["default"] is None else _fmt(a["default"]))] += 1
            for i, (n, _opt) in enumerate(inputs):
                if n in cov.inputs and i < len(node.input) and node.input[i]:
                    cov.inputs[n]["wired"] += 1
            for i, (n, _opt) in enumerate(outputs):
                if n in cov.outputs and i < len(node.output) and node.output[i]:
                    cov.outputs[n]["wired"] += 1
    for key, cov in seen.items():
        for n, a in cov.attributes.items():
            a["values"] = sorted(values[key][n])
            a["default"] = None if a["default"] is None else _fmt(a["default"])
    return seen


def case_models(cases) -> Iterable[onnx.ModelProto]:
    for c in cases:
        try:
            yield c.model()
        except Exception:  # noqa: BLE001 - a case that cannot build covers nothing (run shows why)
            continue


def table(cases) -> list[dict[str, Any]]:
    cov = collect(case_models(cases))
    return [c.as_dict() for _, c in sorted(cov.items())]


def holes_by_op(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {f"{r['domain'] or 'ai.onnx'}.{r['op']}-{r['since']}": r["holes"] for r in rows}


def markdown(rows: list[dict[str, Any]], grid: str) -> str:
    """The table as docs/coverage.md shows it: one section per op, values as the grid has them."""
    lines = [f"# Coverage of the operator text ({grid} grid)", "",
             "Generated by `python -m harness.coverage --grid GRID --write docs/coverage.md` from the",
             "operator schemas and the cases' own models. A hole is an attribute never given a non-default",
             "value, or an optional input/output never wired.", ""]
    for r in rows:
        lines += [f"## {r['domain'] or 'ai.onnx'}.{r['op']} (since {r['since']}): {r['nodes']} node(s)", ""]
        lines += ["| attribute | default | values exercised |", "|---|---|---|"]
        for n, a in sorted(r["attributes"].items()):
            default = "required" if a["required"] else (a["default"] if a["default"] is not None else "—")
            lines.append(f"| {n} | {default} | {', '.join(a['values'])} |")
        io = [f"input {n}: {i['wired']}" for n, i in r["inputs"].items()] + \
             [f"output {n}: {o['wired']}" for n, o in r["outputs"].items()]
        if io:
            lines += ["", "Optional inputs/outputs wired (nodes): " + "; ".join(io)]
        lines += ["", "**Holes:** " + (", ".join(r["holes"]) if r["holes"] else "none"), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ..registry import load_cases
    from ..results import atomic_write_text

    p = argparse.ArgumentParser(prog="python -m harness.coverage", description=__doc__.splitlines()[0])
    p.add_argument("--grid", choices=["quick", "full"], default="quick")
    p.add_argument("--write", metavar="FILE.md", help="write the Markdown table (default: print the holes)")
    args = p.parse_args(argv)
    rows = table([c for c in load_cases(args.grid) if c.family != "zoo"])
    if args.write:
        atomic_write_text(args.write, markdown(rows, args.grid))
    for op, holes in holes_by_op(rows).items():
        print(f"{op:<50} {', '.join(holes) or 'no holes'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
