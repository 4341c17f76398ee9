"""The report at scale: a synthetic results file (harness/report/synth.py) through `report`
stays small per cell and modest in memory, the page opens a cell's details (they load on
demand from the compressed blob) in headless Chromium, and the zoo grid is the first screen.
The 100 000-cell numbers are measured by `python -m harness.report.bench` (a benchmark, not a
test); this keeps CI to a few thousand cells."""

import json
import re
import resource
import subprocess
import sys

import pytest

from harness.report import synth
from tests.conftest import ROOT
from tests.test_report import FLAGS, _chromium, dump_dom

N_CELLS = 6000
#: report.html may grow by this much per cell (10 MB for 100 000 cells is the budget; the page
#: itself, CSS and script, is the fixed part)
BYTES_PER_CELL = 100
FIXED_BYTES = 400_000
#: `report` on N_CELLS: the interpreter and its imports (~100 MB) plus what the cells cost; the
#: code before the report package needed well over this per cell (1.34 GB for 100 000)
MAX_RSS_MB = 250


def _report(tmp_path, results, out):
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child of a large pytest
    # worker would report the worker's size (it failed so in a full -n 2 run); VmHWM is this process's
    script = ("import sys\nfrom harness.cli import main\nrc = main(sys.argv[1:])\n"
              "hwm = next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')).split()[1]\n"
              "print('maxrss_kb', hwm)\nsys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", script, "report", str(results), "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return int(re.search(r"maxrss_kb (\d+)", p.stdout).group(1)) // 1024


def test_a_large_results_file_makes_a_small_page_whose_details_open(tmp_path):
    results = synth.write(tmp_path / "results.jsonl.gz", N_CELLS)
    out = tmp_path / "rep"
    rss_mb = _report(tmp_path, results, out)
    page = out / "report.html"
    size = page.stat().st_size
    assert size <= FIXED_BYTES + BYTES_PER_CELL * N_CELLS, f"{size} bytes for {N_CELLS} cells"
    assert rss_mb <= MAX_RSS_MB, f"report took {rss_mb} MB for {N_CELLS} cells"
    # every cell is in the matrix files, whole
    assert json.loads((out / "matrix.json").read_text())["cells"] == N_CELLS
    exe = _chromium()
    cells = [r for r in synth.records(N_CELLS) if r["status"] == "mismatch"]
    last = cells[-1]  # far down the matrix: not among the rows drawn first, its details still open
    dom = dump_dom(exe, page.as_uri() + "#cell=" + last["case_id"] + "|" + last["backend"], tmp_path / "u")
    assert 'data-ready="1"' in dom
    assert re.search(r'id="d-title">([^<]*)<', dom).group(1) == f"{last['case_id']} [{last['backend']}]"
    assert re.search(r'id="d-status">([^<]*)<', dom).group(1) == "mismatch"
    assert "outside atol" in re.search(r'id="d-message-first">([^<]*)<', dom).group(1)
    shown = re.search(r'id="shown"[^>]*>(\d+) of (\d+) rows \(first (\d+) drawn\)', dom)
    assert shown and int(shown.group(2)) == len({r["case_id"] for r in synth.records(N_CELLS)})
    assert int(shown.group(3)) < int(shown.group(2))  # drawn a page at a time


def _zoo_grid():
    """The quick grid's shape: 24 hub-model exports, 12 columns, and some op cells."""
    out = []
    for i, (model, form) in enumerate([(m, f) for m in ("gemma3-1b", "gemma3-270m", "gemma4-e2b-transformers-export",
                                                        "qwen2.5-0.5b", "phi3-mini-4k-genai-cpu-int4", "gemma3-1b-gqa")
                                       for f in ("optimum-decomposed", "ortgenai-gqa-fused-rotary-windowed",
                                                 "transformers-export-multi-token-decode-ort-cpu-fused", "statickv")]):
        for r in synth.records(len(synth.BACKENDS), seed=i):
            out.append({**r, "case_id": f"zoo/{model}-{form}", "family": "zoo",
                        "features": {"model": model, "form": form, "precision": "q4" if i % 2 else "fp32"},
                        "metrics": {"top1": 1.0, "kl": 1e-9, "nmse": 1e-7} if r["status"] == "mismatch" else r["metrics"]})
    out += [r for r in synth.records(600, seed=99) if r["family"] != "zoo"]
    return out


def test_the_zoo_grid_is_the_first_screen(tmp_path):
    exe = _chromium()
    res = tmp_path / "results.jsonl"
    recs = _zoo_grid()
    res.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "rep"
    _report(tmp_path, res, out)
    page = out / "report.html"
    dom = dump_dom(exe, page.as_uri(), tmp_path / "u", budget_ms=8000)
    # the window the issue names: the whole grid, every column, inside 1400x900 (dump-dom's
    # default window is smaller; the box is measured in a 1400-wide one below)
    shot = tmp_path / "first-screen.png"
    subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'u2'}", "--window-size=1400,900",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000
    wide = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'u3'}", "--window-size=1400,900",
                           "--virtual-time-budget=8000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120).stdout
    box = re.search(r'data-zoo-box="(\d+)x(\d+)"', wide)
    assert box, "the page did not measure its zoo grid"
    right, bottom = int(box.group(1)), int(box.group(2))
    assert right <= 1400 and bottom <= 900, f"zoo grid ends at {right}x{bottom}"
    # and it is the grid of every export and column, graded
    assert len(re.findall(r'<td class="g g-', dom)) == 24 * len(synth.BACKENDS)
    assert dom.index('id="zoo-title"') < dom.index('id="families-title"') < dom.index('id="drafts-sec"')
    assert re.search(r'<details class="sec" id="drafts-sec">', dom)  # collapsed below


def test_a_passing_zoo_cell_with_low_top1_says_top1_is_not_judged():
    """A pass under int8act-logits can have top-1 0.00 (a random twin's near-tied logits): the grid
    once showed "✓ top-1 0.00", which reads as a contradiction. It names what was judged."""
    from harness.report.cells import zoo_grade

    grade, text, full = zoo_grade("pass", {"top1": 0.0, "kl": 2e-4, "nmse": 4e-4})
    assert grade == "agree" and text.startswith("NMSE 0.0004") and "top-1 0.00 (not judged)" in text
    assert "not judged" in full
    grade, text, _ = zoo_grade("pass", {"top1": 1.0, "kl": 2e-9, "nmse": 1e-12})
    assert grade == "agree" and "top-1" not in text and "not judged" not in text
    assert zoo_grade("mismatch", {"top1": 0.5, "kl": 1.0, "nmse": 0.9})[0] == "differ"
