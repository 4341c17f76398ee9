"""`onnx-compat twins list|build`: what twins ship, and rebuilding them with the real exporters.

A build runs the command its manifest records (`exporter.command`, e.g. `python
zoo/build/statickv_gemma3.py fp32`) with the Python of its exporter environment, made on
demand under .zoo-envs/<env>/ from zoo/envs/<env>.txt and reused while that file is
unchanged (never the project's own .venv: each exporter pins its own transformers). The new
manifest's graph summary (ops, attention nodes, I/O) is then compared with the one before.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .schema import Manifest, ZooError
from .twins import ROOT, load_manifest, manifest_dirs, twins_dir, verify_files

ENVS = ROOT / ".zoo-envs"


def twin_rows() -> list[dict]:
    rows = []
    for d in manifest_dirs():
        try:
            m = load_manifest(d)
        except ZooError as e:
            rows.append({"name": d.name, "error": str(e)})
            continue
        size = sum(m.sizes.values()) if m.sizes else sum((d / p).stat().st_size for p in m.files if (d / p).exists())
        rows.append({"name": m.name, "model": m.model, "form": m.form, "precision": m.precision,
                     "exporter": f"{m.exporter.name} {m.exporter.version}", "cache": m.contract.kv.cache,
                     "bytes": size, "reconstruction": bool(m.reconstruction)})
    return rows


def env_python(req: Path, log=sys.stderr) -> Path:
    """The Python of the exporter environment for requirement file `req`, created if missing or stale."""
    if not req.exists():
        raise ZooError(f"{req}: no such requirements file; add it under zoo/envs/")
    env = ENVS / req.stem
    stamp = env / ".requirements.sha256"
    want = hashlib.sha256(req.read_bytes()).hexdigest()
    py = env / "bin" / "python"
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py
    print(f"twins: creating {env} from {req.relative_to(ROOT) if req.is_relative_to(ROOT) else req}", file=log)
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(req)], check=True)
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(want + "\n")
    tmp.replace(stamp)
    return py


def _shape(m: Manifest) -> dict:
    return {g: {"ops": s.ops, "attention": [(a.get("op"), a.get("attrs")) for a in s.attention],
                "inputs": [(i.name, i.dtype) for i in s.inputs], "outputs": [(o.name, o.dtype) for o in s.outputs]}
            for g, s in m.graphs.items()}


def build_argv(m: Manifest, name: str, log=sys.stderr) -> list[str]:
    """The build command: `exporter.command` when it runs the twin's `exporter.script` (the
    optimum / static-KV / Gemma-4 scripts record their own invocation), else `python <script>
    <name>` (the GenAI twins record the builder's command, which the script runs inside)."""
    ex = m.exporter
    if not ex.env or not (ex.command or ex.script):
        raise ZooError(f"{name}/manifest.json: exporter.env and exporter.script (or command) are needed to rebuild it")
    argv = shlex.split(ex.command or "")
    if not (ex.script and len(argv) >= 2 and argv[0].startswith("python") and argv[1] == ex.script):
        if not ex.script:
            if not argv or not argv[0].startswith("python"):
                raise ZooError(f"{name}/manifest.json: exporter.command {ex.command!r} is not a Python command")
        else:
            argv = ["python", ex.script, name]
    argv[0] = str(env_python(ROOT / ex.env, log))
    return argv


def build(name: str, log=sys.stderr) -> dict:
    d = twins_dir() / name
    before = load_manifest(d)
    argv = build_argv(before, name, log)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ZooError(f"twins build {name}: `{shlex.join(argv)}` exited {proc.returncode}: {tail[0]}")
    after = load_manifest(d)
    verify_files(d, after.files, f"{name}/manifest.json")
    changed = [g for g in set(_shape(before)) | set(_shape(after)) if _shape(before).get(g) != _shape(after).get(g)]
    return {"name": name, "seconds": round(seconds, 1), "bytes": sum(after.sizes.values()),
            "graph_changes": sorted(changed)}


def cmd_twins(args) -> int:
    if args.twins_cmd == "list":
        for r in twin_rows():
            if "error" in r:
                print(f"{r['name']:<36} INVALID  {r['error']}")
            else:
                print(f"{r['name']:<36} {r['form']:<28} {r['precision']:<6} {r['cache']:<14} "
                      f"{r['bytes'] / 1024:8.0f} KiB  {r['exporter']}")
        return 0
    names = [args.name] if args.name else [d.name for d in manifest_dirs()]
    if args.name and not (twins_dir() / args.name / "manifest.json").exists():
        known = ", ".join(d.name for d in manifest_dirs()) or "none"
        raise ZooError(f"twins build {args.name}: no zoo/twins/{args.name}/manifest.json (known twins: {known})")
    bad = 0
    for n in names:
        r = build(n)
        note = f"graph summary changed in {', '.join(r['graph_changes'])}" if r["graph_changes"] else "graph summary unchanged"
        bad += bool(r["graph_changes"])
        print(f"{n}: built in {r['seconds']} s, {r['bytes'] / 1024:.0f} KiB, {note}")
    return 1 if bad else 0
