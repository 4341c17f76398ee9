"""The report: hostile strings stay text, shards merge to the unsharded run cell for cell,
the baseline diff lists changes, and the page renders and filters in a real browser."""

import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from harness.report.cells import unpacked
from tests.test_results import rec

HOSTILE = [
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
    "</script><script>alert(2)</script>",
    "it's \"quoted\" & <b>bold</b> \u2028\u2029",
    "x" * 100_000,
]


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_hostile_strings_are_escaped(run_cli, tmp_path):
    lines = []
    for i, msg in enumerate(HOSTILE):
        r = rec(f"evil/<b>case{i}</b>\"'", backend="ort-cpu", status="mismatch")
        r["message"] = msg
        r["features"] = {"<script>k</script>": "<img src=x onerror=alert(3)>"}
        r["backend_version"] = "<svg onload=alert(4)>"
        r["metrics"] = {"max_abs": 1.0, "steps": [{"cosine": 0.5, "nmse": 0.1}, {"cosine": "nan", "nmse": "inf"}]}
        lines.append(json.dumps(r).encode())
    lines.append(json.dumps({**rec("evil/bytes", backend="tract", status="error"), "message": "@@"}).encode()
                 .replace(b"@@", b"\xff\xfe not utf-8 \xc3"))
    res = tmp_path / "results.jsonl"
    res.write_bytes(b"\n".join(lines) + b"\n")
    run_cli("report", res, "--out", tmp_path / "r", check=0)
    page = (tmp_path / "r" / "report.html").read_text()
    p = Tags()
    p.feed(page)
    assert [t for t, _ in p.tags].count("script") == 4  # only the page's own: 3 data blocks + code
    assert not [t for t, a in p.tags if t in ("img", "svg") or any(k.startswith("on") for k in a)]
    blocks = {}
    for block in ("grid-data", "details-data", "drafts-data"):
        data = re.search(rf'<script type="application/gzip-base64" id="{block}">(.*?)</script>', page, re.S).group(1)
        assert re.fullmatch(r"[A-Za-z0-9+/=]+", data)  # base64: nothing in it can close the script tag
        blocks[block] = unpacked(data)
    assert blocks["details-data"]["versions"]["ort-cpu"] == "<svg onload=alert(4)>"  # kept as text, exactly
    decoded = blocks["details-data"]["cells"]
    messages = [c.get("message") for row in decoded.values() for c in row.values()]
    assert HOSTILE[2] in messages
    # the case id is text wherever it shows: escaped in the drafts' bodies, never a tag
    assert any(html.escape("<b>case0</b>") in b for b in blocks["drafts-data"].values())
    assert not any("<b>case0</b>" in b for b in blocks["drafts-data"].values())
    # undecodable bytes become replacement characters, not a crash and not dropped
    assert any("\ufffd" in (m or "") for m in messages)


def test_shards_merge_to_the_unsharded_run(run_cli, tmp_path):
    # 20 norm cases x 3 backends: merging is a property of the files, not of how many cells they hold
    sel = ["-m", "norm and not fp16 and not extracted", "-k", "norm/ and not 2048", "--backends", "reference,ort-cpu,tract",
           "--quiet", "--no-report"]
    run_cli("run", *sel, "--out", tmp_path / "all", check=0)
    for i in (1, 2, 3):
        run_cli("run", *sel, "--shard", f"{i}/3", "--out", tmp_path / f"s{i}", check=0)
    sizes = [len((tmp_path / f"s{i}" / "results.jsonl").read_text().splitlines()) for i in (1, 2, 3)]
    assert all(sizes) and max(sizes) - min(sizes) < sum(sizes) / 2
    run_cli("report", *[tmp_path / f"s{i}" / "results.jsonl" for i in (1, 2, 3)], "--out", tmp_path / "m", check=0)

    def cells(path):
        rows = json.loads(path.read_text())["rows"]
        return {(r["case_id"], b): (c["status"], c["max_abs"]) for r in rows for b, c in r["cells"].items()}

    merged = cells(tmp_path / "m" / "matrix.json")
    run_cli("report", tmp_path / "all" / "results.jsonl", "--out", tmp_path / "a", check=0)
    assert merged == cells(tmp_path / "a" / "matrix.json")
    assert (tmp_path / "m" / "matrix.csv").read_text() == (tmp_path / "a" / "matrix.csv").read_text()
    dup = run_cli("report", tmp_path / "s1" / "results.jsonl", tmp_path / "s1" / "results.jsonl", "--out", tmp_path / "d")
    assert dup.returncode == 2 and "duplicate" in dup.stderr


