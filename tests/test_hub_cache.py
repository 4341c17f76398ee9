"""Issue 24.3 and 24.8: `--zoo hub` reads only files inside the hub cache, never takes a code
file whatever its case, and, when the hub cannot be reached (or HF_HUB_OFFLINE is set and a file
is not cached), gives each hub cell one line at once with the command that fetches it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pydantic
import pytest
import yaml

from harness import backends
from harness.runner import run_cell
from harness.zoo import zoo_cases
from harness.zoo.schema import HubFile

from .test_zoo import REV, hub, twins  # noqa: F401 - fixtures


def _closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_snapshot_link_that_leaves_the_cache_is_an_error_cell_naming_it(hub, tmp_path):  # noqa: F811
    """24.3: the embed entry pins no sha256; its config.json link now points outside the cache.
    Before: the outside file was hashed, recorded as trusted in zoo.lock and the cell passed."""
    cache, zoo = hub
    snap = cache / "models--fixture-org--embed" / "snapshots" / REV
    link = next(p for p in snap.rglob("*") if p.is_symlink() and p.suffix == ".onnx")
    outside = tmp_path / "outside" / link.name
    outside.parent.mkdir()
    shutil.copyfile(link.resolve(), outside)  # the same bytes: only where they live is wrong
    link.unlink()
    os.symlink(outside, link)
    case = next(c for c in zoo_cases("hub") if c.id == "zoo/hub/fixture-embed")
    rec = run_cell(case, backends.get("reference"))
    assert rec["status"] == "error", rec
    assert "leaves the hub cache" in rec["message"] and str(link) in rec["message"] and str(outside) in rec["message"]
    lock = zoo.with_name("zoo.lock")
    assert not lock.exists() or not any(k.endswith(link.name) for k in json.loads(lock.read_text())["files"])


@pytest.mark.parametrize("name", ["modeling_x.PY", "modeling_x.Py", "ext.SO", "x.pyc", "lib.DyLib", "a/b.PYW"])
def test_code_files_are_refused_whatever_their_case(name):
    with pytest.raises(pydantic.ValidationError, match="is code"):
        HubFile(path=name)


def _hub_env(tmp_path, endpoint: str | None, offline: bool) -> dict[str, str]:
    from .test_zoo import _zoo_entry

    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(yaml.safe_dump({"version": 1, "models": [_zoo_entry(name="far-a"), _zoo_entry(name="far-b")]}))
    env = {"ONNX_COMPAT_ZOO": str(zoo), "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1" if offline else "0",
           "HF_HUB_ETAG_TIMEOUT": "60", "HF_HUB_DOWNLOAD_TIMEOUT": "60"}
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return env


@pytest.mark.parametrize("endpoint,offline", [("closed-port", False), ("hub.invalid", False), ("closed-port", True)],
                         ids=["refused", "no-such-host", "offline"])
def test_hub_unreachable_gives_each_hub_cell_one_line_at_once(run_cli, tmp_path, endpoint, offline):
    """24.8: an endpoint on a closed local port, or a host that cannot resolve (RFC 2606 .invalid:
    what an offline machine sees of huggingface.co), or HF_HUB_OFFLINE=1, and an empty cache.
    Before: a host that does not resolve gave "Retrying in Ns" five times per file (~30 lines,
    minutes); a refused port said "(offline)". After: every hub cell `error` at once, one line
    saying why, naming the missing files and the `hf download` command."""
    url = f"http://127.0.0.1:{_closed_port()}" if endpoint == "closed-port" else f"http://{endpoint}"
    env = _hub_env(tmp_path, url, offline)
    t0 = time.monotonic()
    p = run_cli("run", "-m", "zoo", "--zoo", "hub", "--backends", "reference", "--quiet", "--no-report",
                "--out", tmp_path / "out", env=env, timeout=120, check=0)
    took = time.monotonic() - t0
    recs = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    hub_recs = [r for r in recs if r["case_id"].startswith("zoo/hub/")]
    assert {r["case_id"] for r in hub_recs} == {"zoo/hub/far-a", "zoo/hub/far-b"}
    for r in hub_recs:
        assert r["status"] == "error", r
        why = r["message"].splitlines()[-1]
        assert "hf download" in why and "--revision" in why, r["message"]
        assert ("HF_HUB_OFFLINE is set" if offline else "cannot be reached") in why, r["message"]
    assert "Retrying" not in p.stderr + p.stdout
    said = [ln for ln in p.stderr.splitlines() if ln.startswith("zoo/hub/")]
    assert len(said) == 2 and all("hf download" in ln for ln in said), p.stderr
    assert took < 60, f"{took:.0f} s"


def test_a_hub_bundle_copies_no_file_from_outside_the_cache(hub, tmp_path):  # noqa: F811
    """A file beside the graph (where external data would be) that links out of the cache is
    left out of the bundle and named in case.json, not copied."""
    from harness.bundle import write_bundle

    cache, _ = hub
    snap = cache / "models--fixture-org--concat" / "snapshots" / REV
    graph = next(p for p in snap.rglob("*.onnx"))
    secret = tmp_path / "secret.txt"
    secret.write_text("not the hub's")
    os.symlink(secret, graph.with_name(graph.name + ".extra"))
    case = next(c for c in zoo_cases("hub") if c.id == "zoo/hub/fixture-concat")
    dest = write_bundle(case, case.build(), tmp_path / "bundle")
    rel = str(graph.relative_to(snap)) + ".extra"
    assert not (dest / "graphs" / rel).exists()
    assert json.loads((dest / "case.json").read_text())["left_out"]["files"] == [rel]
    assert (dest / "graphs" / graph.relative_to(snap)).exists()
