"""Issue 23.5: every zoo twin's bundle says what its matrix cell says, exporter findings included.

Each twin's bundle is written by `onnx-compat export` and its repro.sh run with `onnx` and
`harness` made unimportable (what a maintainer without the project sees); its last line must
be the cell's verdict, computed here by the harness itself. ORT CPU for every twin; tract for
one twin of each of its verdicts (its zoo cells are slow)."""

from __future__ import annotations

import json
import subprocess

import pytest

from harness.backends.ort import OrtCpu
from harness.backends.tract_backend import Tract
from harness.runner import run_cell
from harness.zoo import zoo_cases
from harness.zoo.bundle import LOGITS_MODULE, logits_module_source
from tests.test_bundle import _repro

TWINS = {c.id: c for c in zoo_cases("twins")}
#: tract: an unsupported builder form, a pass and a q4 mismatch (MatMulNBits scales rounded to fp16)
TRACT_TWINS = ["zoo/gemma4-hfexport-fp32", "zoo/gemma3-statickv-irbuilt-fp32", "zoo/gemma3-statickv-irbuilt-q4"]
EXIT = {"pass": 0, "exporter": 0}


def _bundle_says(run_cli, case_id, backend, tmp_path) -> tuple[str, int, str]:
    dest = tmp_path / "b"
    run_cli("export", case_id, "--out", dest, check=0)
    p = _repro(dest, backend, tmp_path)
    assert "must not need" not in p.stderr, p.stderr
    last = (p.stdout.strip().splitlines() or [""])[-1]
    return last.split(" ", 1)[0].lower(), p.returncode, p.stdout + p.stderr


@pytest.mark.parametrize("case_id", sorted(TWINS))
def test_every_twins_bundle_says_what_the_ort_cpu_cell_says(run_cli, tmp_path, case_id):
    want = run_cell(TWINS[case_id], OrtCpu())["status"]
    got, rc, out = _bundle_says(run_cli, case_id, "ort-cpu", tmp_path)
    assert got == want, out
    assert rc == EXIT.get(want, 1), out


@pytest.mark.parametrize("case_id", TRACT_TWINS)
def test_twins_bundle_says_what_the_tract_cell_says(run_cli, tmp_path, case_id):
    pytest.importorskip("tract")
    want = run_cell(TWINS[case_id], Tract())["status"]
    got, rc, out = _bundle_says(run_cli, case_id, "tract", tmp_path)
    assert got == want, out


def test_prefill_graph_presents_are_fed_back_under_their_own_names(run_cli, tmp_path):
    """gemma4-hfexport: the prefill graph names its presents past_key_values.*, the decode graph
    output.past_key_values.*; the old bundle carried only the latter and the decode step lacked
    its pasts (repro.sh said `missing input.past_key_values.*` where the matrix says pass)."""
    dest = tmp_path / "b"
    run_cli("export", "zoo/gemma4-hfexport-fp32", "--out", dest, check=0)
    pairs = json.loads((dest / "case.json").read_text())["pairs"]
    assert pairs["prefill.onnx"][0] == ["input.past_key_values.layers.0.keys", "past_key_values.layers.0.keys"]
    assert pairs["decode.onnx"][0] == ["input.past_key_values.layers.0.keys", "output.past_key_values.layers.0.keys"]


def test_the_bundle_judges_with_the_harness_logit_metrics(run_cli, tmp_path):
    dest = tmp_path / "b"
    run_cli("export", "zoo/phi3-genai-q4", "--out", dest, check=0)
    assert (dest / LOGITS_MODULE).read_text() == logits_module_source()
    assert "from onnx_compat_compare import" in logits_module_source()
    meta = json.loads((dest / "case.json").read_text())
    assert meta["as_exported"] and (dest / "as_exported.npz").exists()


def test_export_names_the_files_it_wrote(run_cli, tmp_path):
    out = run_cli("export", "zoo/qwen25-optimum-fp32", "--out", tmp_path / "b", check=0).stdout
    assert "feeds.npz" in out and "model.onnx" not in out


def test_check_on_a_zoo_bundle_says_how_to_run_it(run_cli, tmp_path):
    dest = tmp_path / "b"
    run_cli("export", "zoo/qwen25-optimum-fp32", "--out", dest, check=0)
    p = run_cli("check", dest, "--backends", "ort-cpu", check=2)
    assert "zoo cell's bundle" in p.stderr and "repro.sh" in p.stderr and "Traceback" not in p.stderr
