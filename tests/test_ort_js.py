"""The JS ONNX Runtime columns (harness/backends/ort_js.py, js_worker.py, js/): tensors cross the Node boundary
bit for bit, a dead or hung worker costs one cell, refusals keep the runtime's words, and the
web columns load the files transformers.js 4.3 loads."""

from __future__ import annotations

import subprocess
import time

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harness.backends import get
from harness.backends.base import ModelRef, TimedOut, Unsupported
from harness.backends.ort_js import (
    SHAPE_ONLY,
    JsWorker,
    js_dir,
    pack_tensor,
    unpack_tensor,
)
from harness.case import Built, Case
from harness.runner import run_cell

JS_MODES = {"ort-node": "node", "ort-web": "web"}


def _need(name: str) -> None:
    ok, why = get(name, isolated=False).available()
    if not ok:
        pytest.skip(f"{name} unavailable: {why}")


def _tensors() -> dict[str, np.ndarray]:
    """Every dtype the boundary promises, with the values that lose bits first."""
    rng = np.random.default_rng(15)
    f16_bits = np.array([0x7E01, 0xFC00, 0x8000, 0x0001, 0x3C00, 0x7BFF], np.uint16)  # NaN payload, -inf, -0, subnormal
    return {
        "f32": np.array([[np.nan, -0.0, np.inf], [1e-45, -3.4e38, 1 / 3]], np.float32),
        "f64": rng.standard_normal((2, 3)),
        "f16": f16_bits.view(np.float16).reshape(3, 2),
        "i64": np.array([-(2**63), 2**63 - 1, 2**53 + 1, -1], np.int64),
        "u64": np.array([2**64 - 1, 0], np.uint64),
        "i32": np.array([-(2**31), 2**31 - 1], np.int32),
        "i16": np.array([-32768, 7], np.int16),
        "u16": np.array([65535, 1], np.uint16),
        "i8": np.array([-128, 127, 0], np.int8),
        "u8": np.arange(0, 256, 51, dtype=np.uint8),
        "bool": np.array([[True, False, True]]),
        "scalar_f32": np.array(2.5, np.float32),
        "scalar_i64": np.array(-(2**62), np.int64),
        "empty": np.zeros((0, 3), np.float32),
        "i4": np.array([-8, 7, -1, 0, 3], ml_dtypes.int4),  # odd count: half a byte of padding
        "u4": np.array([[15, 0, 9], [1, 2, 8]], ml_dtypes.uint4),
    }


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_int4_packing_is_low_nibble_first():
    desc, data = pack_tensor("x", np.array([1, -2, 3], ml_dtypes.int4))
    assert data == bytes([0xE1, 0x03]) and desc["dtype"] == "int4" and desc["dims"] == [3]
    back = unpack_tensor({**desc, "offset": 0}, memoryview(data))
    assert _same_bits(back, np.array([1, -2, 3], ml_dtypes.int4))


def test_bfloat16_feed_is_unsupported_in_words():
    with pytest.raises(Unsupported, match="no tensor type for bfloat16"):
        pack_tensor("x", np.zeros(2, ml_dtypes.bfloat16))


@pytest.mark.parametrize("name", ["ort-node", "ort-web"])
def test_every_dtype_crosses_the_boundary_bit_for_bit(name):
    """bytes -> ort.Tensor -> bytes in the worker, many tensors in one frame (so offsets into
    the payload are not 0: a view of Node's Buffer pool instead of a copy garbled every feed)."""
    _need(name)
    worker = JsWorker(JS_MODES[name], timeout=60)
    try:
        feeds = _tensors()
        descs, blobs, off = [], [], 0
        for k, v in feeds.items():
            d, b = pack_tensor(k, v)
            descs.append({**d, "offset": off})
            blobs.append(b)
            off += len(b)
        reply, payload = worker.request({"op": "echo", "tensors": descs}, blobs)
        assert reply["ok"], reply
        got = {d["name"]: unpack_tensor(d, payload) for d in reply["tensors"]}
        for k, v in feeds.items():
            assert _same_bits(got[k], v), (k, got[k], v)
    finally:
        worker.close()


@pytest.mark.parametrize("name", ["ort-node", "ort-web", "ort-web-chromium"])
def test_a_frame_larger_than_a_pipe_buffer_arrives_whole(name):
    """4 MiB each way: stdout is a pipe Node may make non-blocking, so a reply larger than its
    64 KiB buffer goes out in pieces; once the relay wrote one piece and dropped the rest."""
    _need(name)
    x = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    backend = get(name, timeout=60)
    try:
        out = backend.prepare(ModelRef(_identity_model({"x": (TensorProto.FLOAT, [1024, 1024])}))).run({"x": x})
    finally:
        backend.close()
    assert _same_bits(out["x_out"], x)


