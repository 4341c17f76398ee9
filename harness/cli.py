"""The `onnx-compat` command line (its options and files are a contract: README "Commands", docs/architecture.md)."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from .cli_common import (EXIT_FINDINGS, EXIT_OK, EXIT_RUN, EXIT_USAGE, UsageError,  # noqa: F401 - EXIT_*: the exit codes' names
                         backend_names, check_out_dir, check_timeout, selected_cases)
from .cli_parser import build_parser
from .cli_run import cmd_run


#: the user's own setting (None: unset), for what runs outside this tool's choices: bench runs
#: `polygraphy run` in the environment a user would have, not with this process's setting
USER_OPENBLAS_NUM_THREADS = os.environ.get("OPENBLAS_NUM_THREADS")

# numpy's OpenBLAS threads spin after every BLAS call (the comparison's cosine is a dot
# product), taking the cores the runtime under test and the next cell need: measured on a GQA
# head-512 cell, 36-48 ms a cell with them and 1.5 ms without. One BLAS thread per process
# (cells run in parallel with --jobs); set before numpy loads, and a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so that its cleanup (pool, workers, temp files) runs."""


def _on_sigterm(signum, frame):
    raise Terminated()


def cmd_backends(args) -> int:
    from . import backends

    rows = []
    for n in backends.names():
        b = backends.get(n, isolated=False)
        ok, why = b.available()
        rows.append({"backend": n, "available": ok, "reason": why, "version": b.version() if ok else "",
                     "isolated": b.isolated, "description": b.description})
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    for r in rows:
        state = "available  " if r["available"] else "unavailable"
        detail = r["version"] if r["available"] else r["reason"]
        print(f"{r['backend']:<14} {state}  {detail}")
    return EXIT_OK


def cmd_list(args) -> int:
    cases = selected_cases(args)
    if args.json:
        print(json.dumps([{"id": c.id, "family": c.family, "features": dict(c.features), "marks": list(c.marks),
                           "tolerance": c.tolerance} for c in cases], indent=1, default=str))
    else:
        for c in cases:
            print(c.id)
    print(f"{len(cases)} cases", file=sys.stderr)
    return EXIT_OK


def cmd_locate(args) -> int:
    from .locate import locate_cell, summary_line
    from .registry import find_case

    check_timeout(args)
    check_out_dir(args.out)
    backend_names(args.backend)
    try:
        case = find_case(args.case_id, args.grid)
    except KeyError as e:
        raise UsageError(e.args[0]) from None
    res = locate_cell(case, args.backend, Path(args.out), args.timeout,
                      log=(lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr)))
    print(json.dumps(res, indent=1, default=str) if args.json else summary_line(res))
    if res.get("repro") and not args.json:  # --out defaults to ./out/located: say where it went
        print(f"locate: repro bundle written to {res['repro']} (--out {args.out})", file=sys.stderr)
    return EXIT_OK if not res.get("found") or res.get("repro_ok") else EXIT_FINDINGS


def cmd_extract(args) -> int:
    from .extract import ExtractError, cmd_extract as run

    names = backend_names(args.backends)
    try:
        return run(args.model, args.name, names, args.out, args.json)
    except ExtractError as e:
        raise UsageError(str(e)) from None


def cmd_export(args) -> int:
    from .bundle import write_bundle
    from .registry import find_case

    dest = Path(args.out)
    if dest.exists() and any(dest.iterdir()) and not (dest / "case.json").exists():
        raise UsageError(f"{dest} exists and is not a bundle; choose an empty or new --out directory")
    try:
        case = find_case(args.case_id, args.grid)
    except KeyError as e:
        raise UsageError(e.args[0]) from None
    write_bundle(case, case.build(), dest)
    print(f"wrote {dest}/ ({', '.join(sorted(p.name + ('/' if p.is_dir() else '') for p in Path(dest).iterdir()))})")
    return EXIT_OK


def cmd_report(args) -> int:
    from .report import write_report
    from .results import ResultsError, merge, read_results

    check_out_dir(args.out)
    try:
        records = merge(args.results)
        baseline = read_results(args.baseline) if args.baseline else None
    except ResultsError as e:
        raise UsageError(str(e)) from None
    coverage = None
    if args.coverage:
        from .registry import load_cases
        from .report.coverage import table

        print(f"coverage of the operator text by the {args.coverage} grid's cases ...", file=sys.stderr)
        coverage = table([c for c in load_cases(args.coverage) if c.family != "zoo"])
    path = write_report(records, args.out, baseline, sources=args.results, issues=args.issues, coverage=coverage)
    print(f"{len(records)} cells from {len(args.results)} file(s) -> {path}"
          + (f"; issue drafts -> {args.issues}" if args.issues else ""))
    return EXIT_OK


def cmd_check(args) -> int:
    from .check import check

    check_timeout(args)
    check_out_dir(args.out)
    names = backend_names(args.backends)
    return check(args.path, names, out=args.out, tolerance=args.tolerance, timeout=args.timeout)


