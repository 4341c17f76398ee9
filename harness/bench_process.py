"""Whole commands timed side by side, for `onnx-compat bench`: `check` of one bundle against
`polygraphy run` of the same bundle (what people would use instead).

Each command runs as its own process, in alternating order (A B, B A, …), and is charged its own
wall time and the CPU time the kernel accounted to it and its children (os.wait4), so a ratio
holds when the machine's speed drifts. Polygraphy's inputs and outputs are written with
Polygraphy's own JSON helpers from the bundle's npz files.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence


def user_environment() -> dict[str, str]:
    """The environment as the user invoked this tool: without the OPENBLAS_NUM_THREADS=1 that
    harness/cli.py sets for itself when the user had not. `polygraphy run` inheriting it would
    skip OpenBLAS's thread start (~30 ms, 10% of its run here), which no user's shell does;
    `check` sets it again itself."""
    from .cli import USER_OPENBLAS_NUM_THREADS as user

    env = dict(os.environ)
    if user is None:
        env.pop("OPENBLAS_NUM_THREADS", None)
    else:
        env["OPENBLAS_NUM_THREADS"] = user
    return env


def timed_process(argv: Sequence[str], cwd: str | os.PathLike | None = None,
                  env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """(wall s, CPU s (user + sys, children included), exit code) of one run of argv."""
    t0 = time.perf_counter()
    p = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, p.returncode


def paired(a: Sequence[str], b: Sequence[str], repeat: int, cwd=None, env: dict[str, str] | None = None
           ) -> dict[str, Any]:
    """Medians of `repeat` alternating runs of a and b after one warm-up each, and the medians of
    the pairwise ratios a/b (wall and CPU)."""
    timed_process(a, cwd, env)
    timed_process(b, cwd, env)
    runs: dict[str, list[tuple[float, float, int]]] = {"a": [], "b": []}
    for rep in range(repeat):
        for k in (("a", "b") if rep % 2 == 0 else ("b", "a")):
            runs[k].append(timed_process(a if k == "a" else b, cwd, env))
    codes = {k: sorted({r[2] for r in v}) for k, v in runs.items()}
    ratio = lambda i: statistics.median(x[i] / y[i] for x, y in zip(runs["a"], runs["b"]))  # noqa: E731
    return {"a_wall": statistics.median(r[0] for r in runs["a"]), "a_cpu": statistics.median(r[1] for r in runs["a"]),
            "b_wall": statistics.median(r[0] for r in runs["b"]), "b_cpu": statistics.median(r[1] for r in runs["b"]),
            "wall_ratio": round(ratio(0), 3), "cpu_ratio": round(ratio(1), 3), "exit_codes": codes}


def polygraphy_files(bundle: Path) -> tuple[Path, Path] | None:
    """Write the bundle's first step as Polygraphy --load-inputs / --load-outputs files; None if
    the bundle has several steps (Polygraphy cannot feed one step's outputs to the next)."""
    import numpy as np
    from polygraphy.comparator import IterationResult, RunResults
    from polygraphy.json import save_json

    with np.load(bundle / "inputs.npz") as z:
        feeds = {k: z[k] for k in z.files}
    with np.load(bundle / "expected.npz") as z:
        expected = {k: z[k] for k in z.files if not k.endswith(".mask")}
    if any("@" in k for k in feeds):
        return None
    outputs = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in expected.items()}
    inputs_json, outputs_json = bundle / "polygraphy-inputs.json", bundle / "polygraphy-outputs.json"
    save_json([feeds], str(inputs_json))
    from polygraphy.logger import G_LOGGER

    results = RunResults()
    results.append(("expected", [IterationResult(outputs, runner_name="expected")]))
    severity, G_LOGGER.module_severity = G_LOGGER.module_severity, G_LOGGER.ERROR  # no "Saving …" line
    try:
        results.save(str(outputs_json))
    finally:
        G_LOGGER.module_severity = severity
    return inputs_json, outputs_json


def ensure_bytecode() -> str:
    """Both commands load compiled bytecode, as they do on any default Python after their first
    run: pip compiled polygraphy's files when it installed them; an editable install of this
    package has none, and under PYTHONDONTWRITEBYTECODE (set on some CI machines) the warm-up run
    cannot write them, so every timed `check` would compile ~20 modules first (~45 ms, ~20% of
    the command). Returns what it did ('' when nothing was needed)."""
    if not sys.flags.dont_write_bytecode:
        return ""
    import compileall

    import harness

    compileall.compile_dir(str(Path(harness.__file__).parent), quiet=1)
    return "PYTHONDONTWRITEBYTECODE is set: harness/ compiled once before timing (pip compiled polygraphy at install)"


def check_vs_polygraphy(bundle: Path, backend: str, repeat: int) -> dict[str, Any]:
    """`onnx-compat check BUNDLE --backends ort-cpu` against `polygraphy run model.onnx --onnxrt`
    on the same bundle, as whole processes."""
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        return {"skipped": "polygraphy is not installed (pip install polygraphy, or the [dev] extra)"}
    if backend != "ort-cpu":
        return {"skipped": "polygraphy's --onnxrt runner is ORT CPU with default options: compared on ort-cpu only"}
    files = polygraphy_files(bundle)
    if files is None:
        return {"skipped": "a multi-step bundle: polygraphy run feeds one step"}
    poly = [sys.executable, "-c", "import sys; from polygraphy.tools import main; sys.argv[0] = 'polygraphy'; "
            "sys.exit(main())", "run", str(bundle / "model.onnx"), "--onnxrt",
            "--load-inputs", str(files[0]), "--load-outputs", str(files[1])]
    check = [sys.executable, "-m", "harness.cli", "check", str(bundle), "--backends", backend]
    compiled = ensure_bytecode()
    env = user_environment()
    m = paired(check, poly, repeat, env=env)  # both as the user would run them
    m["openblas_num_threads"] = env.get("OPENBLAS_NUM_THREADS", "unset")
    if compiled:
        m["bytecode"] = compiled
    m["commands"] = {"check": "onnx-compat check BUNDLE --backends ort-cpu",
                     "polygraphy": "polygraphy run BUNDLE/model.onnx --onnxrt --load-inputs … --load-outputs …"}
    return m