def _identity_model(dtypes: dict[str, tuple[int, list[int]]], opset: int = 21) -> onnx.ModelProto:
    nodes, ins, outs = [], [], []
    for n, (t, shape) in dtypes.items():
        ins.append(helper.make_tensor_value_info(n, t, shape))
        outs.append(helper.make_tensor_value_info(f"{n}_out", t, shape))
        nodes.append(helper.make_node("Identity", [n], [f"{n}_out"]))
    g = helper.make_graph(nodes, "identity", ins, outs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


@pytest.mark.parametrize("name", ["ort-node", "ort-web"])
def test_a_session_returns_its_feeds_unchanged(name):
    """The same values through a real Identity session: what the runtime gets is what was sent."""
    _need(name)
    t = _tensors()
    keep = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16, "i64": TensorProto.INT64, "bool": TensorProto.BOOL,
            "u8": TensorProto.UINT8, "i8": TensorProto.INT8, "scalar_f32": TensorProto.FLOAT,
            "scalar_i64": TensorProto.INT64}
    model = _identity_model({k: (v, list(t[k].shape)) for k, v in keep.items()})
    backend = get(name)
    try:
        out = backend.prepare(ModelRef(model)).run({k: t[k] for k in keep})
    finally:
        backend.close()
    for k in keep:
        assert _same_bits(out[f"{k}_out"], t[k]), k


def _int4_model(direction: str, typ: int) -> onnx.ModelProto:
    """int4 as a graph input (DequantizeLinear-21, scale 1) or as a graph output (QuantizeLinear-21)."""
    q_in, q_out = (typ, TensorProto.FLOAT) if direction == "in" else (TensorProto.FLOAT, typ)
    op = "DequantizeLinear" if direction == "in" else "QuantizeLinear"
    g = helper.make_graph([helper.make_node(op, ["x", "s", "z"], ["y"])], "q",
                          [helper.make_tensor_value_info("x", q_in, [2, 3])], [helper.make_tensor_value_info("y", q_out, [2, 3])],
                          [helper.make_tensor("s", TensorProto.FLOAT, [], [1.0]), helper.make_tensor("z", typ, [], [0])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


@pytest.mark.parametrize("kind,typ", [("i4", TensorProto.INT4), ("u4", TensorProto.UINT4)])
def test_packed_int4_feeds_reach_ort_web(kind, typ):
    _need("ort-web")
    x = np.array([[-8, 7, -1], [0, 3, 5]] if kind == "i4" else [[15, 0, 9], [1, 2, 8]],
                 ml_dtypes.int4 if kind == "i4" else ml_dtypes.uint4)
    backend = get("ort-web")
    try:
        y = backend.prepare(ModelRef(_int4_model("in", typ))).run({"x": x})["y"]
    finally:
        backend.close()
    np.testing.assert_array_equal(y, x.astype(np.float32))


@pytest.mark.parametrize("name,direction,words", [("ort-node", "in", "Tensor.type is not supported: int4"),
                                                  ("ort-web", "out", "unsupported type: int4")])
def test_an_int4_tensor_the_js_api_refuses_is_unsupported(name, direction, words):
    _need(name)
    x = np.array([[-8, 7, -1], [0, 3, 5]], ml_dtypes.int4 if direction == "in" else np.float32)
    case = _case(_int4_model(direction, TensorProto.INT4), {"x": x},
                 {"y": x.astype(np.float32) if direction == "in" else x.astype(ml_dtypes.int4)}, f"js/int4-{direction}")
    backend = get(name)
    try:
        rec = run_cell(case, backend)
    finally:
        backend.close()
    assert rec["status"] == "unsupported" and words in rec["message"], rec


def _case(model: onnx.ModelProto, feeds: dict, expected: dict, cid: str = "js/identity") -> Case:
    built = Built(model, [feeds], [expected])
    return Case(cid, "js", {}, (), "fp32-gather", lambda rng: built)


def _f32_identity_case() -> Case:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    return _case(_identity_model({"x": (TensorProto.FLOAT, [2, 3])}), {"x": x}, {"x_out": x})


@pytest.mark.parametrize("name", ["ort-node", "ort-web"])
@pytest.mark.parametrize("fault,status", [("crash", "crash"), ("hang", "timeout")])
def test_a_dead_or_hung_worker_costs_one_cell(name, fault, status, monkeypatch):
    _need(name)
    backend = get(name, timeout=60.0)
    case = _f32_identity_case()
    try:
        monkeypatch.setenv("ONNX_COMPAT_JS_FAULT", fault)
        backend.prepare(ModelRef(case.build().model))  # a warm worker: only `run` meets the short limit
        backend._worker.timeout = 3.0
        rec = run_cell(case, backend)
        assert rec["status"] == status, rec
        assert ("SIGSEGV" in rec["message"]) if fault == "crash" else ("within 3 s" in rec["message"])
        monkeypatch.delenv("ONNX_COMPAT_JS_FAULT")
        backend._worker.timeout = 60.0  # a fresh worker's first WASM load can take seconds on a busy machine
        again = run_cell(case, backend)
        assert again["status"] == "pass", again  # a fresh worker, the run goes on
    finally:
        backend.close()


@pytest.mark.parametrize("name", ["ort-node", "ort-web"])
def test_a_worker_whose_harness_is_gone_exits(name):
    """A closed stdin (the harness exited without close(), or was killed from outside) ends the
    worker: ort-web's stayed alive, a core busy, once it had made a session (process.exit hung)."""
    _need(name)
    backend = get(name)
    try:
        backend.prepare(ModelRef(_f32_identity_case().build().model))
        proc = backend._worker.proc
        proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} worker still running 20 s after its stdin closed")
    finally:
        backend.close()


def _alive_in_group(pgid: int) -> list[str]:
    """Processes of a group that are not zombies (a container's init may reap them late)."""
    ps = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True, check=True).stdout
    return [p for p, g, st in (ln.split()[:3] for ln in ps.splitlines() if ln.strip()) if g == str(pgid) and not st.startswith("Z")]


