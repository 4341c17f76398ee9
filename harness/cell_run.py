"""One cell: run one case on one backend and judge it (`run_cell`), as `run`, `check`, pytest,
`bench`, `locate` and `extract` all do. The run loop over many cells is harness/runner.py."""

from __future__ import annotations

import functools
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from . import tolerances
from .backends.base import Backend, Crashed, DeviceLacks, KilledFromOutside, ModelRef, TimedOut, Unsupported
from .case import Built, Case
from .compare import judge_readings, judge_steps
from .json_clean import clean_for_json
from .verdict import Status


@functools.lru_cache(maxsize=1)
def _machine_paths() -> tuple[str, re.Pattern]:
    import tempfile  # on the first message only: importing it costs ~1.5 ms of a 0.15 s `check`

    root = str(Path(__file__).resolve().parents[1]) + os.sep
    tmp = re.escape(tempfile.gettempdir().rstrip(os.sep) + os.sep)
    own = r"\.?onnx-compat-[^/\s'\"]*"
    return root, re.compile(f"{tmp}(?:{own}/)*{own}")


def portable(text: str) -> str:
    """A backend's message without the paths of the machine that ran it: the checkout's root goes
    (zoo/twins/... stays, relative to it) and this harness's temp directories become TMP. A cell's
    words travel into committed reports and upstream drafts (ORT names the model file it loaded)."""
    root, tmp = _machine_paths()
    return tmp.sub("TMP", str(text).replace(root, ""))


def clip(text: str, limit: int = 4000) -> str:
    """The message as kept in a cell: stripped, and cut (saying so) past `limit` characters."""
    text = str(text).strip()
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def _record(case: Case, backend: Backend, status: Status, metrics: dict | None, message: str,
            seconds: float, version: str) -> dict[str, Any]:
    return {
        "case_id": case.id, "family": case.family, "features": dict(case.features_record),
        "marks": list(case.marks), "backend": backend.name, "backend_version": version,
        "status": status._value_, "metrics": clean_for_json(metrics or {}),  # _value_: .value costs ~6 µs cold
        "tolerance": tolerances.get(case.tolerance).as_record(), "message": clip(portable(message)) if message else "",
        "seconds": round(seconds, 4), "repro": None,
    }


def _refused(case: Case, backend: Backend, status: Status, message: str, seconds: float,
             version: str) -> dict[str, Any]:
    """A refusal (at load or while running) that the operator text requires of this backend is the
    conformant verdict: `unsupported`, quoting the sentence. Declared on the case (Case.refusals),
    matched on the backend's execution provider, never on its name."""
    provider = getattr(getattr(backend, "inner", backend), "provider", None)
    refusals = getattr(case, "refusals", ())
    if refusals:
        from . import readings  # ~3 ms of import that a cell without declared refusals (`check`) never needs
    for rid in refusals:
        r = readings.REFUSALS[rid]
        if r.requires_refusal(provider):
            return _record(case, backend, Status.UNSUPPORTED, {"required_refusal": rid},
                           f"refused, as the operator text requires of {provider} ({r.quote}); the backend said: "
                           f"{message}", seconds, version)
    return _record(case, backend, status, None, message, seconds, version)


#: why a backend's cell on a case whose oracle is that backend itself is `skip`
ORACLE_ITSELF = ("this case's expected outputs are the {backend} backend's own on the same bytes: its cell would "
                 "compare {backend} with itself; every other column is judged against it")


def execute_steps(session, built: Built) -> list[dict[str, np.ndarray]]:
    outputs: list[dict[str, np.ndarray]] = []
    for i, feeds in enumerate(built.feeds):
        f = dict(feeds)
        if i > 0:
            for out_name, in_name in built.carry.items():
                f[in_name] = outputs[-1][out_name]
        outputs.append(session.run(f))
    return outputs


#: metrics key of a cell whose process was killed from outside (not the backend's fault): the
#: signal's name. Such a cell is `error`, never `crash`, and `--resume` runs it again.
KILLED = "killed_from_outside"


def killed_record(case: Case, backend: Backend, signal_name: str, message: str, seconds: float,
                  version: str) -> dict[str, Any]:
    return _record(case, backend, Status.ERROR, {KILLED: signal_name},
                   f"worker killed from outside ({signal_name}), retried once: {message}; not the backend's fault "
                   "(a user's kill or the out-of-memory killer); `--resume` runs this cell again", seconds, version)


def run_cell(case: Case, backend: Backend, built: Built | None = None, model: ModelRef | None = None,
             availability: tuple[bool, str] | None = None, version: str | None = None) -> dict[str, Any]:
    """One cell, judged. A worker killed from outside while running it (KilledFromOutside: a
    signal the case did not raise) is not a verdict: the cell runs once more, and if that is
    killed too it is `error` naming the signal (metrics.killed_from_outside), never `crash`."""
    version = version if version is not None else backend.version()
    for attempt in (1, 2):
        try:
            return _run_cell_once(case, backend, built, model, availability, version)
        except KilledFromOutside as e:
            if attempt == 2:
                return killed_record(case, backend, e.signal_name, str(e), 0.0, version)
    raise AssertionError("unreachable")