def test_baseline_diff_lists_changes(run_cli, tmp_path):
    old = tmp_path / "old.jsonl"
    new = tmp_path / "new.jsonl"
    old.write_text("\n".join(json.dumps(r) for r in [rec("a"), rec("b"), rec("c", status="mismatch")]) + "\n")
    new.write_text("\n".join(json.dumps(r) for r in [rec("a", status="mismatch"), rec("b"), rec("c")]) + "\n")
    run_cli("report", new, "--out", tmp_path / "r", "--baseline", old, check=0)
    page = (tmp_path / "r" / "report.html").read_text()
    section = page[page.index('id="diff"'): page.index('id="runs"')]
    assert "New mismatches (1)" in section and "a [reference]: pass → mismatch" in section
    assert "New passes (1)" in section and "c [reference]: mismatch → pass" in section


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs the Debian package)")
        pytest.skip("chromium not installed here (apt-get install chromium); CI installs it")
    return exe


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def dump_dom(exe, url, profile, budget_ms=10_000):
    """The page's DOM once its script has run (virtual time lets the inflating promises settle)."""
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                           "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout


def test_report_renders_and_filters_in_headless_chromium(run_cli, tmp_path):
    exe = _chromium()
    from tests.fake_backends import ALL

    out = tmp_path / "o"
    ran = run_cli("run", "-k", "rotary/ms-3d and fp32", "--backends", "reference,fake-lie,fake-refuse", "--out", out,
                  "--quiet", env={"ONNX_COMPAT_EXTRA_BACKENDS": ALL}, check=0)
    n_bundles = len(list((out / "repro").rglob("case.json")))
    assert n_bundles and re.search(rf"{n_bundles} repro bundle\(s\) of failing cells, \d+ MB, under ", ran.stderr)
    page = out / "report.html"
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    n_rows = len({r["case_id"] for r in recs})
    shot = tmp_path / "shot.png"
    subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'u1'}", "--window-size=1280,900",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000
    dom = dump_dom(exe, page.as_uri() + "#backend=fake-lie&status=mismatch", tmp_path / "u2")
    assert 'data-ready="1"' in dom, "the page's script did not inflate its data"
    assert re.search(rf'id="shown"[^>]*>{n_rows} of {n_rows} rows', dom)  # every row has a fake-lie mismatch
    assert len(re.findall(r'<tr class="row" data-row="\d+"', dom)) == n_rows
    # the cells say what their number is
    assert re.search(r'class="cell st-mismatch"[^>]*>mismatch<span class="num">(NMSE|\|Δ\|) ', dom)
    dom2 = dump_dom(exe, page.as_uri() + "#backend=reference&status=mismatch", tmp_path / "u3")
    assert re.search(rf'id="shown"[^>]*>0 of {n_rows} rows', dom2)
    assert not re.search(r'<tr class="row" data-row="\d+"', dom2)
    lie = next(r for r in recs if r["backend"] == "fake-lie")
    dom3 = dump_dom(exe, page.as_uri() + "#cell=" + lie["case_id"] + "|fake-lie", tmp_path / "u4")
    title = re.search(r'id="d-title">([^<]*)<', dom3).group(1)
    assert title == f"{lie['case_id']} [fake-lie]"
    assert "outside atol" in re.search(r'id="d-message-first">([^<]*)<', dom3).group(1)  # first line first
    assert "fp32-pointwise" in re.search(r'id="d-tol">([^<]*)<', dom3).group(1)
    assert "fake Lying" in re.search(r'id="d-version">([^<]*)<', dom3).group(1)
    repro = html.unescape(re.search(r'id="d-repro">([^<]*)<', dom3).group(1)).splitlines()
    # relative to the page: the bundle beside report.html, found from wherever the page is opened
    assert repro[0] == f"sh repro/{lie['case_id']}/repro.sh fake-lie"
    assert (out / "repro" / lie["case_id"] / "repro.sh").exists()
    assert repro[-1] == f"onnx-compat export {lie['case_id']} --out DIR && sh DIR/repro.sh fake-lie"
    # the details as a person reads them: metrics in a table, each against its bound and by how much
    metrics = _table(re.search(r'<table id="d-metrics">(.*?)</table>', dom3, re.S).group(1))
    assert metrics[0] == ["metric", "value", "bound", "exceeded by"]
    nmse = next(r for r in metrics if r[0] == "NMSE")
    tol = lie["tolerance"]
    assert nmse[2] == "max_nmse " + _fmt(tol["max_nmse"])
    assert nmse[3] == ("×" + _fmt(lie["metrics"]["nmse"] / tol["max_nmse"]) if lie["metrics"]["nmse"] > tol["max_nmse"]
                       else "within")
    feats = re.findall(r"<li><b>([^<]*)</b>: ([^<]*)</li>", re.search(r'<ul id="d-features">(.*?)</ul>', dom3, re.S).group(1))
    assert ("layout", "3d") in feats
    assert re.search(r'id="d-draft"[^>]*>\d{3}-fake-', dom3)  # the cell links to its upstream draft
    # a filter in the URL scrolls the matrix into view
    assert "scrollIntoView" in page.read_text()


