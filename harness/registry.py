"""Where cases come from: the family modules under cases/, and selection by -k / -m.

-k and -m use pytest's own expression language (and, or, not, parentheses), so a
selection means the same thing in `onnx-compat run` and in `pytest`.
"""

from __future__ import annotations

import importlib
import os
from typing import Iterable

from .case import Case
from .marks import MARKS

FAMILY_MODULES = ["norms", "rotary", "onnx_node", "gqa", "matmulnbits", "gather_block_quantized", "dequantize"]
GRIDS = ("quick", "full")


class SelectionError(ValueError):
    """A bad -k / -m expression or grid name; the message says which and how to fix it."""


def default_grid() -> str:
    g = os.environ.get("ONNX_COMPAT_GRID", "quick")
    if g not in GRIDS:
        raise SelectionError(f"ONNX_COMPAT_GRID={g!r} is not a grid; use one of {', '.join(GRIDS)}")
    return g


def family_cases(module: str, grid: str) -> list[Case]:
    try:
        mod = importlib.import_module(f"cases.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"cases.{module}":
            return []
        raise
    return list(mod.cases(grid))


def load_cases(grid: str | None = None, families: Iterable[str] | None = None) -> list[Case]:
    grid = grid or default_grid()
    if grid not in GRIDS:
        raise SelectionError(f"--grid {grid!r} is not a grid; use one of {', '.join(GRIDS)}")
    out: list[Case] = []
    seen: set[str] = set()
    for fam in families or FAMILY_MODULES:
        for c in family_cases(fam, grid):
            if c.id in seen:
                raise ValueError(f"duplicate case id {c.id!r} in cases/{fam}.py")
            unknown = [m for m in c.marks if m not in MARKS]
            if unknown:
                raise ValueError(f"case {c.id!r} carries unregistered mark(s) {unknown}; add them to harness/marks.py")
            seen.add(c.id)
            out.append(c)
    return out


def _compile(expr: str, option: str):
    from _pytest.mark.expression import Expression

    try:
        return Expression.compile(expr)
    except Exception as e:  # noqa: BLE001 - SyntaxError or ParseError, by pytest version
        raise SelectionError(f"{option} {expr!r} is not a valid expression ({e}); "
                             f"use names joined by and/or/not, e.g. {option} 'gqa and not fp16'") from None


def _evaluate(compiled, matcher) -> bool:
    # pytest >= 8.3 passes keyword arguments to the matcher for some forms; accept both.
    return bool(compiled.evaluate(lambda name, **_kw: matcher(name)))


def select(cases: list[Case], k: str | None = None, m: str | None = None) -> list[Case]:
    if k:
        kx = _compile(k, "-k")
        cases = [c for c in cases if _evaluate(kx, lambda s, c=c: s.lower() in c.id.lower())]
    if m:
        mx = _compile(m, "-m")
        for name in _names(m):
            if name not in MARKS:
                raise SelectionError(f"-m {m!r}: unknown mark {name!r}; known marks: {', '.join(sorted(MARKS))}")
        cases = [c for c in cases if _evaluate(mx, lambda s, c=c: s in c.marks)]
    return cases


def _names(expr: str) -> list[str]:
    import re

    return [t for t in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr) if t not in ("and", "or", "not")]
