"""The run loop behind `onnx-compat run`: cells over a supervised process pool (or this process),
resume, shards, limits. One cell itself is harness/cell_run.py."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from . import backends as backend_registry
from . import inflight
from .backends.base import Backend, ModelRef
from .bundle import write_bundle
from .case import Built, Case
from .cell_run import (  # noqa: F401 - one cell lives in cell_run.py; these names stay importable from here
    KILLED, _labelled, _latency_ms, _record, _refused, _run_cell_once, clip, execute_steps, killed_record,
    perf_repeats, run_cell,
)
from .pool import RunError, run_pool  # noqa: F401 - RunError: the CLI's "run could not proceed", raised here too
from .verdict import Status


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
_INFLIGHT: inflight.InFlight | None = None
_TIMEOUT: float | None = None  # --timeout: the supervisor (pool) or the watchdog (--in-process) enforces it per cell


def _init_worker(names: Sequence[str], isolate: bool, timeout: float, out_dir: str | None = None,
                 parent: int | None = None, pool: bool = False, tmp: str | None = None) -> None:
    """Set up the process that runs cells: the run's own process (--in-process) or a pool
    worker (`pool`: it dies with its parent, and closes its backends when the pool ends it)."""
    import warnings

    global _INFLIGHT, _TIMEOUT
    _TIMEOUT = timeout
    if pool:
        from multiprocessing.util import Finalize

        from .backends.worker import die_with_parent

        die_with_parent(parent)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the run's handler, inherited by fork
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle
        Finalize(None, _close_worker, exitpriority=10)
        tempfile.tempdir = tmp  # the run's temp root, removed when the run ends
    # onnx.reference's softmax warns on fully masked rows, which some cases have on purpose
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"onnx\.reference")
    _WORKER_BACKENDS.clear()
    for n in names:
        b = backend_registry.get(n, isolated=True if isolate else None, timeout=timeout)
        _WORKER_BACKENDS[n] = b
        _WORKER_INFO[n] = (b.available(), b.version())
    _INFLIGHT = inflight.InFlight(out_dir, watchdog=not pool) if out_dir else None


def _close_worker() -> None:
    global _INFLIGHT
    for b in _WORKER_BACKENDS.values():
        try:
            b.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
    _WORKER_BACKENDS.clear()
    if _INFLIGHT is not None:
        _INFLIGHT.close()
        _INFLIGHT = None


#: a case whose arrays exceed this gets no bundle in a run (`onnx-compat export` writes it on
#: request): Phi-3's shape-true GroupQueryAttention carries a 4096-position fp32 KV buffer of
#: random values (~180 MB a bundle, incompressible), two such were 274 MB of the main job's 641
REPRO_MAX_MB_DEFAULT = 64


def repro_max_mb() -> float:
    """The cap, in MiB: ONNX_COMPAT_REPRO_MAX_MB, default 64."""
    return float(os.environ.get("ONNX_COMPAT_REPRO_MAX_MB", REPRO_MAX_MB_DEFAULT))


def _array_bytes(built: Built) -> int:
    steps = [*built.feeds, *built.expected, *built.masks, *(s for a in built.alternates.values() for s in a)]
    return sum(int(getattr(v, "nbytes", 0)) for step in steps for v in step.values())


def _bundle(case: Case, built: Built, repro_root: str, backend: str) -> str | None:
    dest = Path(repro_root) / case.id
    if not (dest / "case.json").exists():
        if _array_bytes(built) > repro_max_mb() * 2**20:
            return None
        write_bundle(case, built, dest, backend=backend if backend != "reference" else "ort-cpu")
    return str(dest)


#: statuses that are no verdict on the backend: nothing to reproduce (a skip is the harness's own
#: subset rule, an unavailable backend never ran)
_NO_BUNDLE = frozenset({Status.PASS.value, Status.SKIP.value, Status.UNAVAILABLE.value})


def _run_case(case: Case, names: Sequence[str], repro_root: str | None) -> list[dict[str, Any]]:
    records = []
    if _INFLIGHT is not None:
        _INFLIGHT.begin(case.id, None)
    try:
        built = case.build()
        model = ModelRef(built.model)
    except Exception:  # noqa: BLE001
        built = model = None
    for n in names:
        b = _WORKER_BACKENDS[n]
        avail, version = _WORKER_INFO[n]
        if _INFLIGHT is not None:
            _INFLIGHT.begin(case.id, n, _cell_limit(built, b))
        rec = run_cell(case, b, built, model, avail, version)
        if rec["status"] not in _NO_BUNDLE and repro_root and built is not None:
            rec["repro"] = _bundle(case, built, repro_root, n)
        records.append(rec)
    return records


def backend_calls(built: Built) -> int:
    """How many calls a cell makes of its backend, each allowed --timeout: one load and one run
    per step; a zoo decode loop loads each of its graphs and runs each step (and each step's
    embedding, where the model has an embedding graph); `--perf N` runs every step N more times."""
    driver = getattr(built, "driver", None)
    if driver is None:
        loads, runs = 1, len(built.feeds)
    else:
        contract = getattr(driver, "contract", None)
        steps = len(getattr(driver, "steps", None) or ()) or 1
        loads = len(contract.graphs.all()) if contract is not None else 1
        runs = steps * (2 if contract is not None and contract.graphs.embed else 1)
    return loads + runs * (1 + perf_repeats())


def _cell_limit(built: Built | None, backend: Backend | None = None) -> float | None:
    """What a cell may take before the supervisor kills its worker (or, with --in-process, the
    watchdog ends the run): --timeout for every call of the backend, as the isolated backends'
    workers count them (a backend that scales its own limit, a software WebGPU adapter compiling
    shaders, reports it as `cell_timeout`), plus, for a backend with a worker of its own, that
    worker's start-up (which its own limits do not count). None: a case that did not build."""
    if _TIMEOUT is None or built is None:
        return None
    from .backends.worker import STARTUP_S

    own_worker = getattr(backend, "isolated", False) or hasattr(backend, "cell_timeout")
    per_call = max(_TIMEOUT, float(getattr(backend, "cell_timeout", 0.0) or 0.0))
    return per_call * backend_calls(built) + (STARTUP_S if own_worker else 0.0)


