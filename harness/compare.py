"""One error metric family for every backend: tensor metrics against the oracle, and the verdict.

Metrics per output (over the elements the op specifies): max |Δ|, max relative Δ, NMSE (Σ(a−b)² / Σb², the
llama.cpp metric), cosine, and the smallest tolerance that would have passed (Polygraphy's "minimum required
tolerance"): `need_atol` at the profile's rtol, `need_rtol` at its atol. A NaN/Inf where the oracle is finite
is always a mismatch. The element rule is |a − b| <= atol_eff + rtol·|b|, atol_eff = atol + atol_rms·RMS(b)
over the compared elements (atol_rms: a profile whose error scales with the data, not with each element).

Self-contained on purpose (numpy only; a tolerance is anything with atol, rtol, max_nmse, int_atol and
optionally atol_rms): repro bundles ship this very file, so `repro.sh` judges exactly as the matrix does.
"""

from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:  # no runtime import: this file also runs alone inside a repro bundle
    from .tolerances import Tolerance

TINY = 1e-30
_MAX = np.maximum.reduce  # what ndarray.max() calls, through numpy's Python _methods._amax


def _top1(a2: np.ndarray, b_argmax: np.ndarray, finite: bool = False) -> float:
    """Fraction of rows (all axes but the last) whose argmax agrees with the oracle rows' argmax: what an
    error does to a greedy choice over logits (a NaN never wins: it counts as -inf). `finite`: a2 is."""
    if not finite and not np.isfinite(a2).all():  # nan_to_num costs more than the rest together: only where it changes something
        a2 = np.nan_to_num(a2, nan=-np.inf)
    return int(np.count_nonzero(a2.argmax(axis=1) == b_argmax)) / len(b_argmax)  # = np.mean, fewer calls


def tensor_metrics(actual: np.ndarray, expected: np.ndarray, tol: Tolerance,
                   mask: np.ndarray | None = None) -> dict[str, Any]:
    """Every metric in as few numpy calls as give the same verdicts: a cell is judged right after a
    session, when each call costs 5-30 µs of cold code (`onnx-compat bench`). Inside np.errstate: a
    backend's NaN may be signaling, and then even the cast to float64 raises `invalid`."""
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf are judged below, not warned about
        return _tensor_metrics(actual, expected, tol, mask)


def _tensor_metrics(actual: np.ndarray, expected: np.ndarray, tol: Tolerance,
                    mask: np.ndarray | None) -> dict[str, Any]:
    act = np.asarray(actual)
    o = _oracle(expected, mask)
    shaped = act.shape == o.shape  # else compared flattened: no rows, no bytes to match
    same = o.bytes_as(act.dtype) if shaped else None
    copy = same is not None and act.tobytes() == same
    if copy:  # the oracle's own values (a KV cache, a quantised gather): no cast, no a·a
        a, aa = o.b, o.bb
    else:
        a = np.asarray(act, dtype=np.float64).ravel()  # no copy of what is float64: nothing here writes to it
        if o.sel is not None:
            a = a[o.sel]
        # a·a, b·b (the cosine's norms) are finite where every element is and no square overflows
        aa = float(a.dot(a))
        if not (math.isfinite(aa) and math.isfinite(o.bb)):
            return _nonfinite_metrics(a, o.b, o.rows if shaped else None, o.integer, tol)
    out: dict[str, Any] = {"n": int(o.b.size)}
    rows = o.rows is not None and shaped
    if rows:
        out["top1"] = 1.0  # its place in the record; counted below where any row may differ
    out["nonfinite_mismatch"] = 0
    out = _finite_metrics(a, o.b, aa, o.bb, o.integer, tol, out, 0, o, copy)
    if rows and not (out["max_abs"] < o.top1_margin or out["max_abs"] == 0):
        # below the margin (half an oracle row's smallest top-two gap) every row keeps its argmax, as
        # in an exact copy (ties included: same values, same first index): ~40 µs of cold calls saved
        out["top1"] = _top1(a.reshape(-1, o.rows), o.argmax, finite=True)
    return out


