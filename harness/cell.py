"""The cell: one (case, backend) result, typed, with its JSON form (the line of results.jsonl).

The keys are the file contract scripts rely on (README "Commands"); the types are checked where
cells enter or leave a file, so a hand-edited or foreign results line is refused in one line
naming what is wrong instead of failing deep inside the report.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .verdict import Status


class Cell(BaseModel):
    model_config = ConfigDict(extra="ignore")

    case_id: str = Field(min_length=1)
    family: str = ""
    features: dict[str, Any] = {}
    marks: list[str] = []
    backend: str = Field(min_length=1)
    backend_version: str = ""
    status: Status
    metrics: dict[str, Any] = {}
    tolerance: dict[str, Any] | None = None
    message: str = ""
    seconds: float = 0.0
    repro: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.case_id, self.backend

    def record(self) -> dict[str, Any]:
        """The JSON object of results.jsonl: exactly the contract's keys, in its order."""
        d = self.model_dump(mode="json")
        return {k: d[k] for k in KEYS}


KEYS = tuple(Cell.model_fields)


class CellError(ValueError):
    """A record that is not a cell; the message names the field."""


def parse(record: Any) -> Cell:
    try:
        return Cell.model_validate(record)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"]) or "record"
        raise CellError(f"{field}: {first['msg']}") from None
