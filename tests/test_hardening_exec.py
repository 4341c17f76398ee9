"""`twins build` runs nothing from outside the project (issue 24, item 1): the name is one of
`twins list`, the script one of zoo/build/*.py, the environment one of zoo/envs/*.txt. A
manifest a name can point at (`../x`) or one that names another command or file is refused,
in one line, before anything runs."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from harness.zoo import ZooError

from .test_zoo_fixture_twins import make_twin


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root (one builder, one environment, made already so nothing is installed), a
    twins folder with one real twin, and an 'evil' twin folder beside it, outside zoo/twins/."""
    from harness import case as case_mod
    from harness.zoo import build

    root = tmp_path / "proj"
    (root / "zoo" / "envs").mkdir(parents=True)
    (root / "zoo" / "build").mkdir(parents=True)
    req = root / "zoo" / "envs" / "empty.txt"
    req.write_text("# nothing\n")
    (root / "zoo" / "build" / "fixture_build.py").write_text("print('built')\n")
    envs = tmp_path / "zoo-envs"
    for stem in ("empty", "README"):  # each file it could be pointed at has a made environment: nothing installs
        (envs / stem / "bin").mkdir(parents=True)
        (envs / stem / "bin" / "python").symlink_to(sys.executable)
    (envs / "empty" / ".requirements.sha256").write_text(hashlib.sha256(req.read_bytes()).hexdigest() + "\n")
    (root / "README.md").write_text("not a requirements file\n")
    (envs / "README" / ".requirements.sha256").write_text(hashlib.sha256(b"not a requirements file\n").hexdigest())
    monkeypatch.setattr(build, "ROOT", root)
    monkeypatch.setattr(build, "ENVS", envs)
    twins = tmp_path / "twins"
    make_twin(twins, "concat")
    evil = make_twin(tmp_path, "concat", name="evil")  # tmp_path/evil: what `twins build ../evil` reaches
    monkeypatch.setenv("ONNX_COMPAT_TWINS", str(twins))
    case_mod._CACHE.clear()
    return root, twins, evil, build


def _exporter(d: Path, **fields) -> None:
    p = d / "manifest.json"
    m = json.loads(p.read_text())
    m["exporter"].update(fields)
    p.write_text(json.dumps(m))


def test_twins_build_refuses_a_name_outside_the_twins_list(project, tmp_path, monkeypatch):
    root, twins, evil, build = project
    pwned = tmp_path / "PWNED"
    _exporter(evil, env="zoo/envs/empty.txt", script=None,
              command=f"python -c \"open({str(pwned)!r}, 'w').write('x')\"")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZooError, match=r"'\.\./evil': not a twin name; choose one of .*fixture-concat"):
        build.cmd_twins(type("A", (), {"twins_cmd": "build", "name": "../evil"})())
    assert not pwned.exists(), "the manifest's command ran"
    with pytest.raises(ZooError, match="not a twin name"):
        build.build(os.path.relpath(evil, twins))


@pytest.mark.parametrize("fields, what", [
    ({"script": None, "command": "python -c \"print('x')\""}, "exporter.env and exporter.script are needed"),
    ({"script": "zoo/build/../../x.py"}, "exporter.script"),
    ({"script": "README.md"}, "exporter.script 'README.md' is not one of the project's zoo/build/"),
    ({"env": "README.md"}, "exporter.env 'README.md' is not one of the project's zoo/envs/"),
])
def test_twins_build_runs_only_the_projects_scripts_and_environments(project, fields, what):
    root, twins, _, build = project
    d = twins / "fixture-concat"
    base = {"env": "zoo/envs/empty.txt", "script": "zoo/build/fixture_build.py",
            "command": "python zoo/build/fixture_build.py"}
    _exporter(d, **{**base, **fields})
    with pytest.raises(ZooError, match=what.replace("(", r"\(").replace(".", r"\.")):
        build.build("fixture-concat")


def test_a_listed_twin_with_the_projects_script_builds(project):
    root, twins, _, build = project
    _exporter(twins / "fixture-concat", env="zoo/envs/empty.txt", script="zoo/build/fixture_build.py",
              command="python zoo/build/fixture_build.py")
    assert build.build("fixture-concat")["graph_changes"] == []
