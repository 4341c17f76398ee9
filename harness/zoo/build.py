"""`onnx-compat twins list|build`: what twins ship, and rebuilding them with the real exporters.

A build runs the command its manifest records (`exporter.command`, e.g. `python
zoo/build/statickv_gemma3.py fp32`) with the Python of its exporter environment, made on
demand under .zoo-envs/<env>/ from zoo/envs/<env>.txt and reused while that file is
unchanged (never the project's own .venv: each exporter pins its own transformers). The new
manifest's graph summary (ops, attention nodes, I/O) is then compared with the one before.

What a build runs comes from the project, never from a file a name can point at: NAME must be
one of `twins list`, the script one of zoo/build/*.py and the environment one of zoo/envs/*.txt
(a requirements file can install anything, so it is code too). A manifest's command only
contributes the arguments after its script.
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


def env_python(req: Path, log=None) -> Path:
    """The Python of the exporter environment for requirement file `req`, created if missing or stale."""
    log = log if log is not None else sys.stderr  # looked up per call: pytest swaps sys.stderr
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


def _project_file(rel: str, folder: str, suffix: str, field: str, name: str) -> Path:
    """`rel` as a regular file directly in ROOT/<folder>/ with `suffix`; else one line naming the field."""
    p = ROOT / rel
    ok = (rel.count("/") == folder.count("/") + 1 and rel.startswith(folder + "/") and rel.endswith(suffix)
          and not p.is_symlink() and p.is_file())
    if not ok:
        raise ZooError(f"{name}/manifest.json: exporter.{field} {rel!r} is not one of the project's {folder}/*{suffix}; "
                       f"a build runs only the project's own builders and environments: restore the manifest")
    return p


def build_argv(m: Manifest, name: str, log=None) -> list[str]:
    """The build command: the twin's `exporter.script` (one of zoo/build/*.py) with the arguments
    its `exporter.command` gives it when that command runs the script (the optimum / static-KV /
    Gemma-4 scripts record their own invocation), else `python <script> <name>` (the GenAI twins
    record the builder's command, which the script runs inside). Never any other command."""
    log = log if log is not None else sys.stderr  # looked up per call: pytest swaps sys.stderr
    ex = m.exporter
    if not ex.env or not ex.script:
        raise ZooError(f"{name}/manifest.json: exporter.env and exporter.script are needed to rebuild it")
    script = _project_file(ex.script, "zoo/build", ".py", "script", name)
    req = _project_file(ex.env, "zoo/envs", ".txt", "env", name)
    argv = shlex.split(ex.command or "")
    if not (len(argv) >= 2 and argv[0].startswith("python") and argv[1] == ex.script):
        argv = ["python", ex.script, name]
    argv[0] = str(env_python(req, log))
    argv[1] = str(script.relative_to(ROOT))
    return argv


def twin_names() -> list[str]:
    """The names `twins list` shows: the only names `twins build` accepts."""
    return [d.name for d in manifest_dirs()]


def _known_twin(name: str) -> Path:
    names = twin_names()
    if name not in names:
        raise ZooError(f"twins build {name!r}: not a twin name; choose one of `onnx-compat twins list` "
                       f"({', '.join(names) or 'none'})")
    d = twins_dir() / name
    if d.is_symlink() or (d / "manifest.json").is_symlink():
        raise ZooError(f"{d / 'manifest.json'}: a link; a twin's manifest is a file of the project: restore it")
    return d


def build(name: str, log=None) -> dict:
    log = log if log is not None else sys.stderr  # looked up per call: pytest swaps sys.stderr
    d = _known_twin(name)
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
    names = [args.name] if args.name else twin_names()
    if args.name:
        _known_twin(args.name)
    bad = 0
    for n in names:
        r = build(n)
        note = f"graph summary changed in {', '.join(r['graph_changes'])}" if r["graph_changes"] else "graph summary unchanged"
        bad += bool(r["graph_changes"])
        print(f"{n}: built in {r['seconds']} s, {r['bytes'] / 1024:.0f} KiB, {note}")
    return 1 if bad else 0