class _Named:
    """A backend known by name only (its record is written by the supervisor, not its worker)."""

    def __init__(self, name: str):
        self.name = name


def _crash_record(case: Case, name: str, version: str, message: str, repro_root: str | None,
                  status: Status = Status.CRASH) -> dict[str, Any]:
    from types import SimpleNamespace

    rec = _record(case, SimpleNamespace(name=name), status, None, message, 0.0, version)  # type: ignore[arg-type]
    try:
        if repro_root:
            rec["repro"] = _bundle(case, case.build(), repro_root, name)
    except Exception:  # noqa: BLE001 - the crash is recorded even if its bundle cannot be
        pass
    return rec


_CASES_BY_GRID: dict[str, dict[str, Case]] = {}
_RUN_CASES: dict[str, Case] = {}  # this run's cases, set before the pool forks: workers need no reload


def _case_by_id(case_id: str, grid: str) -> Case:
    from .registry import load_cases

    if case_id in _RUN_CASES:
        return _RUN_CASES[case_id]
    if grid not in _CASES_BY_GRID:
        _CASES_BY_GRID[grid] = {c.id: c for c in load_cases(grid)}
    return _CASES_BY_GRID[grid][case_id]


def _run_case_by_id(case_id: str, grid: str, names: Sequence[str], repro_root: str | None):
    records = _run_case(_case_by_id(case_id, grid), names, repro_root)
    if _INFLIGHT is not None:
        _INFLIGHT.end()
    return records


def execute(cases: Sequence[Case], backend_names: Sequence[str], out_dir: str | os.PathLike, *, resume: bool = False,
            shard: tuple[int, int] | None = None, jobs: int = 1, isolate: bool = False, timeout: float = 120.0,
            grid: str = "quick", progress: bool = True, log=None, in_process: bool = False,
            repro: bool = True) -> dict[str, Any]:
    """Run every selected cell, append to out_dir/results.jsonl; returns a summary.

    Cells run in `jobs` worker processes (one by default) that this process supervises: a
    native crash inside a runtime costs its cell (`crash`), never the run. `in_process` runs
    them here instead (a debugger, a profiler): a crash then ends the run, and `--resume`
    records that cell as `crash` and goes on (harness/inflight.py). One run per out_dir (a lock).
    `repro` False writes no bundles (records keep `repro: null`)."""
    log = log if log is not None else sys.stderr  # looked up per call: pytest swaps sys.stderr
    from .results import lock_out_dir  # the run loop's files; a single cell (`check`) needs none of this

    out = Path(out_dir)
    with lock_out_dir(out):
        return _execute(cases, backend_names, out, resume=resume, shard=shard, jobs=jobs, isolate=isolate,
                        timeout=timeout, grid=grid, progress=progress, log=log, in_process=in_process, repro=repro)


