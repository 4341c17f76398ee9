"""A rebuild reproduces the exporter's files byte for byte and the eager oracle within the zoo's
fp32-logits profile (its bits move with the CPU's kernels: harness/zoo/rebuild.py)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np

from harness.zoo.rebuild import rebuild_differences
from harness.zoo.twins import twins_dir

TWIN = "qwen25-optimum-q4"


def _copy(tmp_path, name):
    d = tmp_path / name
    shutil.copytree(twins_dir() / TWIN, d)
    return d


def _rewrite(d, fname, mutate):
    """Change one file of a twin and record it in its manifest, as a rebuild would."""
    mutate(d / fname)
    m = json.loads((d / "manifest.json").read_text())
    m["files"][fname] = hashlib.sha256((d / fname).read_bytes()).hexdigest()
    (d / "manifest.json").write_text(json.dumps(m))
    return m


def _nudge_oracle(by):
    def mutate(p):
        with np.load(p) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["step0"] = (arrays["step0"] + by).astype(arrays["step0"].dtype)
        np.savez(p, **arrays)
    return mutate


def test_an_identical_rebuild_has_no_difference(tmp_path):
    assert rebuild_differences(twins_dir() / TWIN, _copy(tmp_path, "a")) == []


def test_an_oracle_moved_by_another_cpus_float_noise_is_the_same_twin(tmp_path):
    d = _copy(tmp_path, "a")
    m = _rewrite(d, "oracle.npz", _nudge_oracle(np.float32(1.4e-5)))  # the largest seen across two CPUs
    for k, v in m.get("build_info", {}).items():  # its measurements move with it
        if isinstance(v, float):
            m["build_info"][k] = v * 1.07
    (d / "manifest.json").write_text(json.dumps(m))
    assert rebuild_differences(twins_dir() / TWIN, d) == []


def test_an_oracle_beyond_the_profile_a_changed_graph_and_a_changed_contract_are_named(tmp_path):
    d = _copy(tmp_path, "a")
    _rewrite(d, "oracle.npz", _nudge_oracle(np.float32(1e-2)))
    diffs = rebuild_differences(twins_dir() / TWIN, d)
    assert len(diffs) == 1 and diffs[0].startswith("oracle.npz[step0]: max |Δ| 0.01") and "fp32-logits" in diffs[0]

    d = _copy(tmp_path, "b")
    graph = next(f for f in json.loads((d / "manifest.json").read_text())["files"] if f.endswith(".onnx"))
    _rewrite(d, graph, lambda p: p.write_bytes(p.read_bytes() + b"\0"))
    assert [x.split(":")[0] for x in rebuild_differences(twins_dir() / TWIN, d)] == [graph]

    d = _copy(tmp_path, "c")
    m = json.loads((d / "manifest.json").read_text())
    m["contract"]["position_base"] = 1 - m["contract"].get("position_base", 0)
    m.setdefault("build_info", {})["env_onnxruntime"] = "9.9.9"  # a version is not a measurement
    (d / "manifest.json").write_text(json.dumps(m))
    assert rebuild_differences(twins_dir() / TWIN, d) == ["manifest.json: build_info differs",
                                                          "manifest.json: contract differs"]
