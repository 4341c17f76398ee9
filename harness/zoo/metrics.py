"""Logit metrics per decode step, and the verdict of a zoo cell.

What a user of a model asks is "same next token, same distribution?", so besides the tensor
metrics every cell has (max |Δ|, NMSE, cosine, judged by the case's tolerance profile) each
step records top-1 agreement, top-5 overlap and KL(oracle ‖ backend) of the softmax over the
vocabulary. Those are reported, not judged: a near-tie may legally flip top-1 inside a tight
bound, and the bound itself is the tolerance profile's (harness/tolerances.py, "*-logits").

This module is also shipped in every zoo repro bundle (as onnx_compat_logits.py, beside
compare.py as onnx_compat_compare.py), so a bundle's repro judges with this very code: keep its
imports to numpy and `..compare`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..compare import Judgement, tensor_metrics, worst
from ..tolerances import Tolerance


def _rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(-1, x.shape[-1])


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def logit_metrics(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """top1 (fraction of positions whose argmax agrees), top5 (mean |top5 ∩ top5| / 5), kl
    (mean over positions of KL(oracle ‖ backend), nats), kl_max, cosine and max_abs."""
    a, b = _rows(actual), _rows(expected)
    if a.shape != b.shape:
        raise ValueError(f"logits of shape {list(np.shape(actual))}, oracle {list(np.shape(expected))}")
    if not np.all(np.isfinite(a)):
        return {"top1": float(np.mean(np.argmax(np.nan_to_num(a, nan=-np.inf), 1) == np.argmax(b, 1))),
                "top5": float("nan"), "kl": float("inf"), "kl_max": float("inf"), "cosine": float("nan"),
                "max_abs": float("inf")}
    k = min(5, b.shape[1])
    ta = np.argsort(-a, axis=1, kind="stable")[:, :k]
    tb = np.argsort(-b, axis=1, kind="stable")[:, :k]
    overlap = [len(set(x) & set(y)) / k for x, y in zip(ta, tb)]
    lp, lq = log_softmax(b), log_softmax(a)
    kl = np.sum(np.exp(lp) * (lp - lq), axis=1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(np.sum(a * b) / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
    return {"top1": float(np.mean(np.argmax(a, 1) == np.argmax(b, 1))), "top5": float(np.mean(overlap)),
            "kl": float(np.mean(kl)), "kl_max": float(np.max(kl)), "cosine": cos,
            "max_abs": float(np.max(np.abs(a - b)))}


def align(actual: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The oracle holds every prompt position; an export that returns only the last position
    (num_logits_to_keep, a last-token prefill graph) is compared there, and the step says so."""
    a, b = np.asarray(actual), np.asarray(expected)
    if a.shape == b.shape:
        return a, b, "all"
    if a.ndim == b.ndim == 3 and a.shape[1] == 1 and a.shape[0] == b.shape[0] and a.shape[2] == b.shape[2]:
        return a, b[:, -1:], "last"
    raise ValueError(f"logits of shape {list(a.shape)}, oracle {list(b.shape)}")


def judge_logits(actual_steps: Sequence[np.ndarray], expected_steps: Sequence[np.ndarray], tol: Tolerance,
                 oracle: str) -> Judgement:
    """Each step judged by the tolerance rule (as every cell is), its logit metrics kept under
    metrics["steps"]; the top level holds the worst value of each metric over steps."""
    steps: list[dict[str, Any]] = []
    problems: list[str] = []
    if len(actual_steps) != len(expected_steps):
        problems.append(f"{len(actual_steps)} steps ran, {len(expected_steps)} expected")
    for i, (act, exp) in enumerate(zip(actual_steps, expected_steps)):
        try:
            a, b, positions = align(act, exp)
        except ValueError as e:
            problems.append(f"step {i}: {e}")
            steps.append({"error": str(e)})
            continue
        m = tensor_metrics(a.astype(np.float32) if a.dtype != np.float32 else a, b, tol)
        m.update(logit_metrics(a, b))
        m["positions"] = positions
        if m.get("backend_nonfinite"):
            problems.append(f"step {i}: {m['backend_nonfinite']} NaN/Inf logit(s)")
        elif m["bad"]:
            problems.append(f"step {i}: {m['bad']}/{m['n']} logits outside atol {tol.atol:g} + rtol {tol.rtol:g} "
                            f"(max |Δ| {m['max_abs']:.3g}, top-1 {m['top1']:.2f}, KL {m['kl']:.3g})")
        if m["nmse"] > tol.max_nmse:
            problems.append(f"step {i}: NMSE {m['nmse']:.3g} > {tol.max_nmse:g}")
        steps.append(m)
    metrics = worst([s for s in steps if "error" not in s])
    metrics["steps"] = steps
    metrics["oracle"] = oracle
    bad = [i for i, s in enumerate(steps) if any(p.startswith(f"step {i}:") for p in problems)]
    if bad:
        metrics["first_bad_step"] = bad[0]
    msg = "; ".join(problems)
    return Judgement(passed=not problems, metrics=metrics, problems=problems,
                     message=(f"judged against {oracle}: {msg}" if msg else f"judged against {oracle}"))


def zoo_verdict(actual_steps: Sequence[np.ndarray], expected_steps: Sequence[np.ndarray], tol: Tolerance,
                oracle: str, as_exported: tuple[Sequence[np.ndarray], str] | None = None) -> Judgement:
    """A zoo cell's judgement: against eager; where that fails and the twin has eager changed the
    way its exporter changed the model (`as_exported`: logits per step, what changed), a backend
    that agrees with that is `exporter`: it runs the export faithfully, the export is at fault."""
    j = judge_logits(actual_steps, expected_steps, tol, oracle)
    if not j.passed and as_exported is not None:
        steps, what = as_exported
        if judge_logits(actual_steps, steps, tol, "eager as exported").passed:
            j.status = "exporter"
            j.metrics["matches_export"] = what
            j.message = (f"runs the export faithfully, and the export differs from eager: {what}; "
                         f"against eager: {j.message}")
    return j
