"""Cells: run one case on one backend and judge it; and the run loop behind `onnx-compat run`."""

from __future__ import annotations

import hashlib
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import backends as backend_registry
from . import readings, tolerances
from .backends.base import Backend, Crashed, ModelRef, TimedOut, Unsupported
from .bundle import write_bundle
from .case import Built, Case
from .compare import clean_for_json, judge_steps
from .results import ResultsWriter
from .verdict import Status


def first_line(text: str, limit: int = 4000) -> str:
    text = str(text).strip()
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def _record(case: Case, backend: Backend, status: Status, metrics: dict | None, message: str,
            seconds: float, version: str) -> dict[str, Any]:
    return {
        "case_id": case.id, "family": case.family, "features": clean_for_json(dict(case.features)),
        "marks": list(case.marks), "backend": backend.name, "backend_version": version,
        "status": status.value, "metrics": clean_for_json(metrics or {}),
        "tolerance": tolerances.get(case.tolerance).as_record(), "message": first_line(message),
        "seconds": round(seconds, 4), "repro": None,
    }


def _refused(case: Case, backend: Backend, status: Status, message: str, seconds: float,
             version: str) -> dict[str, Any]:
    """A refusal (at load or while running) that the operator text requires of this backend is the
    conformant verdict: `unsupported`, quoting the sentence. Declared on the case (Case.refusals),
    matched on the backend's execution provider, never on its name."""
    provider = getattr(getattr(backend, "inner", backend), "provider", None)
    for rid in getattr(case, "refusals", ()):
        r = readings.REFUSALS[rid]
        if r.requires_refusal(provider):
            return _record(case, backend, Status.UNSUPPORTED, {"required_refusal": rid},
                           f"refused, as the operator text requires of {provider} ({r.quote}); the backend said: "
                           f"{message}", seconds, version)
    return _record(case, backend, status, None, message, seconds, version)


def execute_steps(session, built: Built) -> list[dict[str, np.ndarray]]:
    outputs: list[dict[str, np.ndarray]] = []
    for i, feeds in enumerate(built.feeds):
        f = dict(feeds)
        if i > 0:
            for out_name, in_name in built.carry.items():
                f[in_name] = outputs[-1][out_name]
        outputs.append(session.run(f))
    return outputs


def run_cell(case: Case, backend: Backend, built: Built | None = None, model: ModelRef | None = None,
             availability: tuple[bool, str] | None = None, version: str | None = None) -> dict[str, Any]:
    version = version if version is not None else backend.version()
    ok, why = availability if availability is not None else backend.available()
    t0 = time.perf_counter()
    if not ok:
        return _record(case, backend, Status.UNAVAILABLE, None, why, 0.0, version)
    try:
        built = built or case.build()
    except Exception:  # noqa: BLE001 - a broken case is the harness's error, shown as such
        return _record(case, backend, Status.ERROR, None, "onnx-compat could not build this case:\n"
                       + traceback.format_exc(limit=4), time.perf_counter() - t0, version)
    model = model or ModelRef(built.model)
    tol = tolerances.get(case.tolerance)
    try:
        session = backend.prepare(model)
    except Crashed as e:
        return _record(case, backend, Status.CRASH, None, str(e), time.perf_counter() - t0, version)
    except TimedOut as e:
        return _record(case, backend, Status.TIMEOUT, None, str(e), time.perf_counter() - t0, version)
    except Exception as e:  # noqa: BLE001 - refused at load: the backend's own words
        return _refused(case, backend, Status.UNSUPPORTED, str(e) or type(e).__name__,
                        time.perf_counter() - t0, version)
    try:
        outputs = execute_steps(session, built)
    except Unsupported as e:
        return _refused(case, backend, Status.UNSUPPORTED, str(e), time.perf_counter() - t0, version)
    except Crashed as e:
        return _record(case, backend, Status.CRASH, None, str(e), time.perf_counter() - t0, version)
    except TimedOut as e:
        return _record(case, backend, Status.TIMEOUT, None, str(e), time.perf_counter() - t0, version)
    except Exception as e:  # noqa: BLE001
        return _refused(case, backend, Status.ERROR, f"{type(e).__name__}: {e}", time.perf_counter() - t0, version)
    finally:
        try:
            session.close()
        except Exception:  # noqa: BLE001
            pass
    seconds = time.perf_counter() - t0
    try:
        j = judge_steps(outputs, built.expected, built.masks, tol)
    except Exception:  # noqa: BLE001
        return _record(case, backend, Status.ERROR, None, "onnx-compat could not compare the outputs:\n"
                       + traceback.format_exc(limit=3), seconds, version)
    status = Status.PASS if j.passed else Status.MISMATCH
    message = j.message
    if not j.passed and built.alternates:
        for reading, expected in built.alternates.items():
            if judge_steps(outputs, expected, built.masks, tol).passed:
                j.metrics["matches_reading"] = reading  # a reading the text allows: not a mismatch
                status = Status.AMBIGUOUS
                message = f"matches another reading the operator text allows ({reading}); against the chosen reading: {message}"
                break
    return _record(case, backend, status, j.metrics, message, seconds, version)


