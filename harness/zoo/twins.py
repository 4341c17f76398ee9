"""Loading zoo.yaml and twin manifests from disk, and verifying files against their sha256."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from .schema import Manifest, ZooError, ZooFile, one_line

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ZOO = ROOT / "zoo.yaml"


def twins_dir() -> Path:
    """zoo/twins/ of this checkout, or $ONNX_COMPAT_TWINS (tests point it at fixtures)."""
    return Path(os.environ.get("ONNX_COMPAT_TWINS") or ROOT / "zoo" / "twins")


def zoo_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("ONNX_COMPAT_ZOO", DEFAULT_ZOO))


def load_zoo(path: str | os.PathLike | None = None) -> ZooFile:
    path = zoo_path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no zoo file; restore zoo.yaml or set ONNX_COMPAT_ZOO")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ZooError(f"{path}: not YAML ({str(e).splitlines()[0]}); fix the syntax") from None
    try:
        return ZooFile.model_validate(data)
    except ValidationError as e:
        raise one_line(str(path), e, data, "harness/zoo/schema.py") from None


def load_manifest(twin_dir: str | os.PathLike) -> Manifest:
    p = Path(twin_dir) / "manifest.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ZooError(f"{p}: missing; rebuild the twin with `onnx-compat twins build {Path(twin_dir).name}`") from None
    except json.JSONDecodeError as e:
        raise ZooError(f"{p}: not JSON ({e}); rebuild the twin") from None
    try:
        m = Manifest.model_validate(data)
    except ValidationError as e:
        raise one_line(str(p), e, data, "docs/zoo.md") from None
    if m.name != Path(twin_dir).name:
        raise ZooError(f"{p}: name {m.name!r} differs from its folder {Path(twin_dir).name!r}; rename one")
    return m


def manifest_dirs() -> list[Path]:
    d = twins_dir()
    # a dot-folder is a builder's twin being written (temp + rename): not a twin yet
    return sorted(p.parent for p in d.glob("*/manifest.json") if not p.parent.name.startswith(".")) if d.is_dir() else []


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(root: Path, files: dict[str, str], what: str) -> None:
    """Every listed file exists and has its sha256; one line naming the first that does not."""
    for rel, sha in files.items():
        p = root / rel
        if not p.exists():
            raise ZooError(f"{p}: missing ({what}); rebuild or restore it")
        got = sha256_file(p)
        if got != sha:
            raise ZooError(f"{p}: sha256 {got[:12]}… differs from {sha[:12]}… recorded in {what}; "
                           "the file was changed or corrupted: restore it")
