"""One discovery for every consumer: a family module dropped into cases/ is run by `onnx-compat
run`, listed by `list`, collected by pytest and declares its own marks, reference ops and rows."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import families, registry
from harness.marks import all_marks

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_under_cases_is_a_discovered_family():
    on_disk = sorted([p.stem for p in (ROOT / "cases").glob("*.py") if not p.name.startswith("_")]
                     + [p.parent.name for p in (ROOT / "cases").glob("*/__init__.py")])
    assert registry.module_names() == on_disk
    listed = {c.family for c in registry.load_cases("quick")}
    for fm in families.discover():
        assert fm.cases("quick"), f"cases/{fm.module}.py yields no quick case"
    # every family's cases reach the CLI's selection (what `run` and `list` use)
    assert len(listed) == len(on_disk)


def test_a_new_family_module_is_found_with_its_marks_and_rows(tmp_path, monkeypatch):
    pkg = tmp_path / "newcases"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "widget.py").write_text(textwrap.dedent('''
        from harness.families import Family, Row
        FAMILY = Family(marks={"widget": "a test family"}, rows=[Row("Widgets", "a test", m="widget")])
        def cases(grid):
            return []
    '''))
    (pkg / "_helpers.py").write_text("def cases(grid):\n    raise AssertionError('private modules are not families')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(families, "CASES_PACKAGE", "newcases")
    families.discover.cache_clear()
    try:
        assert families.module_names() == ["widget"]
        assert families.family_marks() == {"widget": "a test family"}
        assert [r.name for r in families.rows()] == ["Widgets"]
    finally:
        families.discover.cache_clear()


def test_pytest_collects_exactly_the_cases_run_would_run():
    n_run = len(registry.select(registry.load_cases("quick"), m="norm or rotary"))
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "cases", "--backend", "reference",
                          "-m", "norm or rotary", "-p", "no:randomly"], cwd=ROOT, capture_output=True, text=True)
    collected = [ln for ln in out.stdout.splitlines() if "::" in ln]
    assert len(collected) == n_run, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.mark.parametrize("k, m, expect", [
    ("GEMMA3 and win512", "gqa_rotary", True),      # -k is a case-insensitive substring match
    ("gemma3 and not win512", None, False),
    (None, "gqa_rotary and (gqa_decode or fp16)", True),
    (None, "not gqa", False),
    ("gemma4g or gemma3", "gqa", True),
])
def test_selection_means_what_pytest_k_and_m_mean(k, m, expect):
    keep = registry.selector(k, m)
    assert keep("gqa/decode-rotary-win512-b1-gemma3-h4kv1-d256-s1-past600-fp32", ("gqa", "gqa_rotary", "gqa_decode")) is expect


def test_unknown_marks_and_bad_expressions_are_one_line_errors():
    with pytest.raises(registry.SelectionError, match="unknown mark 'gqa_decod'"):
        registry.selector(None, "gqa_decod")
    with pytest.raises(registry.SelectionError, match="is not a valid expression"):
        registry.selector("gqa and", None)


def test_family_marks_are_declared_by_their_modules():
    marks = all_marks()
    assert "gqa_decode" in marks and "matmulnbits" in marks and "fp16" in marks


def test_a_row_naming_a_mark_no_case_carries_matches_nothing_instead_of_failing():
    """Zoo form marks exist only while their twins do (ONNX_COMPAT_TWINS may point elsewhere)."""
    keep = registry.selector(None, "zoo_no_such_form or gqa_rotary", check_marks=False)
    assert keep("gqa/x", ("gqa_rotary",)) and not keep("zoo/y", ("zoo",))
    with pytest.raises(registry.SelectionError):
        registry.selector(None, "zoo_no_such_form")


def test_every_case_id_starts_with_its_family_modules_declared_name():
    """`find_case` builds only the family an id names ("norm/..." -> cases/norms.py): that holds
    only while every case of a module carries the family name its FAMILY declares."""
    from harness import families

    for f in families.discover():
        for grid in ("quick", "full"):
            wrong = [c.id for c in f.cases(grid) if c.family != f.name or not c.id.startswith(f.name + "/")]
            assert not wrong, f"cases/{f.module}: {wrong[:3]} do not start with {f.name!r}/"


def test_find_case_builds_only_the_family_the_id_names(monkeypatch):
    from harness import families, registry

    built = []
    real = registry.family_cases
    monkeypatch.setattr(registry, "family_cases", lambda m, g: built.append(m) or real(m, g))
    case = registry.find_case("norm/simplified-axis-1-2x5x64-centred-fp32", "quick")
    assert case.family == "norm" and built == ["norms"]
    with pytest.raises(KeyError, match="unknown case id 'norm/nope'"):
        registry.find_case("norm/nope", "quick")
    assert families.of_case_id("zoo/x")[0].module == "zoo"
