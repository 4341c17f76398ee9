"""The report at the nightly's scale, measured: `python -m harness.report.bench [--cells N]
[--results FILE] [--python PY]` synthesises N cells (harness/report/synth.py) unless given a
results file, runs `onnx-compat report` on it in a child process (its CPU seconds, wall
seconds, peak RSS), and opens the page in headless Chromium (first contentful paint and the
moment the matrix is drawn, as the page records them; the wall time of a screenshot next to
that of a blank page). `--python` runs another checkout's report (a before/after comparison).
A benchmark, not a test: the numbers depend on the machine and its load, printed as they are."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_report(python: str, results: Path, out: Path, cwd: Path | None = None) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    p = subprocess.run([python, "-m", "harness.cli", "report", str(results), "--out", str(out)],
                       capture_output=True, text=True, cwd=cwd)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"report failed: {p.stderr.strip()[-500:]}")
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss_mb": after.ru_maxrss / 1024, "html_mb": (out / "report.html").stat().st_size / 1e6}


def chromium(page: Path, work: Path) -> dict[str, float]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        return {}
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--window-size=1400,900"]

    def shot(url: str, name: str) -> float:
        t = time.monotonic()
        subprocess.run([exe, *flags, f"--user-data-dir={work / name}", f"--screenshot={work / name}.png", url],
                       capture_output=True, timeout=900)
        return time.monotonic() - t

    out = {"screenshot_wall_s": shot(page.as_uri(), "page"), "blank_screenshot_wall_s": shot("data:text/html,x", "blank")}
    dom = subprocess.run([exe, *flags, f"--user-data-dir={work / 'dom'}", "--virtual-time-budget=60000", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=900).stdout
    for key in ("fcp", "ready"):
        m = re.search(rf'data-{key}-ms="(\d+)"', dom)
        if m:
            out[f"{key}_ms"] = float(m.group(1))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.report.bench", description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--results", type=Path, help="a results file to report on instead of a synthetic one")
    p.add_argument("--python", default=sys.executable, help="the interpreter whose harness renders (default: this one)")
    p.add_argument("--cwd", type=Path, help="run the report from this checkout (with --python)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="onnx-compat-bench-"))
    try:
        results = args.results
        if results is None:
            from .synth import write

            results = write(work / "results.jsonl", args.cells)
        print(f"report on {results} ...", file=sys.stderr)
        res = run_report(args.python, results.resolve(), work / "out", args.cwd)
        res.update(chromium(work / "out" / "report.html", work))
        res["load_average"] = os.getloadavg()[0]
        print(json.dumps(res, indent=1) if args.json else "\n".join(f"{k:<26} {v:.3g}" for k, v in res.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
