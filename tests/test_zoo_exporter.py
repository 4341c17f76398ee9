"""A twin whose exporter changed the model carries a second oracle (eager changed the same way):
a backend that runs the export faithfully is `exporter` (the exporter's finding, not the
backend's), one that matches neither oracle is still a `mismatch`, and one that matches eager passes."""

import numpy as np
import pytest

from harness.tolerances import get
from harness.zoo.decode import ZooDriver


@pytest.fixture
def driver():
    rng = np.random.default_rng(0)
    eager = [rng.standard_normal((1, 4, 32)).astype(np.float32) for _ in range(3)]
    exported = [e + np.float32(2.0) * (np.arange(32) == i % 32) for i, e in enumerate(eager)]
    contract = type("C", (), {"logits": "logits"})()
    d = ZooDriver(contract, None, [], eager, "torch eager (oracle.npz)", as_exported=(exported, "drops a window"))
    return d, eager, exported


def test_matching_eager_passes(driver):
    d, eager, _ = driver
    j = d.judge([{"logits": e} for e in eager], get("fp32-logits"))
    assert j.passed and j.status is None


def test_matching_the_export_as_exported_is_an_exporter_cell(driver):
    d, _, exported = driver
    j = d.judge([{"logits": e} for e in exported], get("fp32-logits"))
    assert not j.passed and j.status == "exporter" and j.metrics["matches_export"] == "drops a window"


def test_matching_neither_is_still_a_mismatch(driver):
    d, eager, _ = driver
    j = d.judge([{"logits": e - 3.0} for e in eager], get("fp32-logits"))
    assert not j.passed and j.status is None