def test_a_timeout_kills_chromium_with_its_worker(monkeypatch):
    _need("ort-web-chromium")
    monkeypatch.setenv("ONNX_COMPAT_JS_FAULT", "hang")
    worker = JsWorker("chromium", timeout=3.0)
    try:
        worker.request({"op": "hello"})
        pgid = worker.proc.pid
        assert len(_alive_in_group(pgid)) > 1, "chromium should run in the worker's process group"
        with pytest.raises(TimedOut):
            worker.request({"op": "run", "tensors": []})
        deadline = time.monotonic() + 10
        while (left := _alive_in_group(pgid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == [], f"processes of the killed worker still alive: {left}"
    finally:
        worker.close()


def test_refusal_from_declared_output_shapes_is_named():
    """onnxruntime-web merges inferred and declared shapes strictly; native ORT warns and runs."""
    _need("ort-web")
    model = _identity_model({"x": (TensorProto.FLOAT, [2, 3])})
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 4  # declared [2, 4], inferred [2, 3]
    import onnxruntime

    onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # tolerated
    backend = get("ort-web")
    try:
        with pytest.raises(Exception) as e:
            backend.prepare(ModelRef(model))
        assert str(e.value).startswith(SHAPE_ONLY) and "Can't merge shape info" in str(e.value)
        # a refusal for another reason carries no such flag
        other = _identity_model({"x": (TensorProto.FLOAT, [2, 3])})
        other.graph.node[0].op_type = "NoSuchOp"
        with pytest.raises(Exception) as e2:
            backend.prepare(ModelRef(other))
        assert not str(e2.value).startswith(SHAPE_ONLY) and "NoSuchOp" in str(e2.value)
    finally:
        backend.close()


def test_web_loads_the_bundle_and_binary_transformersjs_uses():
    """`onnxruntime-web/webgpu` -> ort.webgpu.bundle.min.mjs and the asyncify binary; a plain
    import under Node would have picked ort.node.min.mjs (another bundle, another binary)."""
    _need("ort-web")
    plain = subprocess.run(["node", "--input-type=module", "-e", "console.log(import.meta.resolve('onnxruntime-web'))"],
                           cwd=js_dir(), capture_output=True, text=True, check=True).stdout
    assert plain.strip().endswith("dist/ort.node.min.mjs")
    backend = get("ort-web")
    try:
        backend.prepare(ModelRef(_f32_identity_case().build().model))
        loaded = backend._worker.request({"op": "hello"})[0]["loaded"]
    finally:
        backend.close()
    assert "node_modules/onnxruntime-web/dist/ort.webgpu.bundle.min.mjs" in loaded
    wasm = [f for f in loaded if f.endswith(".wasm")]
    assert wasm == ["node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm"], loaded


def test_chromium_loads_the_same_files():
    _need("ort-web-chromium")
    backend = get("ort-web-chromium")
    try:
        backend.prepare(ModelRef(_f32_identity_case().build().model)).run({"x": np.ones((2, 3), np.float32)})
        hello = backend._worker.request({"op": "hello"})[0]
    finally:
        backend.close()
    assert "HeadlessChrome" in hello["userAgent"] and hello["crossOriginIsolated"] is False
    assert "node_modules/onnxruntime-web/dist/ort.webgpu.bundle.min.mjs" in hello["loaded"]
    assert [f for f in hello["loaded"] if f.endswith(".wasm")] == [
        "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm"], hello["loaded"]


def test_unavailable_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("ONNX_COMPAT_JS_DIR", str(tmp_path))
    for name in ("ort-node", "ort-web", "ort-web-chromium"):
        ok, why = get(name, isolated=False).available()
        assert not ok and "onnx-compat install-js" in why
    monkeypatch.setenv("ONNX_COMPAT_NODE", str(tmp_path / "no-node"))
    ok, why = get("ort-node", isolated=False).available()
    assert not ok and "no `node`" in why and "onnx-compat install-js" in why


def _sample_cases(per_family: int = 2) -> list[Case]:
    from harness.registry import load_cases

    out = []
    for fam in ("norms", "rotary", "matmulnbits", "gather_block_quantized", "dequantize"):
        cases = load_cases("quick", families=[fam])
        out += cases[:: max(1, len(cases) // per_family)][:per_family]
    return out


def test_node_and_chromium_give_the_same_bits():
    """ort-web in Node (a) and in headless Chromium (b) load the same bundle and binary: every
    output of a sample of cases across the families must match bit for bit, refusals word for word."""
    _need("ort-web")
    _need("ort-web-chromium")  # CI installs chromium (.ci/run)
    from harness.runner import execute_steps

    node, browser = get("ort-web"), get("ort-web-chromium")
    compared = 0
    try:
        for case in _sample_cases():
            built = case.build()
            model = ModelRef(built.model)
            got = []
            for b in (node, browser):
                try:
                    got.append(execute_steps(b.prepare(model), built))
                except Exception as e:  # noqa: BLE001 - both must fail alike
                    got.append(f"{type(e).__name__}: {e}")
            a, c = got
            if isinstance(a, str) or isinstance(c, str):
                assert a == c, case.id
                continue
            for step_a, step_c in zip(a, c):
                for k in step_a:
                    assert _same_bits(step_a[k], step_c[k]), (case.id, k)
            compared += 1
    finally:
        node.close()
        browser.close()
    assert compared >= 6


def test_install_js_without_npm_says_what_to_install(run_cli, tmp_path):
    proc = run_cli("install-js", env={"PATH": str(tmp_path), "ONNX_COMPAT_NODE": str(tmp_path / "node")})
    assert proc.returncode == 2 and "needs `node` and `npm` on PATH" in proc.stderr


@pytest.mark.parametrize("name", ["ort-node", "ort-web"])
def test_a_refusal_the_operator_text_requires_of_the_cpu_ep_is_conformant(name):
    """Both columns run ORT's CPU EP kernels (natively, or compiled to WASM), so GQA's q/k-norm
    inputs, which the schema says the CPU EP rejects, get `unsupported` as on ort-cpu, not `error`."""
    _need(name)
    from harness.registry import load_cases, select

    case = select(load_cases("quick"), "prefill-rotary-qknorm-b1-qwen2", None)[0]
    backend = get(name)
    try:
        rec = run_cell(case, backend)
    finally:
        backend.close()
    assert rec["status"] == "unsupported" and "required_refusal" in rec["metrics"], rec


def test_no_shape_flag_where_native_ort_refuses_the_model_too(monkeypatch):
    """The flag claims native ORT tolerates the declared shapes; where it does not, no flag."""
    _need("ort-web")
    from harness.backends import ort_js

    monkeypatch.setattr(ort_js, "_native_ort_loads", lambda path: False)
    model = _identity_model({"x": (TensorProto.FLOAT, [2, 3])})
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 4
    backend = get("ort-web")
    try:
        with pytest.raises(Exception) as e:
            backend.prepare(ModelRef(model))
    finally:
        backend.close()
    assert "Can't merge shape info" in str(e.value) and not str(e.value).startswith(SHAPE_ONLY)
