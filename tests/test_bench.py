"""`onnx-compat bench` measures side by side and reports ratios; nothing here asserts a speed."""

import json


def test_bench_reports_ratios_to_the_baseline(run_cli):
    out = run_cli("bench", "-k", "rotary/ms-3d and fp32 and b2s5h4d16", "--backends", "reference,ort-cpu",
                  "--repeat", "1", "--json", check=0)
    data = json.loads(out.stdout)
    rows = {r["backend"]: r for r in data["rows"]}
    assert data["cases_timed_on_every_backend"] > 0
    assert rows["ort-cpu"]["ratio_to_ort-cpu"] == 1.0
    assert rows["reference"]["cells"] == rows["ort-cpu"]["cells"] > 0 and rows["reference"]["total_s"] > 0
