"""`onnx-compat bench`: time per cell of each backend, measured side by side in one run and
reported as ratios to a baseline backend. Measurements, never assertions."""

from __future__ import annotations

import json
import statistics
import time

from . import backends
from .backends.base import ModelRef
from .runner import execute_steps


def bench(cases, names: list[str], baseline: str = "ort-cpu", repeat: int = 3, as_json: bool = False) -> int:
    if baseline not in names:
        names = [baseline, *names]
    bes = {n: backends.get(n) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    counted: dict[str, int] = {n: 0 for n in names}
    common = 0
    try:
        for case in cases:
            built = case.build()
            model = ModelRef(built.model)
            per: dict[str, float] = {}
            for n, b in bes.items():
                if not b.available()[0]:
                    continue
                try:
                    t0 = time.perf_counter()
                    s = b.prepare(model)
                    execute_steps(s, built)  # warm-up, included: a cell is prepare + run
                    first = time.perf_counter() - t0
                    runs = []
                    for _ in range(repeat):
                        t1 = time.perf_counter()
                        execute_steps(s, built)
                        runs.append(time.perf_counter() - t1)
                    per[n] = first + statistics.median(runs)
                except Exception:  # noqa: BLE001 - a failing cell has no timing
                    continue
            if baseline in per and len(per) == len(bes):
                common += 1
                for n, t in per.items():
                    times[n].append(t)
                    counted[n] += 1
    finally:
        for b in bes.values():
            b.close()
    base = sum(times[baseline]) or float("nan")
    rows = [{"backend": n, "cells": counted[n], "total_s": round(sum(times[n]), 4),
             "ratio_to_" + baseline: round(sum(times[n]) / base, 3) if times[n] else None} for n in names]
    if as_json:
        print(json.dumps({"cases_timed_on_every_backend": common, "rows": rows}, indent=1))
    else:
        print(f"{common} cases ran on every backend (prepare + first run + median of {repeat} runs per cell)")
        for r in rows:
            print(f"{r['backend']:<14} {r['total_s']:>9.3f} s   x{r['ratio_to_' + baseline]}")
    return 0
