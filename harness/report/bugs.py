"""One upstream draft per bug: each build's drafts (harness/report/drafts.py) merged across the
builds of one implementation and across cells that show one root cause.

* Builds: ort-cpu, ort-cpu-noopt, ort-node, ort-web, ort-web-chromium run ONNX Runtime's CPU
  kernels (native, or compiled to WebAssembly); the WebGPU columns share ORT's WebGPU kernels;
  tract and tract-cli are tract. A draft lists every build that shows the bug, and those of the
  same implementation that ran the same cases and do not.
* Root cause: a refusal, error or crash is one bug per message (the build's own wrapper, paths
  and numbers set aside: the same missing kernel reads differently in Python, Node and the
  browser). Wrong values are one bug per op and error size: cells whose NMSE lies within a
  decade of each other (single linkage), with non-finite disagreements apart. Two bugs of one
  op with errors of the same size would share a draft; its signature then says "N of M".
* Refusals of valid models are feature requests, one per missing capability, listed after
  the wrong-value bugs. Every mismatch is outside its profile's derived bound (harness/tolerances.py):
  the drafts add no bound of their own, so float noise is kept out by the tolerances, not here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..verdict import Status
from .drafts import Draft, _fold, _slug, group, is_finding, op_label

#: a build's wrapper around the runtime's own message (set aside when telling messages apart)
_WRAPPERS = [re.compile(p) for p in (
    r"^Can't create a session\. ERROR_CODE: \d+, ERROR_MESSAGE: ",
    r"^(?:RuntimeError: )?failed to call OrtRun\(\)\. ERROR_CODE: \d+, ERROR_MESSAGE: ",
    r"^(?:\w+: )?\[ONNXRuntimeError\] : \d+ : \w+ : ",
    r"^Load model from \S+ failed:\s*",
    r"^(?:RuntimeError|InvalidArgument|Fail|Error|NotImplemented): ",
    r"^Exception during initialization: ",
    r"^Non-zero status code returned while running \w+ node\. Name:'[^']*' Status Message: ",
)]


def implementation(backend: str) -> str:
    """The implementation a column runs: builds of one implementation share their kernels."""
    b = backend.lower()
    if b.startswith("ort") and "webgpu" in b:
        return "onnxruntime (WebGPU kernels)"
    if b.startswith("ort-cuda") or b.startswith("ort-gpu"):
        return "onnxruntime (CUDA kernels)"
    if b.startswith("ort-genai"):
        return "onnxruntime-genai"
    if b == "ort" or b.startswith("ort-"):
        return "onnxruntime (CPU kernels)"
    if b.startswith("tract"):
        return "tract"
    if b.startswith("openvino"):  # its CPU and GPU plugins have kernels of their own
        return backend
    return backend.split("-")[0]  # another runtime's builds: "rt" and "rt-noopt"


#: how much of a runtime's words tells two refusals apart: builds cut their first line at
#: different lengths, so the same message is compared on its start
CORE_CHARS = 40
#: wrong values below this NMSE are an accuracy loss (the cases that show it are those the
#: tolerance catches: one bug by error size); above it, plainly wrong (one bug per signature)
ACCURACY_NMSE = 1e-3


def unwrap(line: str) -> str:
    """The runtime's own words: the build's wrappers and source locations stripped."""
    prev = None
    while prev != line:
        prev = line
        for w in _WRAPPERS:
            line = w.sub("", line)
        # ORT's "<source>.cc:123 onnxruntime::Class::Method(args) [with T = float] message"
        line = re.sub(r"^(?:/[\w.+-]+){2,}:\d+\s+[\w:<>~]+\([^)]*\)(?:\s*(?:const|\[[^\]]*\]))*\s*", "", line)
        line = re.sub(r"^(?:/[\w.+-]+){2,}:\d+\s+", "", line)
    return line.strip()


def full_first_line(message: Any) -> str:
    """The message's first line, uncut (a build's wrapper can take most of a cut line)."""
    s = str(message or "").strip()
    return s.splitlines()[0] if s else ""


def core_message(line: str) -> str:
    """`unwrap`, paths and digits folded, cut to CORE_CHARS: what tells refusals apart."""
    return _fold(unwrap(line))[:CORE_CHARS]


def _nonfinite(c: dict[str, Any]) -> bool:
    return "NaN" in str(c.get("message") or "") or "Inf" in str(c.get("message") or "")


def _log_nmse(d: Draft) -> float:
    vals = sorted(math.log10(v) for c in d.cells if isinstance(v := (c.get("metrics") or {}).get("nmse"), (int, float)) and v > 0)
    return vals[len(vals) // 2] if vals else 0.0


@dataclass
class Bug:
    impl: str
    kind: str
    parts: list[Draft] = field(default_factory=list)
    id: str = ""

    @property
    def cells(self) -> list[dict[str, Any]]:
        return [c for d in self.parts for c in d.cells]

    @property
    def ops(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys(d.op for d in self.parts))

    @property
    def builds(self) -> list[str]:
        return list(dict.fromkeys(d.backend for d in sorted(self.parts, key=lambda d: d.backend)))

    @property
    def cases(self) -> list[str]:
        return list(dict.fromkeys(c["case_id"] for c in self.cells))

    @property
    def feature_request(self) -> bool:
        return self.kind == "unsupported"


def merge(drafts: list[Draft]) -> list[Bug]:
    bugs: dict[tuple, Bug] = {}
    wrong: dict[tuple, list[Draft]] = {}
    for d in drafts:
        impl = implementation(d.backend)
        if d.kind != "mismatch":
            lines = [core_message(full_first_line(c.get("message"))) for c in d.cells]
            key = (impl, d.kind, max(set(lines), key=lines.count) if lines else "")
            if d.kind != "unsupported":  # a crash or a failure is a bug of the op it ran
                key += (d.op,)
            bugs.setdefault(key, Bug(impl, d.kind)).parts.append(d)
            continue
        zoo = d.op[0] == "model"
        nonfinite = any(_nonfinite(c) for c in d.cells)
        if not zoo and (nonfinite or _log_nmse(d) >= math.log10(ACCURACY_NMSE)):
            bugs.setdefault((impl, d.op, d.signature, nonfinite), Bug(impl, "mismatch")).parts.append(d)
            continue
        scope = (impl, ("model", "zoo") if zoo else d.op, nonfinite,
                 zoo and all((c.get("metrics") or {}).get("top1", 0) >= 1.0 for c in d.cells))
        wrong.setdefault(scope, []).append(d)
    for scope, ds in wrong.items():
        ds.sort(key=_log_nmse)
        run: list[Draft] = []
        for d in ds:
            if run and _log_nmse(d) - _log_nmse(run[-1]) > 1.0:
                bugs[scope + (id(run[0]),)] = Bug(scope[0], "mismatch", run)
                run = []
            run.append(d)
        bugs[scope + (id(run[0]),)] = Bug(scope[0], "mismatch", run)
    out = sorted(bugs.values(), key=lambda b: (b.feature_request, b.kind != "mismatch", -len(b.cases), b.impl,
                                                 op_label(b.ops[0]), b.kind))
    for n, b in enumerate(out, 1):
        what = b.ops[0][1] if len(b.ops) == 1 else "models" if all(o[0] == "model" for o in b.ops) else "several-ops"
        b.id = f"{n:03d}-{_slug(b.impl)}-{_slug(what)}-{b.kind}"
    return out


def build_status(bug: Bug, by_case: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per column that ran these cases: its statuses there. `shows`: builds with the bug;
    `clean`: builds of the same implementation that agree with the text on every case;
    `other`: the rest (same implementation, failing otherwise), then other implementations."""
    shows = bug.builds
    per: dict[str, dict[str, int]] = {}
    versions: dict[str, str] = {}
    for cid in bug.cases:
        for r in by_case.get(cid, ()):
            versions.setdefault(r["backend"], str(r.get("backend_version") or ""))
            if r["backend"] not in shows:
                c = per.setdefault(r["backend"], {})
                c[r["status"]] = c.get(r["status"], 0) + 1
    same = {b: c for b, c in per.items() if implementation(b) == bug.impl}
    clean = [b for b, c in same.items() if all(Status(s).acceptable for s in c)]
    return {"shows": shows, "clean": clean, "versions": versions, "same_other": {b: c for b, c in same.items() if b not in clean},
            "others": {b: c for b, c in per.items() if b not in same}}


def build(records: list[dict[str, Any]], run_info: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Drafts as plain data (the report and the Markdown files render the same dicts)."""
    from .draft_text import draft_dict

    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_case.setdefault(r["case_id"], []).append(r)
    bugs = merge(group(records))
    return [draft_dict(b, build_status(b, by_case), run_info, bugs) for b in bugs]
