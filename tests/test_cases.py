import subprocess
import sys

import numpy as np
import pytest

from harness import tolerances
from harness.backends import names as backend_names
from harness.case import seed_for
from harness.marks import all_marks
from harness.registry import SelectionError, load_cases, select


@pytest.fixture(scope="module")
def quick():
    return load_cases("quick")


def test_ids_are_unique_and_readable(quick):
    ids = [c.id for c in quick]
    assert len(ids) == len(set(ids))
    for c in quick:
        assert c.id.startswith(c.family + "/"), c.id
        assert " " not in c.id and "[" not in c.id


def test_every_case_has_registered_marks_and_a_known_profile(quick):
    for c in quick:
        assert set(c.marks) <= set(all_marks()), c.id
        tolerances.get(c.tolerance)


def test_profiles_have_reasons_and_are_never_named_after_a_backend():
    for name, p in tolerances.PROFILES.items():
        assert len(p.reason) > 40, name
        assert not any(b in name for b in backend_names()), name


def test_seed_depends_on_the_id_only_across_processes():
    cid = "rotary/ms-3d-interleaved1-rotdim8-b2s5h4d16-fp32"
    out = subprocess.run([sys.executable, "-c", f"from harness.case import seed_for; print(seed_for({cid!r}))"],
                         capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert int(out.stdout) == seed_for(cid)
    assert seed_for(cid) != seed_for(cid + "x")


def test_same_case_builds_the_same_bytes_twice(quick):
    case = next(c for c in quick if c.family == "rotary")
    a = case.make(np.random.default_rng(case.seed))
    b = case.make(np.random.default_rng(case.seed))
    for k in a.feeds[0]:
        assert a.feeds[0][k].tobytes() == b.feeds[0][k].tobytes()
    assert a.model.SerializeToString() == b.model.SerializeToString()


def test_selection_by_k_and_m(quick):
    norms = select(quick, m="norm")
    assert norms and all("norm" in c.marks for c in norms)
    fp16_rot = select(quick, k="rotary and fp16")
    assert fp16_rot and all("rotary" in c.id and "fp16" in c.id for c in fp16_rot)
    assert not set(c.id for c in select(quick, m="norm and not fp16")) & set(c.id for c in select(quick, m="fp16"))


@pytest.mark.parametrize("kw", [{"m": "no_such_mark"}, {"m": "norm and"}, {"k": "(rotary"}])
def test_bad_selection_is_a_clear_error(quick, kw):
    with pytest.raises(SelectionError) as e:
        select(quick, **kw)
    assert ("-m" in str(e.value)) or ("-k" in str(e.value))


def test_families_cover_the_issue_minimum(quick):
    fams = {c.family for c in quick}
    assert {"norm", "rotary", "onnx_node"} <= fams
    ops = {c.features.get("op") for c in quick}
    assert {"simplified", "rms23", "skipsimplified", "com.microsoft.RotaryEmbedding", "ai.onnx.RotaryEmbedding-23"} <= ops
    assert any(c.features.get("input") == "largemean" for c in quick)
