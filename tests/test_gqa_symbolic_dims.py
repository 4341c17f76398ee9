"""The GQA single steps with named dims (cases/gqa/grid.py `_symbolic_dims_variants`): the graph
declares the sequence, past and present lengths by name, as real exports do, and is otherwise the
static case's graph; so a column that fails only the static one fails only what no real export
declares (OpenVINO's concatenating past: docs/gqa.md)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cases.gqa.build import build
from cases.gqa.grid import scenarios


def _dims(model, name):
    vi = next(v for v in [*model.graph.input, *model.graph.output] if v.name == name)
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


@pytest.mark.parametrize("grid", ["quick", "full"])
def test_every_variant_is_a_batch_1_concatenating_step_with_its_static_twin_in_the_grid(grid):
    scs = scenarios(grid)
    ids = {sc.case_id() for sc in scs}
    sym = [sc for sc in scs if sc.dims == "symbolic"]
    assert len(sym) >= 3 and all("symdims" in sc.case_id() for sc in sym)
    for sc in sym:
        assert sc.batch == 1 and sc.buffer == "concat" and sc.phase in ("decode", "chunk")
        assert replace(sc, dims="").case_id() in ids, sc.case_id()
        assert "gqa_symbolic_dims" in sc.marks()


def test_the_lengths_are_named_and_everything_else_is_the_static_graph():
    sc = next(sc for sc in scenarios("quick") if sc.dims == "symbolic")
    sym = build(sc, np.random.default_rng(0)).model
    static = build(replace(sc, dims=""), np.random.default_rng(0)).model
    assert _dims(sym, "query")[1] == "S" and _dims(sym, "past_key")[2] == "P" and _dims(sym, "present_key")[2] == "C"
    assert _dims(sym, "output")[1] == "S"
    assert all(isinstance(d, int) for name in ("query", "past_key", "present_key", "output") for d in _dims(static, name))
    assert sym.graph.node[0] == static.graph.node[0]  # same node, same attributes
    for name in ("query", "past_key", "present_key", "output"):  # the named dims stand where the static ones are
        assert len(_dims(sym, name)) == len(_dims(static, name))
