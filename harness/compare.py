"""One error metric family for every backend: tensor metrics against the oracle, and the verdict.

Metrics per output (over the elements the op specifies): max |Δ|, max relative Δ, NMSE
(Σ(a−b)² / Σb², the llama.cpp metric), cosine, and the smallest tolerance that would have
passed (Polygraphy's "minimum required tolerance"): `need_atol` at the profile's rtol and
`need_rtol` at the profile's atol. A NaN/Inf where the oracle is finite is always a mismatch.

Self-contained on purpose (numpy only; a tolerance is anything with atol, rtol, max_nmse and
int_atol, and optionally atol_rms): repro bundles ship this very file, so `repro.sh` judges
exactly as the matrix does.

The element rule is |a − b| <= atol_eff + rtol·|b|, atol_eff = atol + atol_rms·RMS(b) over the
compared elements: a profile whose error scales with the data rather than with each element (int8
activation quantisation: with the block's largest |A|) sets atol_rms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:  # no runtime import: this file also runs alone inside a repro bundle
    from .tolerances import Tolerance

TINY = 1e-30


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)  # no copy of what is float64 already: nothing here writes to it


def top1_agreement(actual: np.ndarray, expected: np.ndarray) -> float | None:
    """Fraction of rows (all axes but the last) whose argmax over the last axis agrees: what a
    matmul's error does to a greedy choice when the output is a row of logits."""
    a, b = np.asarray(actual), np.asarray(expected)
    if b.ndim < 2 or b.shape[-1] < 2 or a.shape != b.shape or b.dtype.kind not in "f":
        return None
    return _top1(_f64(a).reshape(-1, b.shape[-1]), _f64(b).reshape(-1, b.shape[-1]))


def _top1(a2: np.ndarray, b2: np.ndarray) -> float:
    """top1_agreement on float64 rows (a NaN never wins a row: it counts as -inf)."""
    if not np.isfinite(a2).all():  # nan_to_num costs more than the rest together: only where it changes something
        a2 = np.nan_to_num(a2, nan=-np.inf)
    return float(np.mean(np.argmax(a2, axis=1) == np.argmax(b2, axis=1)))


def tensor_metrics(actual: np.ndarray, expected: np.ndarray, tol: Tolerance,
                   mask: np.ndarray | None = None) -> dict[str, Any]:
    """Every metric in as few passes over the data as give the same numbers: each cell of every
    column is judged here, and after a fresh session each numpy call costs more than the small
    tensors' arithmetic (`onnx-compat bench`, cell overhead)."""
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf are judged below, not warned about
        return _tensor_metrics(actual, expected, tol, mask)


