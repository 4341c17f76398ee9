"""What the commands share: exit codes, the one-line usage error, and the checks of the options
that name backends, cases, a timeout or an output directory."""

from __future__ import annotations

import os
from pathlib import Path

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_RUN = 0, 1, 2, 3


class UsageError(Exception):
    """Bad input: one line naming the file or option and the fix."""


def backend_names(spec: str | None) -> list[str]:
    from . import backends

    try:
        return backends.parse_list(spec)
    except KeyError as e:
        raise UsageError(f"--backends: {e.args[0]}") from None


def selected_cases(args) -> list:
    from .registry import SelectionError, load_cases, select

    try:
        cases = select(load_cases(args.grid), args.k, args.m)
    except SelectionError as e:
        raise UsageError(str(e)) from None
    return cases


def check_timeout(args) -> None:
    """--timeout 0 or -5 would time every cell out (or none): a usage error, not a run."""
    t = getattr(args, "timeout", None)
    if t is not None and not (t > 0 and t != float("inf")):
        raise UsageError(f"--timeout {t:g}: use a number of seconds above 0, e.g. --timeout 120")


def check_out_dir(path: str | os.PathLike | None, option: str = "--out") -> None:
    """--out naming a file: one line (not `[Errno 17] File exists`)."""
    from .outdir import NotOurs, check_is_dir

    if path:
        try:
            check_is_dir(Path(path), option)
        except NotOurs as e:
            raise UsageError(str(e)) from None