class _Oracle:
    """What judging needs of one oracle tensor (and mask) that no output changes: made once for every
    column judged against it (up to ten in one worker). The tensor is made read-only where kept, so a
    later write fails loudly instead of leaving these numbers stale."""

    __slots__ = ("shape", "sel", "b", "bb", "integer", "rows", "top1_margin", "_argmax", "absb", "floor_b", "_rel",
                 "reused", "_bytes", "nbytes")

    def __init__(self, exp: np.ndarray, mask: np.ndarray | None, reused: bool = False):
        self.shape = exp.shape
        self.sel = None
        b = np.asarray(exp, dtype=np.float64).ravel()
        self.rows = None
        if mask is None:
            if exp.ndim >= 2 and exp.shape[-1] >= 2 and exp.size and exp.dtype.kind == "f":  # no rows: no top-1
                self.rows = exp.shape[-1]
        else:
            m = np.asarray(mask, dtype=bool).ravel()
            if not m.all():
                self.sel, b = m, b[m]
        self.b = b
        self.bb = float(b.dot(b))  # inside the judge's np.errstate, as is all of this
        self.integer = exp.dtype.kind in "iu"
        self._argmax = self.absb = self.floor_b = None
        self.top1_margin = 0.0
        self._rel: dict[float, np.ndarray] = {}
        self.reused = reused  # kept by the cache for later outputs (_oracle)
        self._bytes: dict[np.dtype, bytes | None] = {}
        self.nbytes = b.nbytes * 6  # b, |b|, max(|b|, TINY), rtol·|b|, and up to two dtypes' bytes_as
        if math.isfinite(self.bb):  # what the finite path needs; NaN/Inf go the careful way
            if self.rows is not None:
                self.top1_margin = _top1_margin(b.reshape(-1, self.rows))
            self.absb = np.abs(b)
            self.floor_b = np.maximum(self.absb, TINY)

    @property
    def argmax(self) -> np.ndarray:
        """Each oracle row's argmax: made when a row might have changed its choice."""
        if self._argmax is None:
            self._argmax = np.argmax(self.b.reshape(-1, self.rows), axis=1)
        return self._argmax

    def bytes_as(self, dtype: np.dtype) -> bytes | None:
        """The oracle's values as an output of `dtype` holds them (C order; None where one does not
        survive the cast, or not finite, masked or kept): an output of these bytes is the oracle."""
        hit = self._bytes.get(dtype, False)
        if hit is False:
            hit = None
            if self.reused and self.sel is None and self.absb is not None and dtype.kind in "fiu":
                cast = self.b.astype(dtype)  # out-of-range values wrap or saturate: then unequal
                hit = cast.tobytes() if np.array_equal(cast, self.b) else None
            self._bytes[dtype] = hit
        return hit

    def rel_part(self, rtol: float) -> np.ndarray:
        """rtol·|b|, per profile rtol."""
        r = self._rel.get(rtol)
        return r if r is not None else self._rel.setdefault(rtol, rtol * self.absb)


def _top1_margin(rows: np.ndarray) -> float:
    """A bound under which no row's argmax can change: half the smallest gap between a row's two
    largest values (0 where a row ties). If every |a − b| < gap/2, a row's top stays above every other
    (b_top − δ > b_j + δ); 1 − 1e-12 covers the rounding of |a − b| and of the gap (an ulp each)."""
    two = np.partition(rows, -2, axis=1)[:, -2:]  # [:, 1] is the row's largest, [:, 0] the next
    return float(np.min(two[:, 1] - two[:, 0])) * 0.5 * (1 - 1e-12)


_ORACLES: dict[tuple[int, int], tuple[Any, Any, _Oracle]] = {}
_ORACLE_BYTES = 0  # what _ORACLES holds, kept as entries come and go (no walk over them per miss)
#: what the prepared oracles may hold in all (bytes), and the largest tensor prepared
ORACLE_CACHE_BYTES = 64 << 20
ORACLE_CACHE_MAX_ELEMENTS = 1 << 16


