"""Where cases come from: the family modules under cases/, and selection by -k / -m.

-k and -m use pytest's own expression language (and, or, not, parentheses), so a
selection means the same thing in `onnx-compat run` and in `pytest`.
"""

from __future__ import annotations

import os
from typing import Iterable

from . import families
from .case import Case
from .marks import all_marks

GRIDS = ("quick", "full")


class SelectionError(ValueError):
    """A bad -k / -m expression or grid name; the message says which and how to fix it."""


def default_grid() -> str:
    g = os.environ.get("ONNX_COMPAT_GRID", "quick")
    if g not in GRIDS:
        raise SelectionError(f"ONNX_COMPAT_GRID={g!r} is not a grid; use one of {', '.join(GRIDS)}")
    return g


def family_cases(module: str, grid: str) -> list[Case]:
    fam = families.get(module)
    return fam.cases(grid) if fam else []


def module_names() -> list[str]:
    """Every family module under cases/, found the one way pytest, `run`, `list` and the report share."""
    return families.module_names()


def load_cases(grid: str | None = None, families: Iterable[str] | None = None) -> list[Case]:
    grid = grid or default_grid()
    if grid not in GRIDS:
        raise SelectionError(f"--grid {grid!r} is not a grid; use one of {', '.join(GRIDS)}")
    out: list[Case] = []
    seen: set[str] = set()
    marks = all_marks()
    for fam in families or module_names():
        for c in family_cases(fam, grid):
            if c.id in seen:
                raise ValueError(f"duplicate case id {c.id!r} in cases/{fam}.py")
            unknown = [m for m in c.marks if m not in marks]
            if unknown:
                raise ValueError(f"case {c.id!r} carries unregistered mark(s) {unknown}; declare them in "
                                 f"cases/{fam}.py's FAMILY (or harness/marks.py when shared by families)")
            seen.add(c.id)
            out.append(c)
    return out


def find_case(case_id: str, grid: str | None = None) -> Case:
    """A case by id: built from its own family's grid alone where the id names a family (an export
    or a locate of one case need not collect ONNX's node tests or read every twin), else from every
    family and the zoo's twins. KeyError names close ids."""
    for fam in families.of_case_id(case_id):
        for c in family_cases(fam.module, grid or default_grid()):
            if c.id == case_id:
                return c
    from .zoo import zoo_cases

    cases = {c.id: c for c in load_cases(grid)}
    if case_id not in cases:
        cases.update({c.id: c for c in zoo_cases("twins")})
    if case_id not in cases:
        close = [c for c in cases if case_id in c][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else "; `onnx-compat list` shows the ids"
        raise KeyError(f"unknown case id {case_id!r}{hint}")
    return cases[case_id]


def _compile(expr: str, option: str):
    # pytest's expression language has no public API; this is the one place that reaches into it
    # (tests/test_registry.py pins its behaviour, so a pytest upgrade that changes it fails there).
    from _pytest.mark.expression import Expression

    try:
        return Expression.compile(expr)
    except Exception as e:  # noqa: BLE001 - SyntaxError or ParseError, by pytest version
        raise SelectionError(f"{option} {expr!r} is not a valid expression ({e}); "
                             f"use names joined by and/or/not, e.g. {option} 'gqa and not fp16'") from None


def _evaluate(compiled, matcher) -> bool:
    # pytest >= 8.3 passes keyword arguments to the matcher for some forms; accept both.
    return bool(compiled.evaluate(lambda name, **_kw: matcher(name)))


def selector(k: str | None = None, m: str | None = None, check_marks: bool = True):
    """A predicate over (case id, marks) meaning what `-k K -m M` means in pytest. `check_marks`
    refuses a mark nothing declares (a user's typo); a family's own row selections skip that
    check, since some marks exist only when their cases do (one per shipped zoo form)."""
    kx = _compile(k, "-k") if k else None
    mx = _compile(m, "-m") if m else None
    if m and check_marks:
        known = all_marks()
        for name in _names(m):
            if name not in known:
                raise SelectionError(f"-m {m!r}: unknown mark {name!r}; known marks: {', '.join(sorted(known))}")

    def matches(case_id: str, marks) -> bool:
        if kx is not None and not _evaluate(kx, lambda s: s.lower() in case_id.lower()):
            return False
        return mx is None or _evaluate(mx, lambda s: s in marks)

    return matches


def select(cases: list[Case], k: str | None = None, m: str | None = None) -> list[Case]:
    if not (k or m):
        return cases
    keep = selector(k, m)
    return [c for c in cases if keep(c.id, c.marks)]


def _names(expr: str) -> list[str]:
    import re

    return [t for t in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr) if t not in ("and", "or", "not")]
