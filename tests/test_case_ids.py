"""Case ids are a contract: baselines and shards are diffed by id, so a refactor of how grids are
declared must leave every op case's id, family, marks and features as they were."""

import json

import pytest

from tests.pin_cases import describe, pinned


@pytest.mark.parametrize("grid", ["quick", "full"])
def test_case_ids_features_and_marks_are_pinned(grid):
    now = describe(grid)
    before = pinned(grid)
    ids_now = [json.loads(x)["id"] for x in now]
    ids_before = [json.loads(x)["id"] for x in before]
    gone = sorted(set(ids_before) - set(ids_now))
    new = sorted(set(ids_now) - set(ids_before))
    assert not gone, f"{len(gone)} pinned case id(s) vanished, e.g. {gone[:3]}"
    assert not new, (f"{len(new)} new case id(s), e.g. {new[:3]}: if cases were added on purpose, "
                     "re-pin with `python -m tests.pin_cases` in the same commit")
    changed = [b for a, b in zip(now, before) if a != b]
    assert ids_now == ids_before, "case order changed (shards and reports follow it)"
    assert not changed, f"{len(changed)} case(s) changed family/marks/features, e.g. {changed[:1]}"
