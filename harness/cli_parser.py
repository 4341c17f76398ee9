"""The `onnx-compat` command line's options: every command, its arguments, defaults and help (the
contract README "Commands" and docs/architecture.md describe). What each command does is harness/cli.py."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

#: every command, in the order `onnx-compat --help` lists them
COMMAND_NAMES = ("backends", "list", "run", "locate", "extract", "export", "report", "check", "twins",
                 "install-js", "install-webgpu", "bench")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (default sys.argv[1:]). When argv names a command, only that command's
    options are built: the other eleven cost ~3 ms, 2% of a `check` of one bundle. Anything
    else (no command, an unknown one, `--help`) gets every command, for the usage and the error."""
    args = sys.argv[1:] if argv is None else list(argv)
    only = args[0] if args and args[0] in COMMAND_NAMES else None

    def want(name: str) -> bool:
        return only is None or name == only

    p = argparse.ArgumentParser(prog="onnx-compat", description="Which runtime runs which ONNX LLM export form correctly.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    if want("backends"):
        b = sub.add_parser("backends", help="each backend: available or not, why, version")
        b.add_argument("--json", action="store_true")

    def selection(sp):
        sp.add_argument("-k", dest="k", metavar="EXPR", help="select cases whose id contains these substrings (pytest -k syntax)")
        sp.add_argument("-m", dest="m", metavar="MARKEXPR", help="select cases by mark expression (pytest -m syntax)")
        sp.add_argument("--grid", choices=["quick", "full"], default=None,
                        help="parameter grid: quick (default, CI) or full (nightly); env ONNX_COMPAT_GRID")

    if want("list"):
        ls = sub.add_parser("list", help="case ids (with features and marks under --json)")
        selection(ls)
        ls.add_argument("--json", action="store_true")

    if want("run"):
        r = sub.add_parser("run", help="run cases on backends; write results.jsonl, matrix and report")
        selection(r)
        r.add_argument("--backends", metavar="a,b", help="comma-separated backends (default: every available one)")
        r.add_argument("--zoo", choices=["twins", "hub", "none"], default="twins", help="zoo models to include (default twins)")
        r.add_argument("--oracle", default="ort-cpu-noopt", metavar="BACKEND",
                       help="backend that judges --zoo hub models, which have no eager oracle (default ort-cpu-noopt)")
        r.add_argument("--out", default="out", metavar="DIR", help="output directory (default ./out)")
        r.add_argument("--resume", action="store_true", help="continue DIR/results.jsonl, skipping finished cells")
        r.add_argument("--shard", metavar="I/N", help="run only shard I of N (deterministic partition of cells)")
        r.add_argument("--jobs", type=int, default=1, metavar="N", help="cases run in N processes (default 1)")
        r.add_argument("--timeout", type=float, default=120.0, metavar="S", help="per-cell limit for isolated backends (s)")
        r.add_argument("--isolate", action="store_true", help="run every backend in a worker process, not only tract")
        r.add_argument("--in-process", action="store_true",
                       help="run cells in this process, not a supervised worker (for a debugger; a native crash then "
                            "ends the run, and --resume records it as crash)")
        r.add_argument("--no-report", action="store_true", help="skip report.html (matrix files are still written)")
        r.add_argument("--locate", action="store_true",
                       help="locate the first diverging node of every zoo cell that mismatches (slow; "
                            "metrics.located, repros under DIR/located/)")
        r.add_argument("--perf", type=int, default=0, metavar="N",
                       help="perf mode: also time N warm runs of every cell (metrics.latency_ms, the median; shown as "
                            "the report's latency columns)")
        r.add_argument("--quiet", action="store_true", help="no progress bar")
        r.add_argument("--no-repro", action="store_true",
                       help="write no repro bundles (deflated, ~0.4 MB per failing case, none over ONNX_COMPAT_REPRO_MAX_MB=64; "
                            "`export` writes one later)")

    if want("locate"):
        lo = sub.add_parser("locate", help="the first node where a backend leaves the reference, extracted as a repro")
        lo.add_argument("case_id", metavar="CASE")
        lo.add_argument("--backend", required=True, metavar="B")
        lo.add_argument("--out", default="out/located", metavar="DIR", help="repro bundles go here (default out/located)")
        lo.add_argument("--grid", choices=["quick", "full"], default=None)
        lo.add_argument("--timeout", type=float, default=120.0, metavar="S")
        lo.add_argument("--json", action="store_true")

    if want("extract"):
        x = sub.add_parser("extract", help="a model's attention/quantisation/rotary/norm configurations as op cases, "
                                           "judged reference vs each backend")
        x.add_argument("model", metavar="MODEL.onnx")
        x.add_argument("--name", metavar="N", help="the model's name in the case ids (default: its twin, or the file stem)")
        x.add_argument("--backends", metavar="a,b", help="backends to judge (default: every available one)")
        x.add_argument("--out", metavar="DIR", help="write a repro bundle of every cell that is not a pass here")
        x.add_argument("--json", action="store_true")

    if want("export"):
        e = sub.add_parser("export", help="write the repro bundle of one case, without running a backend")
        e.add_argument("case_id")
        e.add_argument("--out", required=True, metavar="DIR")
        e.add_argument("--grid", choices=["quick", "full"], default=None)

    if want("report"):
        rep = sub.add_parser("report", help="merge results (shards) and render matrix.csv/json and report.html")
        rep.add_argument("results", nargs="+", metavar="RESULTS.jsonl")
        rep.add_argument("--out", required=True, metavar="DIR")
        rep.add_argument("--baseline", metavar="RESULTS.jsonl", help="previous results: changes are listed on top")
        rep.add_argument("--issues", metavar="DIR", help="also write one Markdown upstream issue draft per finding here")
        rep.add_argument("--coverage", choices=["quick", "full"], metavar="GRID",
                         help="add a section on which attributes and optional inputs of each op GRID's cases exercise "
                              "(as docs/coverage.md; builds the cases' models, a minute or more)")

    if want("check"):
        c = sub.add_parser("check", help="a bundle dir or a model on every backend; exit 1 unless all pass")
        c.add_argument("path", metavar="PATH")
        c.add_argument("--backends", metavar="a,b")
        c.add_argument("--out", metavar="DIR", help="also write results.jsonl, matrix and report here")
        c.add_argument("--tolerance", metavar="PROFILE", help="tolerance profile when the bundle has no case.json")
        c.add_argument("--timeout", type=float, default=120.0, metavar="S")

    if want("twins"):
        tw = sub.add_parser("twins", help="zoo twins: list them, or rebuild them with the real exporters")
        tws = tw.add_subparsers(dest="twins_cmd", required=True, metavar="list|build")
        tws.add_parser("list", help="each twin: form, precision, cache kind, size, exporter and version")
        twb = tws.add_parser("build", help="rebuild twins (all, or NAME) in their exporter environments under .zoo-envs/")
        twb.add_argument("name", nargs="?", metavar="NAME")

    if want("install-js"):
        sub.add_parser("install-js", help="npm ci in js/ (the pinned onnxruntime-node and -web of the ort-node/ort-web columns)")
    if want("install-webgpu"):
        sub.add_parser("install-webgpu", help="the ort-webgpu column's venv: .zoo-envs/ort-webgpu with onnxruntime-webgpu 1.27.0")

    if want("bench"):
        be = sub.add_parser("bench", help="time per cell of each backend, as ratios to one baseline, side by side")
        selection(be)
        be.add_argument("--backends", metavar="a,b", help="backends to time (default: the baseline and reference)")
        be.add_argument("--baseline", default="ort-cpu", metavar="BACKEND")
        be.add_argument("--repeat", type=int, default=8, metavar="N",
                        help="alternating repetitions of each measurement, medians taken (default 8)")
        be.add_argument("--json", action="store_true")
        be.add_argument("--no-runs", action="store_true", help="skip the whole-run timings (serial/--jobs 2/--in-process)")
        be.add_argument("--no-polygraphy", action="store_true", help="skip check vs `polygraphy run` (whole processes)")
        be.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p