# ---------------------------------------------------------------------------------------------
# the run loop


def shard_of(case_id: str, backend: str, n: int) -> int:
    """Deterministic partition of cells: 1..n."""
    h = hashlib.sha256(f"{case_id}\0{backend}".encode()).digest()
    return int.from_bytes(h[:8], "little") % n + 1


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    if not spec:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}: write it as I/N, e.g. --shard 2/3") from None
    if not (n >= 1 and 1 <= i <= n):
        raise ValueError(f"--shard {spec!r}: need 1 <= I <= N, e.g. --shard 2/3")
    return i, n


_WORKER_BACKENDS: dict[str, Backend] = {}
_WORKER_INFO: dict[str, tuple[tuple[bool, str], str]] = {}


def _init_worker(names: Sequence[str], isolate: bool, timeout: float) -> None:
    import warnings

    # onnx.reference's softmax warns on fully masked rows, which some cases have on purpose
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"onnx\.reference")
    _WORKER_BACKENDS.clear()
    for n in names:
        b = backend_registry.get(n, isolated=True if isolate else None, timeout=timeout)
        _WORKER_BACKENDS[n] = b
        _WORKER_INFO[n] = (b.available(), b.version())


def _run_case(case: Case, names: Sequence[str], repro_root: str | None) -> list[dict[str, Any]]:
    records = []
    try:
        built = case.build()
        model = ModelRef(built.model)
    except Exception:  # noqa: BLE001
        built = model = None
    for n in names:
        b = _WORKER_BACKENDS[n]
        avail, version = _WORKER_INFO[n]
        rec = run_cell(case, b, built, model, avail, version)
        if rec["status"] != Status.PASS.value and repro_root and built is not None and rec["status"] != Status.UNAVAILABLE.value:
            dest = Path(repro_root) / case.id
            if not (dest / "case.json").exists():
                write_bundle(case, built, dest, backend=n if n != "reference" else "ort-cpu")
            rec["repro"] = str(dest)
        records.append(rec)
    return records


_CASES_BY_GRID: dict[str, dict[str, Case]] = {}


def _case_by_id(case_id: str, grid: str) -> Case:
    from .registry import load_cases

    if grid not in _CASES_BY_GRID:
        _CASES_BY_GRID[grid] = {c.id: c for c in load_cases(grid)}
    return _CASES_BY_GRID[grid][case_id]


def _run_case_by_id(case_id: str, grid: str, names: Sequence[str], repro_root: str | None):
    return _run_case(_case_by_id(case_id, grid), names, repro_root)


def execute(cases: Sequence[Case], backend_names: Sequence[str], out_dir: str | os.PathLike, *, resume: bool = False,
            shard: tuple[int, int] | None = None, jobs: int = 1, isolate: bool = False, timeout: float = 120.0,
            grid: str = "quick", progress: bool = True, log=sys.stderr) -> dict[str, Any]:
    """Run every selected cell, append to out_dir/results.jsonl; returns a summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = ResultsWriter(out / "results.jsonl", resume=resume)
    pending: list[tuple[Case, list[str]]] = []
    total = 0
    for c in cases:
        names = [n for n in backend_names if shard is None or shard_of(c.id, n, shard[1]) == shard[0]]
        total += len(names)
        names = [n for n in names if (c.id, n) not in writer.done]
        if names:
            pending.append((c, names))
    n_cells = sum(len(n) for _, n in pending)
    skipped = total - n_cells
    if skipped and log:
        print(f"resuming: {skipped} of {total} cells already in {writer.path}", file=log)
    repro_root = str(out / "repro")
    counts: dict[str, int] = {}
    from tqdm import tqdm

    bar = tqdm(total=n_cells, unit="cell", delay=2.0, disable=not progress, file=log, dynamic_ncols=True)
    try:
        if jobs <= 1:
            _init_worker(backend_names, isolate, timeout)
            for case, names in pending:
                bar.set_postfix_str(case.id[-60:], refresh=False)
                for rec in _run_case(case, names, repro_root):
                    writer.append(rec)
                    counts[rec["status"]] = counts.get(rec["status"], 0) + 1
                    bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker,
                                     initargs=(list(backend_names), isolate, timeout)) as pool:
                futures = [pool.submit(_run_case_by_id, c.id, grid, names, repro_root) for c, names in pending]
                for fut in futures:
                    for rec in fut.result():
                        writer.append(rec)
                        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
                        bar.update(1)
    finally:
        bar.close()
        writer.close()
        for b in _WORKER_BACKENDS.values():
            b.close()
    return {"cells_run": n_cells, "cells_total": total, "resumed": skipped, "counts": counts}