def _fmt(v):
    """The page's number format (fmt() in report.html.j2): 4 significant digits, exponent outside 1e-3..1e4."""
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        m, e = f"{v:.2e}".split("e")
        return f"{m}e{int(e):+d}".replace("e+", "e+")
    return f"{float(f'{v:.4g}'):g}"


def _table(body):
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_details_and_drafts_render_as_tables(run_cli, tmp_path):
    """Without a browser: the summary colours by pass fraction, the drafts hold their numbers in
    a table, and the details panel has a table and a list (filled by the page's script)."""
    from tests.test_drafts import grid

    res = tmp_path / "results.jsonl"
    res.write_text("".join(json.dumps(r) + "\n" for r in grid()))
    run_cli("report", res, "--out", tmp_path / "r", check=0)
    page = (tmp_path / "r" / "report.html").read_text()
    p = Tags()
    p.feed(page)
    ids = {a.get("id"): t for t, a in p.tags}
    assert ids["d-metrics"] == "table" and ids["d-features"] == "ul" and ids["d-message-first"] == "p"
    ids = re.findall(r'<details class="draft" id="draft-([^"]+)">', page)
    assert ids == ["001-rt-groupqueryattention-mismatch", "002-rt-groupqueryattention-unsupported"]
    bodies = unpacked(re.search(r'id="drafts-data">(.*?)</script>', page, re.S).group(1))
    drafts = [(i, bodies[i]) for i in ids]
    numbers = _table(re.search(r'<table class="numbers">(.*?)</table>', drafts[0][1], re.S).group(1))
    assert numbers[0] == ["metric", "worst", "typical (median)", "bound"]
    assert numbers[1] == ["nmse", "0.9", "0.5", "max_nmse 1e-08"]
    assert "rt 1.0" in drafts[0][1] and "onnx-compat export gqa/ragged-phi3 --out DIR &amp;&amp; sh DIR/repro.sh rt" in drafts[0][1]
    # a bundle path that exists nowhere here is not offered as a command (nor is any absolute path)
    assert "/abs/repro" not in page


def test_named_rows_name_their_source_not_an_internal_label():
    from harness.families import rows

    declared = rows()
    assert declared
    for r in declared:
        assert not re.search(r"\bseed \d|research|\bprior\b", r.source, re.I), (r.name, r.source)


def test_bundle_paths_are_relative_to_the_report(run_cli, tmp_path, monkeypatch):
    """A run started with --out relative to some directory records relative bundle paths; the
    report, rendered elsewhere, names the bundle beside the results file it read, relative to
    the report's own directory: no absolute path of this machine in what may be published."""
    from tests.test_drafts import cell

    run_dir = tmp_path / "elsewhere" / "out"
    (run_dir / "repro" / "gqa" / "a").mkdir(parents=True)
    (run_dir / "repro" / "gqa" / "a" / "repro.sh").write_text("")
    r = cell("gqa/a", "rt", "mismatch", "wrong", nmse=0.5, repro="out/repro/gqa/a")
    (run_dir / "results.jsonl").write_text(json.dumps(r) + "\n" + json.dumps(cell("gqa/a", "ref", "pass")) + "\n")
    monkeypatch.chdir(tmp_path)
    run_cli("report", run_dir / "results.jsonl", "--out", tmp_path / "rep", "--issues", tmp_path / "iss", check=0)
    want = "../elsewhere/out/repro/gqa/a"
    assert (tmp_path / "rep" / want / "repro.sh").exists()
    cells = json.loads((tmp_path / "rep" / "matrix.json").read_text())["rows"][0]["cells"]
    assert cells["rt"]["repro"] == want
    md = next(p for p in (tmp_path / "iss").iterdir() if p.name != "README.md").read_text()
    assert f"sh {want}/repro.sh rt" in md
    page = (tmp_path / "rep" / "report.html").read_text()
    assert str(tmp_path) not in page and str(tmp_path) not in (tmp_path / "rep" / "matrix.json").read_text()


def test_report_reads_the_gzipped_results_it_publishes(run_cli, tmp_path):
    """reports/latest ships results.jsonl.gz; `report` reads it as it is; a damaged one is one line."""
    import gzip

    from tests.test_drafts import cell

    recs = [cell("gqa/a", "rt", "mismatch", "wrong", nmse=0.5), cell("gqa/a", "ref", "pass")]
    gz = tmp_path / "results.jsonl.gz"
    gz.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in recs).encode()))
    run_cli("report", gz, "--out", tmp_path / "rep", check=0)
    assert "gqa/a,mismatch,pass" in (tmp_path / "rep" / "matrix.csv").read_text().replace("gqa,", "")
    gz.write_bytes(gz.read_bytes()[:-12])
    bad = run_cli("report", gz, "--out", tmp_path / "rep2")
    assert bad.returncode == 2 and "results.jsonl.gz" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "rep2" / "report.html").exists()