def cmd_bench(args) -> int:
    from .bench import bench, default_sample

    if args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: use 1 or more (each is one timed pair per measurement)")
    cases = selected_cases(args)
    if args.k is None and args.m is None:  # bounded by default: a few cases of every family
        cases = default_sample(cases)
        print(f"bench: {len(cases)} case(s), the first few of each op family (select others with -k/-m)",
              file=sys.stderr)
    names = backend_names(args.backends or ",".join(dict.fromkeys([args.baseline, "reference"])))
    return bench(cases, names, baseline=args.baseline, repeat=args.repeat, as_json=args.json,
                 runs=not args.no_runs, progress=None if args.quiet else sys.stderr,
                 polygraphy=not args.no_polygraphy)


def cmd_install_js(args) -> int:
    from .backends.ort_js import install_js

    return install_js()


def cmd_install_webgpu(args) -> int:
    from .backends.ort_webgpu import install_webgpu

    return install_webgpu()


def cmd_twins(args) -> int:
    from .zoo.build import cmd_twins as run

    return run(args)


COMMANDS = {"backends": cmd_backends, "list": cmd_list, "run": cmd_run, "export": cmd_export,
            "report": cmd_report, "check": cmd_check, "locate": cmd_locate, "extract": cmd_extract, "bench": cmd_bench, "twins": cmd_twins,
            "install-js": cmd_install_js, "install-webgpu": cmd_install_webgpu}


#: commands that end with a quick exit (see `entry`): short ones, whose every file is closed
#: by the time they return
QUICK_EXIT = frozenset({"check"})


def entry(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script. `check` of one bundle takes ~0.13 s, of which the interpreter's
    teardown (freeing every module and numpy object one by one, memory the OS reclaims at once)
    was ~20 ms: after such a command has written and closed its files, this flushes the standard
    streams, runs the exit handlers (temporary directories are removed there) and exits at once.
    Another thread still running, or any other command, gets the ordinary exit. Such a command
    also starts with the cyclic garbage collector off, as gc.freeze's documentation advises for
    a process that forks (`check` forks a child per cell); it turns it back on itself."""
    import gc
    import threading

    args = build_parser(argv).parse_args(argv)
    if args.cmd in QUICK_EXIT:  # start-up allocates only objects that live as long as the process:
        gc.disable()  # no collection to run over them (~40 of them, ~6 ms, in `check`); the command re-enables it
    code = run_command(args)
    if args.cmd in QUICK_EXIT and threading.active_count() == 1:
        quick_exit(code)
    sys.exit(code)


def quick_exit(code: int) -> NoReturn:
    """Exit with `code` after running the atexit handlers and then flushing stdout/stderr (a
    handler may still write), without the interpreter's module teardown."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(argv).parse_args(argv))


def run_command(args) -> int:
    """One parsed command, its errors turned into one line and an exit code."""
    if threading_main():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return COMMANDS[args.cmd](args)
    except _loaded("bundle:BundleError", "results:ResultsError", "zoo:ZooError", base=(UsageError, FileExistsError)) as e:
        print(f"onnx-compat {args.cmd}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except _loaded("results:OutDirBusy", "runner:RunError") as e:
        print(f"onnx-compat {args.cmd}: error: {e}", file=sys.stderr)
        return EXIT_RUN
    except BrokenPipeError:  # `onnx-compat list | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_OK
    except OSError as e:
        print(f"onnx-compat {args.cmd}: error: {_os_error(e, args.cmd)}", file=sys.stderr)
        return EXIT_RUN
    except MemoryError:
        print(f"onnx-compat {args.cmd}: error: out of memory; run fewer --jobs or a smaller selection (-k/-m), "
              "then --resume", file=sys.stderr)
        return EXIT_RUN
    except KeyboardInterrupt as e:
        print("onnx-compat: " + ("terminated" if isinstance(e, Terminated) else "interrupted")
              + "; results so far are in results.jsonl (continue with --resume)", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


def _loaded(*names: str, base: tuple[type, ...] = ()) -> tuple[type, ...]:
    """The error classes `names` ("module:Class" under harness) of the modules this command has
    imported: one that was never imported cannot have raised. Importing them all up front would
    cost every command onnx, pydantic and the zoo (~1.5 s), `check` of one bundle included."""
    out = list(base)
    for item in names:
        mod, _, cls = item.partition(":")
        m = sys.modules.get(f"{__package__}.{mod}")
        if m is not None and hasattr(m, cls):
            out.append(getattr(m, cls))
    return tuple(out)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _os_error(e: OSError, cmd: str = "run") -> str:
    """One line: what could not be read or written, why, and what to do (only `run` resumes)."""
    what = f"{e.filename}: " if e.filename else ""
    why = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = ("free some space (or choose another --out), then continue with --resume" if cmd == "run"
               else f"free some space (or choose another --out), then run `onnx-compat {cmd}` again")
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a directory you can write for --out"
    else:
        fix = "check the path and try again"
    return f"{what}{why}; {fix}"


if __name__ == "__main__":
    entry()
