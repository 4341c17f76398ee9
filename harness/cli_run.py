"""`onnx-compat run`: the main job's command (options checked, the out directory claimed and
locked, the cells run, the matrix and report written, what it cost said)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .cli_common import EXIT_OK, UsageError, backend_names, check_out_dir, check_timeout, selected_cases


def cmd_run(args) -> int:
    from .runner import parse_shard, perf_repeats

    check_timeout(args)
    check_out_dir(args.out)
    names = backend_names(args.backends)
    if not names:
        raise UsageError("--backends: no backend is available; see `onnx-compat backends`")
    try:
        shard = parse_shard(args.shard)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: use 1 or more")
    backend_names(args.oracle)
    if args.perf < 0:
        raise UsageError(f"--perf {args.perf}: use 0 (off) or a number of timed repetitions")
    os.environ["ONNX_COMPAT_PERF"] = str(args.perf)  # read by run_cell, here and in the worker processes
    perf_repeats.cache_clear()  # this process may have read it before (cli.main called twice)
    if not (args.backends or args.k or args.m):  # the main job: slow columns run their documented subsets
        os.environ.setdefault("ONNX_COMPAT_WEBGPU_SUBSET", "1")
        os.environ.setdefault("ONNX_COMPAT_LONG_SUBSET", "1")  # harness/backends/long_subset.py
    # cases/zoo.py yields this run's zoo set, here and in --jobs workers (they inherit the environment)
    os.environ["ONNX_COMPAT_ZOO_MODE"], os.environ["ONNX_COMPAT_ZOO_ORACLE"] = args.zoo, args.oracle
    try:
        cases = selected_cases(args)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    if not cases:
        raise UsageError("no case matches the selection (-k/-m); see `onnx-compat list`")
    from .outdir import NotOurs, claim
    from .results import lock_out_dir

    out = Path(args.out)
    try:
        claim(out)  # never replace a matrix or report the user wrote there (harness/outdir.py); before the lock file
    except NotOurs as e:
        raise UsageError(str(e)) from None
    with lock_out_dir(out):  # before looking at results.jsonl: another run may be writing it
        return _run_locked(args, names, shard, cases, out)


def _run_locked(args, names, shard, cases, out: Path) -> int:
    from .report import write_report
    from .results import read_results
    from .runner import execute

    results = out / "results.jsonl"
    if results.exists() and not args.resume:
        raise UsageError(f"{results} exists; pass --resume to continue that run, or choose another --out")
    print(f"onnx-compat run: {len(cases)} cases × {len(names)} backends ({', '.join(names)}) -> {out}", file=sys.stderr)
    from .constraints import drift_lines
    from .zoo.hub import fetch_failures

    for line in drift_lines():  # recorded in run.json too; said here so it is not silent
        print(f"onnx-compat run: {line}", file=sys.stderr)
    summary = execute(cases, names, out, resume=args.resume, shard=shard, jobs=args.jobs, isolate=args.isolate,
                      timeout=args.timeout, grid=args.grid or os.environ.get("ONNX_COMPAT_GRID", "quick"),
                      progress=not args.quiet, in_process=args.in_process, repro=not args.no_repro)
    records = read_results(results)
    if getattr(args, "locate", False):
        from .locate import locate_records
        from .results import atomic_write_text

        n = locate_records(records, out, args.timeout, log=lambda s: print(s, file=sys.stderr))
        atomic_write_text(results, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        print(f"located {n} zoo cell(s); their node is in metrics.located", file=sys.stderr)
    if args.no_report:
        from .report.matrix import write_matrix

        write_matrix(records, out)
    else:
        write_report(records, out)
    _print_summary(records)
    for line in fetch_failures(records):  # a hub model that could not be fetched: why, and the fix
        print(line, file=sys.stderr)
    _print_bundle_cost(out / "repro", args.no_repro, records)
    print(f"{summary['cells_run']} cells run ({summary['resumed']} resumed) -> {results}, {out / 'matrix.csv'}"
          + ("" if args.no_report else f", {out / 'report.html'}"), file=sys.stderr)
    return EXIT_OK


def _print_bundle_cost(repro: Path, skipped: bool = False, records=()) -> None:
    """What the repro bundles of failing cells cost on disk, said once per run."""
    if skipped:
        print("no repro bundles written (--no-repro); `onnx-compat export CASE --out DIR` writes one on request",
              file=sys.stderr)
        return
    from .runner import repro_max_mb

    big = sorted({r["case_id"] for r in records if r["status"] not in ("pass", "skip", "unavailable")
                  and not r.get("repro")})
    if big:
        print(f"{len(big)} failing case(s) got no repro bundle (arrays over {repro_max_mb():g} MiB, "
              f"ONNX_COMPAT_REPRO_MAX_MB; e.g. {big[0]}): `onnx-compat export CASE --out DIR` writes one", file=sys.stderr)
    if not repro.is_dir():
        return
    bundles = {p.parent for p in repro.rglob("case.json")}
    size = sum(p.stat().st_size for p in repro.rglob("*") if p.is_file())
    if bundles:
        print(f"{len(bundles)} repro bundle(s) of failing cells, {size / 1e6:.0f} MB, under {repro} "
              "(each `sh repro.sh BACKEND` reruns one; --no-repro writes none)", file=sys.stderr)


def _print_summary(records) -> None:
    from .report.matrix import summary

    for b, counts in summary(records).items():
        print(f"{b:<14} " + "  ".join(f"{s} {n}" for s, n in counts.items()))
