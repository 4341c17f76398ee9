"""GQA position_ids beyond P + s (R6): per-entry offsets and gaps. On a first prompt the case
carries the other "first element" reading (each row's) and the reading the sentence rules out
(every id) where they change the answer; on a past it carries none (the sentence speaks of the
first prompt only)."""

import numpy as np

from cases.gqa.build import first_element_positions, make_case, position_grid
from cases.gqa.grid import scenarios
from cases.gqa.scenario import Scenario
from harness import readings


def test_position_forms():
    sc = Scenario("edge1", "decode", past=(3, 8), qlen=(2, 2), pos_form="gaps")
    assert position_grid(sc, [3, 8], 2).tolist() == [[3, 5], [9, 11]]
    sc = Scenario("edge1", "decode", past=(3, 8), qlen=(2, 2), pos_form="rowoffset")
    assert position_grid(sc, [3, 8], 2).tolist() == [[7, 8], [16, 17]]
    assert position_grid(Scenario("edge1", "decode"), [3, 8], 2).tolist() == [[3, 4], [8, 9]]
    p = np.array([[0, 2, 4], [1, 3, 5]])
    assert first_element_positions(p, "row").tolist() == [[0, 1, 2], [1, 2, 3]]
    assert first_element_positions(p, "tensor").tolist() == [[0, 1, 2], [0, 1, 2]]
    assert first_element_positions(p, "every").tolist() == p.tolist()


def test_alternates_only_on_a_first_prompt():
    scs = [s for s in scenarios("quick") if s.pos_form]
    assert {s.pos_form for s in scs} == {"gaps", "rowoffset"} and any(s.past for s in scs)
    for sc in scs:
        built = make_case(sc).build()
        names = set(built.alternates)
        if sc.past:
            assert not names & {readings.POS_FIRST_OF_ROW, readings.POS_FIRST_OF_TENSOR}, sc.case_id()
            continue
        assert readings.POS_FIRST_OF_ROW in names, sc.case_id()
        assert readings.POS_FIRST_OF_TENSOR not in names, sc.case_id()  # the chosen reading (R6)
        carried = {**built.alternates, **built.excluded}
        for name in carried:
            assert readings.find_reading(name)[0].id == "R6"
            alt = carried[name][0]
            assert any(not np.allclose(alt[k], built.expected[0][k], atol=1e-3) for k in alt), (sc.case_id(), name)
