"""Op families, found by one mechanism for every consumer (`run`, `list`, pytest, the report).

A family is a module under `cases/` with a `cases(grid)` function and, optionally, a module-level
`FAMILY = Family(...)` declaring what the rest of the harness needs to know about it: its pytest
marks, the reference ops it relies on, and the named rows it contributes to the report. Adding a
family is then one case module plus its reference (and docs and tests), as ONNX's node cases
register themselves through their base class instead of a hand-kept list.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Sequence

CASES_PACKAGE = "cases"


@dataclass(frozen=True)
class Row:
    """A named report row: a selection in the `-k` / `-m` language, and where the need comes from."""

    name: str
    source: str
    k: str | None = None
    m: str | None = None


@dataclass(frozen=True)
class Family:
    #: the family its cases carry (Case.family, the first segment of every id); None: the module's
    #: name. Lets one case be found by its id without building every family's grid.
    name: str | None = None
    marks: dict[str, str] = field(default_factory=dict)
    #: onnx.reference OpRun classes the reference backend needs for this family's models
    reference_ops: Sequence[type] = ()
    rows: Sequence[Row] = ()


@dataclass(frozen=True)
class FamilyModule:
    module: str  # the file's stem under cases/
    family: Family
    mod: ModuleType

    @property
    def name(self) -> str:
        return self.family.name or self.module

    def cases(self, grid: str):
        return list(self.mod.cases(grid))


@lru_cache(maxsize=1)
def discover() -> tuple[FamilyModule, ...]:
    """Every module under cases/ that defines `cases`, in file-name order."""
    pkg = importlib.import_module(CASES_PACKAGE)
    out = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{CASES_PACKAGE}.{info.name}")
        if not callable(getattr(mod, "cases", None)):
            continue
        fam = getattr(mod, "FAMILY", None) or Family()
        if not isinstance(fam, Family):
            raise TypeError(f"cases/{info.name}.py: FAMILY must be a harness.families.Family")
        out.append(FamilyModule(info.name, fam, mod))
    return tuple(out)


def module_names() -> list[str]:
    return [f.module for f in discover()]


def get(module: str) -> FamilyModule | None:
    return next((f for f in discover() if f.module == module), None)


def of_case_id(case_id: str) -> list[FamilyModule]:
    """The family modules whose cases' ids start as this one does ("norm/..." -> cases/norms.py)."""
    prefix = case_id.split("/", 1)[0]
    return [f for f in discover() if f.name == prefix]


def family_marks() -> dict[str, str]:
    out: dict[str, str] = {}
    for f in discover():
        out.update(f.family.marks)
    return out


def reference_ops() -> list[type]:
    seen: dict[str, type] = {}
    for f in discover():
        for op in f.family.reference_ops:
            seen.setdefault(op.__name__, op)
    return list(seen.values())


def rows() -> list[Row]:
    return [r for f in discover() for r in f.family.rows]
