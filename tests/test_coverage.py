"""The coverage table is read from the operator text and the cases' models; a targeted op that
gains a hole (a case removed, an attribute added to the schema and never exercised) fails here."""

import json
from pathlib import Path

import onnx
import pytest
from onnx import helper

from harness.report.coverage import collect, holes_by_op, table

PINNED = Path(__file__).resolve().parent / "data" / "coverage-holes.json"


def _gqa_node(**attrs):
    n = helper.make_node("GroupQueryAttention", ["q", "k", "v", "", "", "sk", "t"], ["o", "pk"],
                         domain="com.microsoft", num_heads=2, kv_num_heads=1, **attrs)
    g = helper.make_graph([n], "g", [], [])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])


def test_holes_come_from_the_schema_and_the_nodes():
    cov = collect([_gqa_node(do_rotary=1)])
    (c,) = cov.values()
    holes = c.holes()
    assert "attribute do_rotary" not in holes  # given a non-default value
    assert "attribute softcap" in holes  # in the schema, never given
    assert "attribute num_heads" not in holes  # required: never a hole
    assert "input past_key" in holes and "input key" not in holes
    assert "output present_value" in holes and "output present_key" not in holes
    assert c.attributes["local_window_size"]["values"] == ["-1"]  # the default, as the text gives it


@pytest.fixture(scope="module")
def quick_rows():
    from harness.registry import load_cases

    return table([c for c in load_cases("quick") if c.family != "zoo"])


def test_no_targeted_op_gains_a_hole(quick_rows):
    now = holes_by_op(quick_rows)
    pinned = json.loads(PINNED.read_text())
    gained = {op: sorted(set(h) - set(pinned.get(op, []))) for op, h in now.items()}
    gained = {op: h for op, h in gained.items() if h}
    assert not gained, f"new holes in the quick grid's coverage: {gained}"
    closed = {op: sorted(set(h) - set(now.get(op, []))) for op, h in pinned.items()}
    closed = {op: h for op, h in closed.items() if h}
    assert not closed, (f"holes closed (good): re-pin tests/data/coverage-holes.json: {closed} "
                        "(python -m harness.coverage prints them)")


def test_the_report_shows_the_coverage_section_collapsed():
    """`report --coverage GRID` passes these rows to the page: one collapsed section, per op its holes."""
    from harness.report import render
    from tests.test_drafts import grid

    rows = [c.as_dict() for c in collect([_gqa_node(do_rotary=1)]).values()]
    page = render(grid(), coverage=rows, env={"packages": {}})
    section = page[page.index('id="coverage"'):page.index('id="named"')]
    assert section.startswith('id="coverage"><summary>Coverage of the operator text (1 ops, ')
    assert "com.microsoft.GroupQueryAttention" in section and "attribute softcap" in section
    assert '<details class="sec" id="coverage">' in page  # collapsed: no `open`
    assert 'id="coverage"' not in render(grid(), env={"packages": {}})  # absent unless asked for


def test_a_gqa_cases_model_alone_is_its_built_model():
    """Coverage reads `Case.model()`, which for a GQA case stops before the first oracle step: the
    graph must be byte for byte the one `build()` makes (every 20th quick case: each phase,
    buffer and feature family appears among them)."""
    from cases.gqa.grid import cases

    sample = cases("quick")[::20]
    assert len({c.features["phase"] for c in sample}) >= 4
    for c in sample:
        assert c.model_only is not None
        assert c.model_only().SerializeToString() == c.build().model.SerializeToString(), c.id
