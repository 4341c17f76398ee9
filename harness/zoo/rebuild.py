"""What a twin's rebuild must reproduce, and how closely.

The files an exporter writes (graphs, external data, configs) come out of a rebuild byte for byte,
on any machine. The eager oracle (`oracle*.npz`) does not: PyTorch's CPU kernels pick their code
path by instruction set (MKL, oneDNN, ATen's AVX2/AVX-512 kernels), and the float32 sums change
with it. Measured on the shape-true twins, an AVX-512 VNNI/AMX Xeon and an AVX-512 EPYC give logits
up to 1.4e-5 apart with top-1 equal everywhere, while one host reproduces its own bits at any
thread count. So a rebuild's oracle is compared with the shipped one under the zoo's own fp32-logits
profile: an oracle that moved less than what the zoo calls float noise gives every cell the same
verdict. The manifest must match but for those oracle files' checksums and the build log's
numbers (`build_info`: measurements of the same eager and ORT runs, which move with them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: the profile an oracle rebuilt on another CPU must stay within (harness/tolerances.py)
ORACLE_PROFILE = "fp32-logits"


def is_oracle_file(name: str) -> bool:
    return Path(name).name.startswith("oracle") and name.endswith(".npz")


def _numbers_only_differ(a, b) -> bool:
    """True when a and b have the same structure and non-numeric values (numbers may differ)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_numbers_only_differ(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_numbers_only_differ(x, y) for x, y in zip(a, b))
    return a == b


def _oracle_differences(name: str, shipped: Path, rebuilt: Path) -> list[str]:
    from ..compare import tensor_metrics
    from ..tolerances import get

    tol = get(ORACLE_PROFILE)
    with np.load(shipped) as a, np.load(rebuilt) as b:
        if sorted(a.files) != sorted(b.files):
            return [f"{name}: arrays {sorted(b.files)}, shipped {sorted(a.files)}"]
        out = []
        for k in a.files:
            x, y = a[k], b[k]
            if x.shape != y.shape or x.dtype != y.dtype:
                out.append(f"{name}[{k}]: {y.dtype}{list(y.shape)}, shipped {x.dtype}{list(x.shape)}")
                continue
            if x.dtype.kind != "f":
                if not np.array_equal(x, y):
                    out.append(f"{name}[{k}]: integer values differ")
                continue
            m = tensor_metrics(y, x, tol)
            if m["bad"] or m["nmse"] > tol.max_nmse:
                out.append(f"{name}[{k}]: max |Δ| {m['max_abs']:.3g}, NMSE {m['nmse']:.3g}: beyond {ORACLE_PROFILE}")
        return out


def rebuild_differences(shipped_dir: Path, rebuilt_dir: Path) -> list[str]:
    """Every way a rebuilt twin differs from the shipped one beyond what the CPU may change, one
    line each ([] when the rebuild reproduces it)."""
    old = json.loads((shipped_dir / "manifest.json").read_text())
    new = json.loads((rebuilt_dir / "manifest.json").read_text())
    out = []
    if sorted(old["files"]) != sorted(new["files"]):
        out.append(f"files {sorted(new['files'])}, shipped {sorted(old['files'])}")
    for name in sorted(set(old["files"]) & set(new["files"])):
        if is_oracle_file(name):
            out += _oracle_differences(name, shipped_dir / name, rebuilt_dir / name)
        elif old["files"][name] != new["files"][name]:
            out.append(f"{name}: sha256 {new['files'][name][:12]}…, shipped {old['files'][name][:12]}…")
    for key in sorted(set(old) | set(new)):
        if key == "files":
            continue
        a, b = old.get(key), new.get(key)
        if key == "build_info" and _numbers_only_differ(a, b):
            continue
        if a != b:
            out.append(f"manifest.json: {key} differs")
    return out