def _oracle(expected: np.ndarray, mask: np.ndarray | None) -> _Oracle:
    """The prepared oracle for this tensor and mask: from the cache where the very same arrays
    (identity, held by weak reference) were prepared before, else made now."""
    exp = np.asarray(expected)
    cacheable = (exp is expected and exp.size <= ORACLE_CACHE_MAX_ELEMENTS
                 and (mask is None or type(mask) is np.ndarray))
    if not cacheable:
        return _Oracle(exp, mask)
    key = (id(exp), id(mask))
    hit = _ORACLES.get(key)
    if hit is not None and hit[0]() is exp and (mask is None or hit[1]() is mask):
        return hit[2]
    exp.flags.writeable = False
    if mask is not None:
        mask.flags.writeable = False
    global _ORACLE_BYTES
    if hit is not None:  # a dead array's id, reused: its entry goes
        _ORACLE_BYTES -= _ORACLES.pop(key)[2].nbytes
    o = _Oracle(exp, mask, reused=True)
    _ORACLES[key] = (weakref.ref(exp), weakref.ref(mask) if mask is not None else None, o)
    _ORACLE_BYTES += o.nbytes
    while _ORACLE_BYTES > ORACLE_CACHE_BYTES and len(_ORACLES) > 1:  # the oldest go first
        _ORACLE_BYTES -= _ORACLES.pop(next(iter(_ORACLES)))[2].nbytes
    return o


def _nonfinite_metrics(a: np.ndarray, b: np.ndarray, rows: int | None, integer: bool, tol: Tolerance
                       ) -> dict[str, Any]:
    """Some element is NaN/±Inf (or squares overflow): NaN must match NaN, ±Inf the same signed Inf;
    the finite pairs are judged as usual."""
    out: dict[str, Any] = {"n": int(b.size)}
    if rows is not None:
        out["top1"] = _top1(a.reshape(-1, rows), np.argmax(b.reshape(-1, rows), axis=1))
    fin_b = np.isfinite(b)
    fin_a = np.isfinite(a)
    bad_nonfinite = 0
    out["nonfinite_mismatch"] = 0
    if not (fin_a.all() and fin_b.all()):
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
    return _finite_metrics(a, b, float(a.dot(a)), float(b.dot(b)), integer, tol, out, bad_nonfinite)


