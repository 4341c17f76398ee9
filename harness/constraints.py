"""constraints.txt: the exact versions of every package that decides a verdict.

Two runs of one commit must give the same verdicts, so everything that computes a cell (the
runtimes under test, onnx and its reference evaluator, numpy and ml_dtypes, which make the inputs
and the oracle's outputs, the quantiser's onnx_ir) is pinned to one version, and every install
command (README, .ci/run, the nightly) installs with `pip install -c constraints.txt ...`.
Packages that do not decide a verdict (pytest, jinja2, huggingface_hub, ...) stay ranges.

    python -m harness.constraints            # compare the installed versions with the file
    python -m harness.constraints --write    # rewrite the file from the installed versions

`--write` pins what this environment has: install the project (and the extras whose columns
you run) first, then write. A package of the list that is not installed keeps its line.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from importlib import metadata
from pathlib import Path

#: the checkout's constraints.txt (ONNX_COMPAT_CONSTRAINTS names another, for tests)
FILE = Path(os.environ.get("ONNX_COMPAT_CONSTRAINTS") or Path(__file__).resolve().parents[1] / "constraints.txt")

#: what decides a verdict, and why (written into the file beside each pin)
PINNED = {
    "onnxruntime": "the ort-cpu / ort-cpu-noopt columns",
    "onnxruntime-gpu": "the ort-cuda columns (its own venv; the newest GPU wheel can lag the CPU one)",
    "onnxruntime-genai": "the ort-genai column (its own venv)",
    "onnx": "onnx.reference, the reference column and the oracles",
    "tract": "the tract column",
    "openvino": "the openvino column",
    "numpy": "every input, oracle and metric",
    "ml_dtypes": "bfloat16/int4 arrays; 0.6.0: the same verdicts as 0.7.0, and `import onnx` 0.3 s instead of 1.6-2.4 s",
    "onnx_ir": "onnxruntime's MatMulNBits quantiser (quantised op cases)",
}

_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s#;]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read(path: Path = FILE) -> dict[str, str]:
    """package (canonical name) -> pinned version; {} when the file is absent."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _LINE.match(line)
        if m:
            out[canonical(m.group(1))] = m.group(2)
    return out


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def drift(path: Path = FILE) -> dict[str, tuple[str, str]]:
    """Installed packages whose version is not the pinned one: name -> (installed, pinned).
    A package that is not installed is not drift: its column is `unavailable`, not judged."""
    out = {}
    for name, want in read(path).items():
        have = installed(name)
        if have is not None and have != want:
            out[name] = (have, want)
    return out


def drift_lines(path: Path = FILE) -> list[str]:
    """One line per drifted package, for the start of a run."""
    return [f"{name} {have} is installed, {path.name} pins {want}: verdicts may differ from a pinned install "
            f"(pip install -c {path.name} -e .)" for name, (have, want) in sorted(drift(path).items())]


def render(old: dict[str, str]) -> tuple[str, list[str]]:
    """The file's text from the installed versions (a package not installed keeps its old pin)."""
    lines = ["# Exact versions of what decides a verdict (harness/constraints.py says why each is here).",
             "# Used by every install: pip install -c constraints.txt -e \".[dev]\"",
             "# Regenerate from an environment that has them all: python -m harness.constraints --write", ""]
    notes = []
    for name, why in PINNED.items():
        v = installed(name) or old.get(canonical(name))
        if v is None:
            notes.append(f"{name}: not installed and not pinned before; left out")
            continue
        if installed(name) is None:
            notes.append(f"{name}: not installed here; kept the pin {v}")
        lines.append(f"{name}=={v}  # {why}")
    return "\n".join(lines) + "\n", notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.constraints", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite constraints.txt from the installed versions")
    ap.add_argument("--file", type=Path, default=FILE)
    a = ap.parse_args(argv)
    if a.write:
        text, notes = render(read(a.file))
        tmp = a.file.with_name(f".{a.file.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(a.file)
        for n in notes:
            print(f"constraints: {n}", file=sys.stderr)
        print(f"constraints: wrote {a.file.name} ({len(read(a.file))} pins)")
        return 0
    d = drift(a.file)
    for name, (have, want) in sorted(d.items()):
        print(f"{a.file.name}: {name} {have} is installed, {want} is pinned; "
              f"reinstall with pip install -c {a.file.name} -e .", file=sys.stderr)
    if not d:
        print(f"{a.file.name}: every installed pinned package matches")
    return 1 if d else 0


if __name__ == "__main__":
    sys.exit(main())
