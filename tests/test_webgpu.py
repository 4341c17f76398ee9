"""The two WebGPU columns (harness/backends/webgpu_common.py, webgpu_web.py, ort_webgpu.py): a
cell proves the WebGPU EP ran (a CPU fallback is `unavailable`, never a silent pass), names the
nodes ORT put on the CPU, turns a missing `shader-f16` into `unavailable`, labels a finding on a
software adapter, and `available()` says what to install. The real-device tests skip where
Chromium / the ort-webgpu venv / a WebGPU adapter are missing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harness.backends import get
from harness.backends import ort_webgpu, webgpu_web
from harness.backends.base import Backend, DeviceLacks, ModelRef, Session, Unsupported
from harness.backends.ort_js import js_dir, node_exe
from harness.backends.webgpu_common import SOFTWARE_LABEL, placement_note
from harness.case import Built, Case
from harness.runner import run_cell


def _need(name: str) -> None:
    ok, why = get(name, isolated=False).available()
    if not ok:
        pytest.skip(f"{name} unavailable: {why}")


def _matmul_model(elem: int = TensorProto.FLOAT) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                          [helper.make_tensor_value_info("a", elem, [2, 3]), helper.make_tensor_value_info("b", elem, [3, 4])],
                          [helper.make_tensor_value_info("c", elem, [2, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _matmul_case(dtype=np.float32, expected_scale: float = 1.0) -> Case:
    a = np.arange(6, dtype=dtype).reshape(2, 3)
    b = np.ones((3, 4), dtype)
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    built = Built(_matmul_model(elem), [{"a": a, "b": b}], [{"c": (a.astype(np.float64) @ b * expected_scale).astype(dtype)}])
    return Case(f"webgpu/matmul-{np.dtype(dtype).name}-x{expected_scale:g}", "webgpu", {}, (), "fp32-gather", lambda rng: built)


# ---------------------------------------------------------------------------------------------
# no device needed


def test_a_session_with_no_node_on_webgpu_is_no_webgpu_result():
    """The EP is live but has no kernel for the model's ops (ONNX Attention-23): every node on
    the CPU EP is `unsupported`, never judged as a WebGPU cell."""
    with pytest.raises(Unsupported, match="no kernel for any node.*3 on CPUExecutionProvider \\(MatMul \\(mm\\)\\)"):
        placement_note({"CPUExecutionProvider": {"count": 3, "nodes": ["MatMul (mm)"]}}, "profile")


def test_cpu_placed_nodes_are_named_and_an_all_webgpu_session_has_no_note():
    note = placement_note({"WebGpuExecutionProvider": {"count": 4, "nodes": []},
                           "CPUExecutionProvider": {"count": 1, "nodes": ["Cast (c1)"]}}, "log")
    assert note == "WebGPU EP ran 4 node(s); 1 node(s) on CPUExecutionProvider (Cast (c1)) (log)"
    assert placement_note({"WebGpuExecutionProvider": {"count": 2, "nodes": []}}, "log") == ""


def test_the_native_profile_gives_each_node_its_provider(tmp_path):
    events = [{"cat": "Session", "name": "session_initialization", "args": {}},
              {"cat": "Node", "name": "mm_kernel_time", "args": {"provider": "WebGpuExecutionProvider", "op_name": "MatMul"}},
              {"cat": "Node", "name": "mm_fence_before", "args": {"provider": "WebGpuExecutionProvider", "op_name": "MatMul"}},
              {"cat": "Node", "name": "shape_kernel_time", "args": {"provider": "CPUExecutionProvider", "op_name": "Shape"}},
              {"cat": "Node", "name": "mm_kernel_time", "args": {"provider": "WebGpuExecutionProvider", "op_name": "MatMul"}}]
    p = tmp_path / "profile.json"
    p.write_text(json.dumps(events))
    got = ort_webgpu._placement(str(p))
    assert got == {"WebGpuExecutionProvider": {"count": 1, "nodes": ["MatMul (mm)"]},
                   "CPUExecutionProvider": {"count": 1, "nodes": ["Shape (shape)"]}}
    assert not p.exists()  # the profile is the worker's temp file: removed once read


@pytest.mark.skipif(not node_exe(), reason="no node on PATH")
def test_the_browser_log_parser_reads_ort_node_placements():
    """js/runner.mjs placements(): ORT's verbose log lines as onnxruntime-web prints them."""
    lines = ["2026-01-01 [V:onnxruntime:, session_state.cc:1347 VerifyEachNodeIsAssignedToAnEp] Node placements",
             "2026-01-01 [V:onnxruntime:, session_state.cc:1350 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on "
             "[CPUExecutionProvider]. Number of nodes: 2",
             "2026-01-01 [V:onnxruntime:, session_state.cc:1353 VerifyEachNodeIsAssignedToAnEp]   Cast (c1)",
             "2026-01-01 [V:onnxruntime:, session_state.cc:1353 VerifyEachNodeIsAssignedToAnEp]   Shape ()",
             "2026-01-01 [V:onnxruntime:, session_state.cc:1350 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on "
             "[WebGpuExecutionProvider]. Number of nodes: 1",
             "2026-01-01 [V:onnxruntime:, session_state.cc:1353 VerifyEachNodeIsAssignedToAnEp]   MatMul (mm)"]
    script = (f"import('{(js_dir() / 'runner.mjs').as_uri()}').then(m => "
              f"console.log(JSON.stringify(m.placements({json.dumps(lines)}))))")
    out = subprocess.run([node_exe(), "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert json.loads(out) == {"CPUExecutionProvider": {"count": 2, "nodes": ["Cast (c1)", "Shape ()"]},
                               "WebGpuExecutionProvider": {"count": 1, "nodes": ["MatMul (mm)"]}}


class _Fake(Backend):
    """A backend whose session gives fixed outputs, or raises, with a software-adapter label."""

    name = "fake-webgpu"

    def __init__(self, outputs=None, raises: Exception | None = None):
        self.outputs, self.raises = outputs, raises

    def available(self):
        return True, ""

    def version(self):
        return "fake"

    def prepare(self, model: ModelRef) -> Session:
        fake = self

        class S(Session):
            note = "WebGPU EP ran 1 node(s)"
            finding_label = SOFTWARE_LABEL

            def run(self, feeds):
                if fake.raises is not None:
                    raise fake.raises
                return fake.outputs

        return S()


def test_a_device_limit_is_unavailable_and_never_a_finding():
    rec = run_cell(_matmul_case(), _Fake(raises=DeviceLacks("no shader-f16")))
    assert rec["status"] == "unavailable" and "shader-f16" in rec["message"]


def test_a_mismatch_on_a_software_adapter_says_so_and_a_pass_does_not():
    case = _matmul_case()
    good = case.build().expected[0]
    bad = {"c": good["c"] + 1}
    mismatch = run_cell(case, _Fake(outputs=bad))
    assert mismatch["status"] == "mismatch" and mismatch["message"].startswith(SOFTWARE_LABEL)
    passed = run_cell(case, _Fake(outputs=good))
    assert passed["status"] == "pass" and SOFTWARE_LABEL not in passed["message"]
    assert passed["message"].startswith("WebGPU EP ran")
    error = run_cell(case, _Fake(raises=RuntimeError("kernel broke")))
    assert error["status"] == "error" and error["message"].startswith(SOFTWARE_LABEL)


def test_the_native_f16_refusal_becomes_unavailable():
    class Sess:
        def get_outputs(self):
            return []

        def get_inputs(self):
            return []

        def run(self, *a):
            raise RuntimeError("Status Message: shader_helper.cc:401 GenerateSourceCode Program MatMulNaive requires f16 "
                               "but the device does not support it.")

    s = ort_webgpu.NativeWebgpuSession(Sess(), "test adapter")
    with pytest.raises(DeviceLacks, match="no `shader-f16`.*not a finding"):
        s.run({})


def test_native_unavailable_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("ONNX_COMPAT_WEBGPU_VENV", str(tmp_path / "none"))
    ok, why = get("ort-webgpu", isolated=False).available()
    assert not ok and "onnx-compat install-webgpu" in why
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    monkeypatch.setenv("ONNX_COMPAT_WEBGPU_VENV", str(venv))
    monkeypatch.setenv("ONNX_COMPAT_SWIFTSHADER_DIR", str(tmp_path))
    ok, why = get("ort-webgpu", isolated=False).available()
    assert not ok and "apt-get install chromium" in why and "ONNX_COMPAT_WEBGPU_ADAPTER=system" in why


def test_web_webgpu_unavailable_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("ONNX_COMPAT_JS_DIR", str(tmp_path))
    ok, why = get("ort-web-webgpu", isolated=False).available()
    assert not ok and "onnx-compat install-js" in why
    monkeypatch.delenv("ONNX_COMPAT_JS_DIR")
    monkeypatch.setenv("ONNX_COMPAT_CHROMIUM", str(tmp_path / "no-chromium"))
    if get("ort-web", isolated=False).available()[0]:
        ok, why = get("ort-web-webgpu", isolated=False).available()
        assert not ok and "apt-get install chromium" in why


# ---------------------------------------------------------------------------------------------
# real devices (software adapters here)


def _venv_ready() -> None:
    if not ort_webgpu.venv_python().exists():
        pytest.skip(f"no ort-webgpu venv; run `{ort_webgpu.INSTALL}`")


def test_native_fallback_to_the_cpu_is_detected_not_passed(monkeypatch, tmp_path):
    """No usable Vulkan ICD: ORT creates the session anyway, on the CPU EP; the cell is
    `unavailable`, naming the fallback, not a pass with CPU numbers."""
    _venv_ready()
    bogus = tmp_path / "icd.json"
    bogus.write_text(json.dumps({"file_format_version": "1.0.0", "ICD": {"library_path": str(tmp_path / "none.so"),
                                                                          "api_version": "1.0.5"}}))
    backend = ort_webgpu.OrtWebgpu()
    monkeypatch.setattr(ort_webgpu, "vulkan_env", lambda: {"VK_ICD_FILENAMES": str(bogus), "VK_DRIVER_FILES": str(bogus)})
    try:
        rec = run_cell(_matmul_case(), backend, availability=(True, ""), version="test")
    finally:
        backend.close()
    assert rec["status"] == "unavailable" and "fell back" in rec["message"], rec


@pytest.mark.parametrize("name", ["ort-webgpu", "ort-web-webgpu"])
def test_a_real_cell_passes_on_the_webgpu_ep(name):
    _need(name)
    backend = get(name)
    try:
        rec = run_cell(_matmul_case(), backend)
    finally:
        backend.close()
    assert rec["status"] == "pass", rec
    assert "adapter" in rec["backend_version"]


@pytest.mark.parametrize("name", ["ort-webgpu", "ort-web-webgpu"])
def test_a_real_mismatch_is_found_and_fp16_without_shader_f16_is_unavailable(name):
    """The column judges: a wrong expectation is a mismatch (labelled on a software adapter);
    and an fp16 MatMul on an adapter without shader-f16 is `unavailable`, not an error."""
    _need(name)
    backend = get(name)
    try:
        wrong = run_cell(_matmul_case(expected_scale=2.0), backend)
        f16 = run_cell(_matmul_case(np.float16), backend)
    finally:
        backend.close()
    assert wrong["status"] == "mismatch", wrong
    software = "software" in wrong["backend_version"]
    assert wrong["message"].startswith(SOFTWARE_LABEL) == software
    if "no shader-f16" in f16["backend_version"]:
        assert f16["status"] == "unavailable" and "shader-f16" in f16["message"], f16
    else:
        assert f16["status"] == "pass", f16


def test_the_browser_reports_its_adapter():
    _need("ort-web-webgpu")
    a = webgpu_web.probe_adapter()
    assert "error" not in a and {"vendor", "architecture", "features"} <= set(a), a
    assert isinstance(a["features"], list)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium")
def test_web_webgpu_version_names_the_adapter():
    _need("ort-web-webgpu")
    v = get("ort-web-webgpu", isolated=False).version()
    assert "WebGPU EP" in v and "adapter " in v and "features:" in v


def test_the_main_jobs_subset_is_stable_sampled_and_skips_in_words(monkeypatch):
    from harness.backends.webgpu_common import SUBSET_EVERY, SUBSET_TWINS, subset_skip

    ids = [f"gqa/case-{i}" for i in range(800)]
    monkeypatch.delenv("ONNX_COMPAT_WEBGPU_SUBSET", raising=False)
    assert not any(subset_skip(i, True) for i in ids), "outside the main job every case runs"
    monkeypatch.setenv("ONNX_COMPAT_WEBGPU_SUBSET", "1")
    kept = [i for i in ids if not subset_skip(i, True)]
    assert len(ids) / SUBSET_EVERY * 0.7 < len(kept) < len(ids) / SUBSET_EVERY * 1.3
    assert kept == [i for i in ids if not subset_skip(i, True)]  # the same cases every run
    assert not any(subset_skip(i, False) for i in ids), "a GPU adapter runs everything"
    assert not subset_skip(SUBSET_TWINS[0], True) and "nightly" in subset_skip("zoo/gemma3-optimum-q4", True)
    backend = _Fake(outputs={})
    backend.subset_skip = lambda cid: subset_skip(cid, True)
    dropped = next(i for i in ids if subset_skip(i, True))
    case = Case(dropped, "webgpu", {}, (), "fp32-gather", lambda rng: None)
    rec = run_cell(case, backend)
    assert rec["status"] == "skip" and "ONNX_COMPAT_WEBGPU_SUBSET=0" in rec["message"]


def test_run_json_names_the_webgpu_adapter_as_the_device():
    from harness import runinfo

    info = runinfo.describe({
        "ort-web-webgpu": ("onnxruntime-web 1.31; WebGPU EP; adapter google/swiftshader [software, fallback adapter; "
                           "no shader-f16; features: subgroups]; Chromium 156", "WebGpuExecutionProvider"),
        "ort-webgpu": ("onnxruntime-webgpu 1.27.0; adapter: Vulkan SwiftShader (x) [software; no shader-f16]",
                       "WebGpuExecutionProvider"),
        "ort-cpu": ("onnxruntime 1.32", "CPUExecutionProvider")})["backends"]
    assert info["ort-web-webgpu"]["device"] == ("WebGPU adapter google/swiftshader [software, fallback adapter; "
                                                "no shader-f16; features: subgroups]")
    assert info["ort-webgpu"]["device"] == "WebGPU adapter Vulkan SwiftShader (x) [software; no shader-f16]"
    assert "WebGPU" not in info["ort-cpu"]["device"]
