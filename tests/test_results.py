import json
import os

import pytest

from harness.results import RECORD_KEYS, ResultsError, ResultsWriter, atomic_write_text, merge, read_results


def rec(cid, backend="reference", status="pass"):
    return {"case_id": cid, "family": "f", "features": {}, "marks": [], "backend": backend, "backend_version": "v",
            "status": status, "metrics": {}, "tolerance": {}, "message": "", "seconds": 0.0, "repro": None}


def test_writer_appends_exactly_the_design_keys(tmp_path):
    with ResultsWriter(tmp_path / "results.jsonl", resume=False) as w:
        w.append({**rec("a"), "extra": 1})
    line = json.loads((tmp_path / "results.jsonl").read_text())
    assert tuple(line) == RECORD_KEYS


def test_existing_results_need_resume(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_text(json.dumps(rec("a")) + "\n")
    with pytest.raises(FileExistsError, match="--resume"):
        ResultsWriter(p, resume=False)


def test_resume_drops_a_partial_last_line(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_text(json.dumps(rec("a")) + "\n" + json.dumps(rec("b"))[:30])
    with ResultsWriter(p, resume=True) as w:
        assert w.done == {("a", "reference")}
        w.append(rec("b"))
    assert [r["case_id"] for r in read_results(p)] == ["a", "b"]


def test_atomic_write_leaves_no_temp_file_and_keeps_old_content_on_failure(tmp_path):
    p = tmp_path / "matrix.csv"
    atomic_write_text(p, "old")

    class Boom(str):
        def encode(self, *a):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_text(p, Boom("new"))
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["matrix.csv"]


def test_merge_rejects_a_cell_present_in_two_files_naming_both(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(rec("x")) + "\n")
    b.write_text(json.dumps(rec("x", status="mismatch")) + "\n")
    with pytest.raises(ResultsError) as e:
        merge([a, b])
    assert "conflicting" in str(e.value) and str(a) in str(e.value) and str(b) in str(e.value)


def test_not_results_is_a_clear_error(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text("hello\n{}\n")
    with pytest.raises(ResultsError, match="r.jsonl:1"):
        read_results(p)


def test_status_policy_is_one_table():
    from harness.verdict import ALL_STATUSES, SEVERITY, Status, worst

    assert sorted(s.value for s in SEVERITY) == sorted(ALL_STATUSES)  # every status ranked once
    assert [s for s in Status if s.acceptable] == [Status.PASS, Status.AMBIGUOUS, Status.EXPORTER]
    assert {s.pytest_outcome for s in Status} == {"pass", "warn", "skip", "fail"}
    assert Status.UNSUPPORTED.pytest_outcome == "skip" and Status.CRASH.pytest_outcome == "fail"
    assert not Status.AMBIGUOUS.finding and not Status.UNSUPPORTED.finding and Status.TIMEOUT.finding
    assert worst(["pass", "unsupported", "pass"]) is Status.UNSUPPORTED
    assert worst(["ambiguous", "mismatch", "crash"]) is Status.CRASH
    assert worst([]) is None


def test_a_line_with_a_mistyped_field_is_refused_naming_the_field(tmp_path):
    good = {"case_id": "a/b", "family": "a", "features": {}, "marks": [], "backend": "ort-cpu",
            "backend_version": "x", "status": "pass", "metrics": {}, "tolerance": None, "message": "",
            "seconds": 0.1, "repro": None}
    p = tmp_path / "results.jsonl"
    p.write_text(json.dumps({**good, "marks": "gqa"}) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ResultsError, match=r"results.jsonl:1: marks: "):
        read_results(p)


def test_the_writer_writes_exactly_the_contract_keys_in_order(tmp_path):
    from harness.cell import KEYS

    assert KEYS == ("case_id", "family", "features", "marks", "backend", "backend_version", "status", "metrics",
                    "tolerance", "message", "seconds", "repro")


def test_a_cells_message_carries_no_path_of_the_machine_that_ran_it():
    """ORT names the model file it failed to load; the words go into committed reports and upstream
    drafts. The checkout's root is dropped (paths stay readable, relative to it) and this harness's
    temp directories become TMP; other paths (a user's own file) are kept."""
    import tempfile
    from types import SimpleNamespace

    from harness.case import Case
    from harness.cell_run import _record
    from harness.verdict import Status
    from tests.conftest import ROOT

    tmp = tempfile.gettempdir()
    msg = (f"Load model from {ROOT}/zoo/twins/x/model.onnx failed; "
           f"{tmp}/onnx-compat-run-a1/onnx-compat-model-b2/model.onnx; /home/u/mine.onnx")
    case = Case("norm/x", "norm", {}, (), "fp32-pointwise", lambda rng: None)
    rec = _record(case, SimpleNamespace(name="ort-cpu"), Status.ERROR, None, msg, 0.0, "v")
    assert rec["message"] == "Load model from zoo/twins/x/model.onnx failed; TMP/model.onnx; /home/u/mine.onnx"
