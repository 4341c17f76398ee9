"""Case ids are a contract: baselines and shards are diffed by id, so a refactor of how grids are
declared must leave every op case's id, family, marks and features as they were."""

import json

import pytest

from tests.pin_cases import describe, pinned


@pytest.mark.parametrize("grid", ["quick", "full"])
def test_case_ids_features_and_marks_are_pinned(grid):
    now = describe(grid)
    before = pinned(grid)
    ids_now = [json.loads(x)["id"] for x in now]  # families may come in any order; within one, pinned
    ids_before = [json.loads(x)["id"] for x in before]
    gone = sorted(set(ids_before) - set(ids_now))
    new = sorted(set(ids_now) - set(ids_before))
    assert not gone, f"{len(gone)} pinned case id(s) vanished, e.g. {gone[:3]}"
    assert not new, (f"{len(new)} new case id(s), e.g. {new[:3]}: if cases were added on purpose, "
                     "re-pin with `python -m tests.pin_cases` in the same commit")
    def by_family(lines):
        out = {}
        for x in lines:
            out.setdefault(json.loads(x)["family"], []).append(x)
        return out

    now_f, before_f = by_family(now), by_family(before)
    for fam, rows in before_f.items():
        assert [json.loads(x)["id"] for x in now_f.get(fam, [])] == [json.loads(x)["id"] for x in rows], \
            f"the order of {fam!r} cases changed (reports follow it)"
        changed = [b for a, b in zip(now_f[fam], rows) if a != b]
        assert not changed, f"{len(changed)} {fam} case(s) changed marks/features, e.g. {changed[:1]}"
