"""GQA q/k norm epsilons: the node carries them, and a backend that ignored the overrides (or
the epsilon altogether) would fail the case: the grid can tell the readings apart."""

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from cases.gqa.grid import scenarios
from cases.gqa.build import make_case
from harness.refops import all_ops
from harness.tolerances import get


def _eps_cases():
    return [make_case(sc) for sc in scenarios("quick") if sc.qknorm_eps]


def _run(model, feeds):
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model, new_ops=all_ops()).run(None, feeds)))


@pytest.mark.parametrize("case", _eps_cases(), ids=lambda c: c.id)
def test_epsilons_are_set_and_matter(case):
    built = case.build()
    node = built.model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    form = case.features["qk_norm_epsilons"]
    assert ("q_norm_epsilon" in attrs and "k_norm_epsilon" in attrs) == (form == "over")
    assert "qk_norm_epsilon" in attrs
    tol = get(case.tolerance)
    got = _run(built.model, built.feeds[0])["output"]
    want = built.expected[0]["output"]
    assert np.allclose(got, want, atol=tol.atol, rtol=tol.rtol)
    # the reading that drops the overrides (or every epsilon) gives a different output
    m = built.model.__class__()
    m.CopyFrom(built.model)
    keep = [a for a in m.graph.node[0].attribute if not a.name.endswith("norm_epsilon")]
    del m.graph.node[0].attribute[:]
    m.graph.node[0].attribute.extend(keep + ([helper.make_attribute("qk_norm_epsilon", attrs["qk_norm_epsilon"])]
                                             if form == "over" else []))
    other = _run(m, built.feeds[0])["output"]
    assert not np.allclose(other, want, atol=tol.atol, rtol=tol.rtol)
