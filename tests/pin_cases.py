"""Write tests/data/cases-<grid>.jsonl.gz: the op-case ids (with family, marks and features) that
test_case_ids.py pins. Run it only when a change adds or removes cases on purpose:

    python -m tests.pin_cases
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def describe(grid: str) -> list[str]:
    from harness.registry import load_cases

    return [json.dumps({"id": c.id, "family": c.family, "marks": sorted(c.marks), "features": dict(c.features)},
                       sort_keys=True, default=str)
            for c in load_cases(grid) if c.family not in ("zoo", "extracted")]  # twins come and go with zoo/twins/


def pinned(grid: str) -> list[str]:
    with gzip.open(DATA / f"cases-{grid}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [line for line in f.read().splitlines() if line]


def main() -> None:
    DATA.mkdir(exist_ok=True)
    for grid in ("quick", "full"):
        with gzip.GzipFile(DATA / f"cases-{grid}.jsonl.gz", "wb", mtime=0) as f:
            f.write(("\n".join(describe(grid)) + "\n").encode())


if __name__ == "__main__":
    main()