def _tensor_metrics(actual: np.ndarray, expected: np.ndarray, tol: Tolerance,
                    mask: np.ndarray | None) -> dict[str, Any]:
    act, exp = np.asarray(actual), np.asarray(expected)
    integer = exp.dtype.kind in "iu"
    a = _f64(act).ravel()
    b = _f64(exp).ravel()
    top1 = None
    if mask is None:
        if exp.ndim >= 2 and exp.shape[-1] >= 2 and act.shape == exp.shape and exp.dtype.kind == "f":
            top1 = _top1(a.reshape(-1, exp.shape[-1]), b.reshape(-1, exp.shape[-1]))
    else:
        m = np.asarray(mask, dtype=bool).ravel()
        if not m.all():
            a, b = a[m], b[m]
    out: dict[str, Any] = {"n": int(b.size)}
    if top1 is not None:
        out["top1"] = top1
    # a·a and b·b (the cosine's norms) are finite exactly when every element is, unless the
    # squares overflow: then the careful path below decides, as it does for any NaN/Inf
    aa, bb = float(a.dot(a)), float(b.dot(b))
    if math.isfinite(aa) and math.isfinite(bb):  # the usual case: no element to set aside
        bad_nonfinite = 0
        out["nonfinite_mismatch"] = 0
    else:
        fin_b = np.isfinite(b)
        fin_a = np.isfinite(a)
        if fin_a.all() and fin_b.all():
            bad_nonfinite = 0
            out["nonfinite_mismatch"] = 0
        else:
            # Non-finite agreement: NaN must match NaN, ±Inf the same signed Inf.
            same_nonfinite = (~fin_b) & (((np.isnan(b)) & np.isnan(a)) | ((np.isinf(b)) & (a == b)))
            backend_nonfinite = int(np.count_nonzero(fin_b & ~fin_a))
            oracle_nonfinite = int(np.count_nonzero(~fin_b & ~same_nonfinite))
            bad_nonfinite = backend_nonfinite + oracle_nonfinite
            out["nonfinite_mismatch"] = bad_nonfinite
            if bad_nonfinite:
                out["backend_nonfinite"] = backend_nonfinite  # NaN/Inf from the backend, oracle finite
                out["oracle_nonfinite"] = oracle_nonfinite  # oracle NaN/±Inf, backend something else
            both = fin_a & fin_b
            a, b = a[both], b[both]
            aa, bb = float(a.dot(a)), float(b.dot(b))
    if a.size == 0:
        out.update(max_abs=0.0, max_rel=0.0, nmse=0.0, cosine=1.0, need_atol=0.0, need_rtol=0.0, bad=bad_nonfinite)
        return out
    diff = a - b
    d = np.abs(diff)
    absb = np.abs(b)
    floor_b = np.maximum(absb, TINY)
    max_abs = float(d.max())
    out["max_abs"] = max_abs
    out["max_rel"] = float((d / floor_b).max())
    den = float(np.sum(b * b))
    num = float(np.sum(diff * diff))
    out["nmse"] = num / den if den > 0 else (0.0 if num == 0 else math.inf)
    na, nb = math.sqrt(aa), math.sqrt(bb)  # = np.linalg.norm, without its checks
    out["cosine"] = float(a.dot(b) / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    if integer:  # quantised values: judged in quantisation steps
        out["integer"] = True
        out["need_atol"] = max_abs
        out["need_rtol"] = 0.0
        out["bad"] = int(np.count_nonzero(d > tol.int_atol)) + bad_nonfinite
        return out
    atol = effective_atol(tol, b)
    if atol != tol.atol:
        out["atol"] = atol
    rel_part = tol.rtol * absb
    out["need_atol"] = float(max(0.0, (d - rel_part).max()))
    out["need_rtol"] = float(max(0.0, ((d - atol) / floor_b).max()))
    out["bad"] = int(np.count_nonzero(d > atol + rel_part)) + bad_nonfinite
    return out


def effective_atol(tol: Tolerance, expected: np.ndarray) -> float:
    """atol + atol_rms * RMS(expected): the absolute bound, scaled with the data where the profile
    says so (older tolerance records have no atol_rms: 0)."""
    scale = float(getattr(tol, "atol_rms", 0.0) or 0.0)
    if not scale or expected.size == 0:
        return float(tol.atol)
    return float(tol.atol) + scale * float(np.sqrt(np.mean(np.square(expected))))


@dataclass
class Judgement:
    passed: bool
    metrics: dict[str, Any]
    message: str = ""
    problems: list[str] = field(default_factory=list)
    #: a verdict other than pass/mismatch the judge reached itself (the zoo's "exporter")
    status: str | None = None


#: Every summary metric a cell may carry (tensor metrics, then the zoo's logit metrics), and
#: whether higher is better: the one list the matrix, pytest's message and the report read.
METRICS: dict[str, bool] = {"max_abs": False, "max_rel": False, "nmse": False, "cosine": True, "need_atol": False,
                            "need_rtol": False, "top1": True, "top5": True, "kl": False, "kl_max": False}
METRIC_NAMES = tuple(METRICS)


def judge_step(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
               masks: Mapping[str, np.ndarray], tol: Tolerance) -> Judgement:
    per_output: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name, exp in expected.items():
        if name not in actual:
            problems.append(f"output {name!r} missing from the backend's results")
            continue
        act = np.asarray(actual[name])
        exp = np.asarray(exp)
        mask = masks.get(name)
        if act.shape != exp.shape:
            if act.size == exp.size and mask is None:
                problems.append(f"output {name!r} has shape {list(act.shape)}, expected {list(exp.shape)} (compared flattened)")
                act = act.reshape(exp.shape)
            else:
                problems.append(f"output {name!r} has shape {list(act.shape)}, expected {list(exp.shape)}")
                continue
        m = tensor_metrics(act, exp, tol, mask)
        if np.dtype(act.dtype) != np.dtype(exp.dtype) and exp.dtype.kind == act.dtype.kind == "f":
            m["dtype"] = str(act.dtype)
        if m.get("backend_nonfinite"):
            problems.append(f"output {name!r}: {m['backend_nonfinite']} NaN/Inf element(s) where the oracle is finite")
        if m.get("oracle_nonfinite"):
            problems.append(f"output {name!r}: {m['oracle_nonfinite']} element(s) where the oracle is NaN/±Inf "
                            "and the backend gives another value")
        if m["bad"] > m["nonfinite_mismatch"]:
            bound = (f"{tol.int_atol:g} quantisation step(s)" if m.get("integer")
                     else f"atol {m.get('atol', tol.atol):.3g} + rtol {tol.rtol:g}")
            problems.append(f"output {name!r}: {m['bad'] - m['nonfinite_mismatch']}/{m['n']} element(s) outside "
                            f"{bound} (max |Δ| {m['max_abs']:.3g})")
        if m["nmse"] > tol.max_nmse and not m.get("integer"):
            problems.append(f"output {name!r}: NMSE {m['nmse']:.3g} > {tol.max_nmse:g}")
        per_output[name] = m
    metrics = aggregate(per_output)
    return Judgement(passed=not problems, metrics=metrics, problems=problems,
                     message="; ".join(problems))


def worst(metric_dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """The worst value of each summary metric over outputs or steps (lowest cosine and top-1,
    highest everything else)."""
    out: dict[str, Any] = {}
    for k, higher_is_better in METRICS.items():
        vals = [m[k] for m in metric_dicts if k in m]
        if vals:
            out[k] = min(vals) if higher_is_better else max(vals)
    return out


def aggregate(per_output: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Worst value over outputs at top level (what the matrix shows), each output kept below."""
    agg: dict[str, Any] = worst(list(per_output.values()))
    if per_output:
        worst_output = max(per_output, key=lambda n: (per_output[n].get("bad", 0), per_output[n].get("nmse", 0.0)))
        agg["worst_output"] = worst_output
    agg["outputs"] = per_output
    return agg


def judge_steps(actual_steps: list[Mapping[str, np.ndarray]], expected_steps: list[Mapping[str, np.ndarray]],
                mask_steps: list[Mapping[str, np.ndarray]], tol: Tolerance) -> Judgement:
    if len(expected_steps) == 1:
        return judge_step(actual_steps[0], expected_steps[0], mask_steps[0], tol)
    steps = [judge_step(a, e, m, tol) for a, e, m in zip(actual_steps, expected_steps, mask_steps)]
    metrics = worst([s.metrics for s in steps])
    metrics["steps"] = [s.metrics for s in steps]
    problems = [f"step {i}: {p}" for i, s in enumerate(steps) for p in s.problems]
    first_bad = next((i for i, s in enumerate(steps) if not s.passed), None)
    if first_bad is not None:
        metrics["first_bad_step"] = first_bad
    return Judgement(passed=not problems, metrics=metrics, problems=problems, message="; ".join(problems))


def judge_readings(actual_steps: list[Mapping[str, np.ndarray]], expected_steps: list[Mapping[str, np.ndarray]],
                   mask_steps: list[Mapping[str, np.ndarray]], tol: Tolerance,
                   alternates: Mapping[str, list[Mapping[str, np.ndarray]]] | None = None,
                   excluded: Mapping[str, list[Mapping[str, np.ndarray]]] | None = None) -> tuple[str, Judgement]:
    """The verdict of a cell that ran, as the matrix and a repro bundle both give it: "pass",
    "ambiguous" (fails the chosen reading of the operator text but matches another reading it
    allows: metrics["matches_reading"] names it), or "mismatch". A mismatch that matches a
    reading the text rules out (`excluded`) stays a mismatch; metrics["matches_excluded_reading"]
    and the message name that reading, so the finding says what the backend does."""
    j = judge_steps(actual_steps, expected_steps, mask_steps, tol)
    if j.passed:
        return "pass", j
    for reading, expected in (alternates or {}).items():
        if judge_steps(actual_steps, expected, mask_steps, tol).passed:
            j.metrics["matches_reading"] = reading
            j.message = (f"matches another reading the operator text allows ({reading}); against the chosen "
                         f"reading: {j.message}")
            return "ambiguous", j
    for reading, expected in (excluded or {}).items():
        if judge_steps(actual_steps, expected, mask_steps, tol).passed:
            j.metrics["matches_excluded_reading"] = reading
            j.message = (f"takes a reading the operator text rules out ({reading}); against the chosen "
                         f"reading: {j.message}")
            break
    return "mismatch", j


def clean_for_json(obj: Any) -> Any:
    """Floats that JSON cannot hold (NaN/Inf) become strings; numpy scalars become Python ones."""
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:  # most of a record: nothing to convert
        return obj
    if t is float:
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): clean_for_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_for_json(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else str(f)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