def _run_cell_once(case: Case, backend: Backend, built: Built | None, model: ModelRef | None,
                   availability: tuple[bool, str] | None, version: str) -> dict[str, Any]:
    ok, why = availability if availability is not None else backend.available()
    t0 = time.perf_counter()
    inner = getattr(backend, "inner", backend)  # the backend itself, or the one a worker hosts
    # a whole-model runtime (ort-genai): op cases are not its to run, isolated in a worker or not
    if inner.zoo_only and case.family != "zoo":
        return _record(case, backend, Status.SKIP, None, inner.zoo_only, 0.0, version)
    if case.oracle_backend and case.oracle_backend == backend.name:
        return _record(case, backend, Status.SKIP, None, ORACLE_ITSELF.format(backend=backend.name), 0.0, version)
    # a column too slow for the main job runs a documented subset there (the WebGPU columns)
    subset = inner.subset_skip
    if ok and subset is not None and (reason := subset(case.id)):
        return _record(case, backend, Status.SKIP, None, reason, 0.0, version)
    if not ok:
        return _record(case, backend, Status.UNAVAILABLE, None, why, 0.0, version)
    try:
        built = built or case.build()
    except Exception as e:  # noqa: BLE001 - a broken case is the harness's error, shown as such
        why = str(e) if getattr(e, "user_facing", False) else traceback.format_exc(limit=4)  # a bad input file: its one line
        return _record(case, backend, Status.ERROR, None, "onnx-compat could not build this case:\n" + why,
                       time.perf_counter() - t0, version)
    model = model or ModelRef(built.model)
    tol = tolerances.get(case.tolerance)
    try:
        if built.driver and hasattr(backend, "drive"):  # the backend runs its own decode loop
            session = backend.drive(built.driver)
        else:
            session = built.driver.prepare(backend.prepare) if built.driver else backend.prepare(model)
    except KilledFromOutside:
        raise
    except DeviceLacks as e:  # the device cannot run this model (a missing WebGPU feature): not a finding
        return _record(case, backend, Status.UNAVAILABLE, None, str(e), time.perf_counter() - t0, version)
    except Crashed as e:
        return _record(case, backend, Status.CRASH, None, str(e), time.perf_counter() - t0, version)
    except TimedOut as e:
        return _record(case, backend, Status.TIMEOUT, None, str(e), time.perf_counter() - t0, version)
    except Exception as e:  # noqa: BLE001 - refused at load: the backend's own words
        return _refused(case, backend, Status.UNSUPPORTED, str(e) or type(e).__name__,
                        time.perf_counter() - t0, version)
    try:
        outputs = session.run_steps() if built.driver else execute_steps(session, built)
        latency = _latency_ms(session, built)
    except Unsupported as e:
        return _refused(case, backend, Status.UNSUPPORTED, str(e), time.perf_counter() - t0, version)
    except KilledFromOutside:
        raise
    except DeviceLacks as e:
        return _record(case, backend, Status.UNAVAILABLE, None, str(e), time.perf_counter() - t0, version)
    except Crashed as e:
        return _record(case, backend, Status.CRASH, None, str(e), time.perf_counter() - t0, version)
    except TimedOut as e:
        return _record(case, backend, Status.TIMEOUT, None, str(e), time.perf_counter() - t0, version)
    except Exception as e:  # noqa: BLE001
        return _refused(case, backend, Status.ERROR, _labelled(session, f"{type(e).__name__}: {e}"),
                        time.perf_counter() - t0, version)
    finally:
        try:
            session.close()
        except Exception:  # noqa: BLE001
            pass
    seconds = time.perf_counter() - t0
    note = getattr(session, "note", "")  # how it ran, where that is not the obvious (CUDA nodes on the CPU)
    try:
        j = (built.driver.judge(outputs, tol) if built.driver
             else judge_steps(outputs, built.expected, built.masks, tol))
    except Exception:  # noqa: BLE001
        return _record(case, backend, Status.ERROR, None, "onnx-compat could not compare the outputs:\n"
                       + traceback.format_exc(limit=3), seconds, version)
    status = Status(j.status) if j.status else Status.PASS if j.passed else Status.MISMATCH
    if not j.passed and not j.status and (built.alternates or built.excluded):  # one rule with repro bundles
        verdict, j = judge_readings(outputs, built.expected, built.masks, tol, built.alternates, built.excluded)
        status = Status(verdict)
    if built.alternates:  # which readings this cell could match (the report's ambiguity section)
        j.metrics["readings"] = list(built.alternates)
    if built.excluded:  # and which readings the text rules out it carries (a match stays a mismatch)
        j.metrics["excluded_readings"] = list(built.excluded)
    message = j.message
    if note:
        message = f"{note}; {message}" if message else note
    if status in (Status.MISMATCH, Status.AMBIGUOUS):
        message = _labelled(session, message)
    if latency is not None:
        j.metrics["latency_ms"] = latency
    return _record(case, backend, status, j.metrics, message, seconds, version)


def _labelled(session, message: str) -> str:
    """A finding on a device that may itself be at fault (a software WebGPU adapter) starts with
    the session's `finding_label` ("software adapter: confirm on a GPU"), so the report and the
    upstream drafts show it."""
    label = getattr(session, "finding_label", "")
    return f"{label}; {message}" if label and message else label or message


@functools.lru_cache(maxsize=1)
def perf_repeats() -> int:
    """`run --perf N` (ONNX_COMPAT_PERF, inherited by worker processes): time N more runs of
    every cell on its already prepared session. Read once per process (each cell asked, ~10 µs
    of a ~1.3 ms cell): whoever sets the variable afterwards calls perf_repeats.cache_clear()."""
    try:
        return max(0, int(os.environ.get("ONNX_COMPAT_PERF", "0")))
    except ValueError:
        return 0


def _latency_ms(session, built: Built) -> float | None:
    """Median wall time of one whole cell (every step, cache fed back) on a warm session, in ms:
    what a runtime costs on this op or model, without load time or the harness's judging."""
    n = perf_repeats()
    if not n:
        return None
    times = []
    for _ in range(n):
        t = time.perf_counter()
        session.run_steps() if built.driver else execute_steps(session, built)
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1000.0, 4)