def _finite_metrics(a: np.ndarray, b: np.ndarray, aa: float, bb: float, integer: bool, tol: Tolerance,
                    out: dict[str, Any], bad_nonfinite: int, oracle: _Oracle | None = None,
                    copy: bool = False) -> dict[str, Any]:
    """`copy`: a is b (the output's bytes were the oracle's): no difference to take."""
    if a.size == 0:
        out.update(max_abs=0.0, max_rel=0.0, nmse=0.0, cosine=1.0, need_atol=0.0, need_rtol=0.0, bad=bad_nonfinite)
        return out
    absb = oracle.absb if oracle is not None else np.abs(b)
    floor_b = oracle.floor_b if oracle is not None else np.maximum(absb, TINY)
    diff = None if copy else a - b
    d = None if copy else np.abs(diff)
    max_abs = 0.0 if copy else float(_MAX(d))  # = d.max() without its Python wrapper (cold: a few µs each)
    out["max_abs"] = max_abs
    exact = max_abs == 0  # an exact copy (often: a quantised gather, a KV cache): every error below is 0
    out["max_rel"] = 0.0 if exact else float(_MAX(d / floor_b))
    num = 0.0 if exact else float(diff.dot(diff))
    out["nmse"] = num / bb if bb > 0 else (0.0 if num == 0 else math.inf)  # bb = Σb²
    na, nb = math.sqrt(aa), math.sqrt(bb)  # = np.linalg.norm, without its checks
    ab = bb if copy else a.dot(b)
    out["cosine"] = float(ab / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    if integer:  # quantised values: judged in quantisation steps
        out["integer"] = True
        out["need_atol"] = max_abs
        out["need_rtol"] = 0.0
        out["bad"] = (int(np.count_nonzero(d > tol.int_atol)) if max_abs > tol.int_atol and not exact else 0) + bad_nonfinite
        return out
    atol = effective_atol(tol, b) if getattr(tol, "atol_rms", 0.0) else float(tol.atol)
    if atol != tol.atol:
        out["atol"] = atol
    rel_part = oracle.rel_part(tol.rtol) if oracle is not None else tol.rtol * absb
    need_atol = 0.0 if exact else float(max(0.0, _MAX(d - rel_part)))  # rel_part >= 0
    out["need_atol"] = need_atol
    if max_abs <= atol or exact:  # every d − atol ≤ 0: the smallest rtol needed is 0
        out["need_rtol"] = 0.0
    elif atol:
        out["need_rtol"] = float(max(0.0, _MAX((d - atol) / floor_b)))
    else:  # (d − 0) / floor_b is d / floor_b
        out["need_rtol"] = out["max_rel"]
    # |Δ| < atol, or 0 (then every |Δ| <= atol + rtol·|b| too, atol 0 included): within
    out["bad"] = (0 if max_abs < atol or exact else int(np.count_nonzero(d > atol + rel_part))) + bad_nonfinite
    return out


def effective_atol(tol: Tolerance, expected: np.ndarray) -> float:
    """atol + atol_rms * RMS(expected): the absolute bound, scaled with the data where the profile says
    so (older tolerance records have no atol_rms: 0)."""
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


#: Every summary metric a cell may carry (tensor, then the zoo's logit metrics), and whether higher is
#: better: the one list the matrix, pytest's message and the report read.
METRICS: dict[str, bool] = {"max_abs": False, "max_rel": False, "nmse": False, "cosine": True, "need_atol": False,
                            "need_rtol": False, "top1": True, "top5": True, "kl": False, "kl_max": False}
METRIC_NAMES = tuple(METRICS)


@functools.lru_cache(maxsize=None)
def _dtype_name(dtype: np.dtype) -> str:
    return str(dtype)  # ~6 µs each time: numpy builds the name anew


def judge_step(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
               masks: Mapping[str, np.ndarray], tol: Tolerance) -> Judgement:
    with np.errstate(invalid="ignore", over="ignore"):  # once per step, not per output (~12 µs cold)
        return _judge_step(actual, expected, masks, tol)


def _judge_step(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
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
        m = _tensor_metrics(act, exp, tol, mask)  # inside judge_step's one np.errstate
        if act.dtype != exp.dtype and exp.dtype.kind == act.dtype.kind == "f":
            m["dtype"] = _dtype_name(act.dtype)
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
    """The worst value of each summary metric over outputs or steps (lowest cosine and top-1, highest
    everything else; the first of equals, as min() and max() give it). Plain loops: ~25 µs less, cold."""
    out: dict[str, Any] = {}
    if len(metric_dicts) == 1:  # one output or one step (most cells): its own values
        only = metric_dicts[0]
        for k in METRICS:
            if k in only:
                out[k] = only[k]
        return out
    for k, higher_is_better in METRICS.items():
        found = False
        for m in metric_dicts:
            if k in m:
                v = m[k]
                if not found:
                    w, found = v, True
                elif (v < w) if higher_is_better else (v > w):
                    w = v
        if found:
            out[k] = w
    return out


def aggregate(per_output: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Worst value over outputs at top level (what the matrix shows), each output kept below; the
    worst output has the most elements outside the bound, then the highest NMSE (the first of equals)."""
    agg: dict[str, Any] = worst(list(per_output.values()))
    if per_output:
        worst_output, key = None, None
        for name, m in per_output.items():
            k = (m.get("bad", 0), m.get("nmse", 0.0))
            if worst_output is None or k > key:
                worst_output, key = name, k
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
    """The verdict of a cell that ran, as the matrix and a repro bundle both give it: "pass", "ambiguous"
    (fails the chosen reading of the operator text but matches another it allows: metrics["matches_reading"]),
    or "mismatch". A mismatch that matches a reading the text rules out (`excluded`) stays a mismatch;
    metrics["matches_excluded_reading"] and the message name it, so the finding says what the backend does."""
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
