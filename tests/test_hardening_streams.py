"""Output streams are looked up when a function runs, never bound as a default argument when its
module is imported: a default `log=sys.stderr` keeps whatever stream was current at import (under
pytest, an earlier test's capture), so messages vanish from the caller's stderr. CI caught this
once: `zoo.lock: recorded sha256 …` reached pytest's global capture but not the test's capsys."""

import ast
from pathlib import Path

from tests.conftest import ROOT


def _stream_defaults(path: Path, root: Path = ROOT) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for d in node.args.defaults + [k for k in node.args.kw_defaults if k is not None]:
                if (isinstance(d, ast.Attribute) and d.attr in ("stderr", "stdout")
                        and isinstance(d.value, ast.Name) and d.value.id == "sys"):
                    bad.append(f"{path.relative_to(root)}:{d.lineno}: default sys.{d.attr}")
    return bad


def test_no_function_binds_sys_stderr_or_stdout_as_a_default():
    files = [p for top in ("harness", "cases") for p in (ROOT / top).rglob("*.py")] + [ROOT / "conftest.py"]
    assert len(files) > 50
    bad = [b for f in files for b in _stream_defaults(f)]
    assert not bad, "look the stream up inside the function (log=None, then log or sys.stderr):\n" + "\n".join(bad)


def test_the_check_sees_a_bound_default(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import sys\ndef f(x, log=sys.stderr):\n    pass\ndef g(*, out=sys.stdout):\n    pass\n"
                 "def h(log=None):\n    log = log or sys.stderr\n")
    assert _stream_defaults(p, tmp_path) == ["m.py:2: default sys.stderr", "m.py:4: default sys.stdout"]