def _execute(cases, backend_names, out: Path, *, resume, shard, jobs, isolate, timeout, grid, progress, log,
             in_process, repro=True):
    from .results import ResultsWriter

    writer = ResultsWriter(out / "results.jsonl", resume=resume)
    repro_root = str(out / "repro") if repro else None  # --no-repro: `onnx-compat export` writes one on request
    by_id = {c.id: c for c in cases}
    versions: dict[str, str] = {}

    def version_of(name: str) -> str:
        if name not in versions:
            versions[name] = backend_registry.get(name, isolated=False).version()
        return versions[name]

    counts: dict[str, int] = {}
    bar = None

    def emit(rec: dict[str, Any]) -> None:
        writer.append(rec)
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
        if bar is not None:
            bar.update(1)

    selected: dict[str, list[str]] = {}
    for c in cases:
        selected[c.id] = [n for n in backend_names if shard is None or shard_of(c.id, n, shard[1]) == shard[0]]

    def record_deaths(died: list[inflight.Died]) -> int:
        """Crash records for the cells whose process died of a fatal signal; returns how many."""
        n = 0
        for d in died:
            if not d.fatal or d.case_id not in by_id:
                continue
            for name in selected[d.case_id] if d.backend is None else [d.backend]:
                if name in selected[d.case_id] and (d.case_id, name) not in writer.done:
                    if d.hung:  # the --in-process watchdog ended the run on this cell
                        emit(_crash_record(by_id[d.case_id], name, version_of(name),
                                           f"no answer within {d.limit or 0:g} s (--timeout for loading and for each "
                                           "step); with --in-process the run ended there, and --resume recorded it",
                                           repro_root, status=Status.TIMEOUT))
                    else:
                        emit(_crash_record(by_id[d.case_id], name, version_of(name), inflight.describe(d), repro_root))
                    n += 1
        return n

    def emit_killed(d: inflight.Died, signal_name: str) -> None:
        """A cell whose pool worker was killed from outside twice: `error`, retried by --resume."""
        for name in selected.get(d.case_id, []) if d.backend is None else [d.backend]:
            if d.case_id in by_id and name in selected[d.case_id] and (d.case_id, name) not in writer.done:
                emit(killed_record(by_id[d.case_id], _Named(name), signal_name,
                                   "its process died twice while running this cell, with no fatal signal of its own",
                                   0.0, version_of(name)))

    def emit_timeout(d: inflight.Died, message: str) -> None:
        if d.case_id in by_id and d.backend and (d.case_id, d.backend) not in writer.done:
            emit(_crash_record(by_id[d.case_id], d.backend, version_of(d.backend), message, repro_root,
                               status=Status.TIMEOUT))

    stale = inflight.collect(out)
    if resume:
        hung = sum(d.hung for d in stale)
        n = record_deaths(stale)
        if n and log:
            print(f"resuming: {n} cell(s) ended the previous run; recorded as "
                  + ("timeout" if hung == n else "crash" if not hung else "crash or timeout"), file=log)
        if writer.retried and log:
            print(f"resuming: {writer.retried} cell(s) whose worker was killed from outside run again", file=log)
    from . import runinfo  # run.json: the machine and versions behind each backend's cells

    runinfo.write(out, runinfo.describe({n: (version_of(n), getattr(backend_registry.get(n, isolated=False),
                                                                    "provider", None)) for n in backend_names},
                                        devices=_devices(backend_names)),
                  keep_existing=resume)
    pending: list[tuple[Case, list[str]]] = []
    total = 0
    for c in cases:
        total += len(selected[c.id])
        names = [n for n in selected[c.id] if (c.id, n) not in writer.done]
        if names:
            pending.append((c, names))
    n_cells = sum(len(n) for _, n in pending)
    skipped = total - n_cells
    if skipped and log:
        print(f"resuming: {skipped} of {total} cells already in {writer.path}", file=log)
    from tqdm import tqdm

    bar = tqdm(total=n_cells, unit="cell", delay=2.0, disable=not progress, file=log, dynamic_ncols=True)
    run_tmp = tempfile.mkdtemp(prefix="onnx-compat-run-")  # every cell's temp files, removed at the end
    old_tempdir = tempfile.tempdir
    try:
        if in_process:
            tempfile.tempdir = run_tmp
            _init_worker(backend_names, isolate, timeout, str(out))
            for case, names in pending:
                bar.set_postfix_str(case.id[-60:], refresh=False)
                for rec in _run_case(case, names, repro_root):
                    emit(rec)
                if _INFLIGHT is not None:
                    _INFLIGHT.end()
        else:
            _RUN_CASES.update(by_id)
            run_pool(pending, functools.partial(_run_case_by_id, grid=grid, repro_root=repro_root), _init_worker,
                     lambda parent: (list(backend_names), isolate, timeout, str(out), parent, True, run_tmp),
                     max(1, jobs), timeout, out, writer, emit, record_deaths, emit_timeout, emit_killed)
    finally:
        _RUN_CASES.clear()
        bar.close()
        writer.close()
        _close_worker()
        tempfile.tempdir = old_tempdir
        shutil.rmtree(run_tmp, ignore_errors=True)
    return {"cells_run": n_cells, "cells_total": total, "resumed": skipped, "counts": counts}


def _devices(names: Sequence[str]) -> dict[str, str]:
    """The device each backend names itself (a `device()` method: OpenVINO's CPU plugin), for run.json."""
    out = {}
    for n in names:
        ask = getattr(backend_registry.get(n, isolated=False), "device", None)
        dev = ask() if callable(ask) else None
        if dev:
            out[n] = dev
    return out
