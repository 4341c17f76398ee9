"""Cases over a supervised process pool, for `onnx-compat run` (harness/runner.py): a worker
that dies takes the pool with it, and this module decides what each cell in flight was (a
`crash` with the fatal dump's signal, a `timeout` it killed, a kill from outside charged twice
before it is an `error`), then runs every case not finished in a fresh pool."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import inflight
from .backends.base import external_signal

if TYPE_CHECKING:
    from .case import Case


class RunError(RuntimeError):
    """The run itself could not go on (not a finding): the CLI's "run could not proceed"."""


def _result(fut, out: Path, hung: dict[tuple[str, str], float], track=lambda: None):
    """The future's records; meanwhile, a worker past its cell's limit is killed (the pool then
    breaks, and the caller records that cell as `timeout`). `track` notes the pool's processes
    (started on demand), so that a dead one's exit status can be read after the pool breaks."""
    from concurrent.futures import TimeoutError as FutureTimeout

    while True:
        track()
        try:
            return fut.result(timeout=0.5)
        except FutureTimeout:
            for pid, case_id, backend, limit in inflight.overdue(out):
                hung[(case_id, backend)] = limit
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def run_pool(pending: list[tuple[Case, list[str]]], task: Callable[..., list[dict]], initializer: Callable,
             initargs: Callable[[int | None], tuple], jobs: int, timeout: float, out: Path, writer, emit,
             record_deaths, emit_timeout, emit_killed) -> None:
    """Cases over a process pool. A worker that dies takes the pool with it (BrokenProcessPool):
    the cell it died on becomes `crash` (its fatal dump names the signal), and every case not
    finished runs again in a fresh pool. A death with no fatal dump (killed from outside: a
    user, the out-of-memory killer) charges the cells in flight; a cell charged twice is
    `error` naming the signal (metrics.killed_from_outside), never `crash`: not the backend's
    fault, and `--resume` runs it again."""
    from concurrent.futures import ProcessPoolExecutor  # ~60 ms of imports a single cell (`check`) does not need
    from concurrent.futures.process import BrokenProcessPool

    todo = list(pending)
    charged: dict[tuple[str, str | None], int] = {}
    hung: dict[tuple[str, str], float] = {}
    while todo:
        ctx = _pool_context()
        parent = os.getpid() if ctx.get_start_method() == "fork" else None  # else the forkserver is the parent
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=initializer,
                                   initargs=initargs(parent))
        broken: list[tuple[Case, list[str]]] = []
        procs: list = []
        try:
            futures = []
            for c, names in todo:
                try:
                    futures.append((pool.submit(task, c.id, names=names), c, names))
                except BrokenProcessPool:  # a worker died while cases were still being handed out
                    broken.append((c, names))
            procs = _processes(pool)  # a broken pool forgets them: kept here, with those started later

            def track() -> None:
                procs.extend(p for p in _processes(pool) if all(p is not q for q in procs))

            for fut, c, names in futures:
                try:
                    recs = _result(fut, out, hung, track)
                except BrokenProcessPool:
                    broken.append((c, names))
                    continue
                for rec in recs:
                    emit(rec)
        except BaseException:
            _stop_pool(pool, procs)
            raise
        if not broken:
            pool.shutdown(wait=True)  # workers close their backends and markers on the way out
            inflight.collect(out)  # every cell has its record: what a killed worker left means nothing now
            try:
                (out / inflight.DIRNAME).rmdir()
            except OSError:
                pass
            return
        exits = _exit_codes(pool, procs)  # how each died, before we stop the rest
        _stop_pool(pool, procs)  # every worker dead before their markers are read
        died = inflight.collect(out)
        timed_out = [d for d in died if (d.case_id, d.backend) in hung]
        for d in timed_out:
            limit = hung.pop((d.case_id, d.backend))
            emit_timeout(d, f"no answer within {limit:g} s (--timeout {timeout:g} s for loading and for each "
                            "step); its worker process was killed, the run went on")
        died = [d for d in died if d not in timed_out]
        if record_deaths(died) == 0 and not timed_out:
            repeat = []
            term = -int(signal.SIGTERM)  # what the broken pool sends the workers still alive
            first = [d for d in died if exits.get(d.pid) not in (None, term)]
            for d in first or died:  # a worker that died of something else first: the SIGTERM'd ones are bystanders
                key = (d.case_id, d.backend)
                charged[key] = charged.get(key, 0) + 1
                if charged[key] >= 2:
                    repeat.append(d)
            if not died:
                raise RunError("a worker process died outside any cell (while starting?); "
                               "run again with --in-process to see its error")
            for d in repeat:
                code = exits.get(d.pid)
                emit_killed(d, external_signal(code) or (f"exit code {code}" if code is not None else "a signal"))
        todo = [(c, left) for c, names in broken
                if (left := [n for n in names if (c.id, n) not in writer.done])]


def _exit_codes(pool, procs: list, wait_s: float = 2.0) -> dict[int, int]:
    """How each worker of a broken pool ended (pid -> exit code), waiting up to `wait_s` for the
    pool to end the others itself (SIGTERM). The pool's manager thread reaps every worker as it
    breaks; a join of ours racing with it can find the child already reaped and its code not yet
    stored, and read None (a killed cell then said "a signal" instead of SIGKILL, under load in
    CI). So the manager thread is let finish first, and a dead worker's code is read again until
    it is there."""
    deadline = time.monotonic() + wait_s
    manager = getattr(pool, "_executor_manager_thread", None)  # no public handle on it
    if manager is not None:
        manager.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    while True:
        exits = {p.pid: p.exitcode for p in procs if p.exitcode is not None}
        if len(exits) == len(procs) or time.monotonic() >= deadline:
            return exits
        time.sleep(0.01)


def _pool_context(maps: str | None = None):
    """fork is cheapest (workers inherit the loaded cases), but CUDA does not survive a fork
    once this process has initialised it (ort-cuda's availability check does): then the
    workers come from a forkserver, which never touched the GPU."""
    import multiprocessing as mp

    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return mp.get_context()  # not Linux: the platform's default
    if "libcuda" in maps or "fork" not in mp.get_all_start_methods():
        return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    return mp.get_context("fork")


def _processes(pool) -> list:
    return list((getattr(pool, "_processes", None) or {}).values())  # no public handle on them


def _stop_pool(pool, procs: list) -> None:
    """Shut the pool down without waiting for cells in flight (Ctrl-C, SIGTERM, a broken pool):
    its processes are killed, and their own workers die with them (PR_SET_PDEATHSIG)."""
    procs = list({id(p): p for p in [*procs, *_processes(pool)]}.values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join(10)
