"""zoo.yaml: the schema of zoo entries, and the cases they turn into.

An entry names a real export on the Hugging Face hub at a pinned revision, with the SHA-256
of every file it needs, and how to build its twin locally. Until twins are built the file
holds no models and the zoo contributes no cases.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from .case import Case

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "zoo.yaml"


class HubFile(BaseModel):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ZooModel(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str = Field(pattern=r"^[0-9a-f]{40}$", description="a full commit hash: never a branch")
    files: list[HubFile]
    export_form: str
    exporter: str = ""
    inputs: list[str] = []
    outputs: list[str] = []
    twin: dict = {}
    marks: list[str] = []

    @field_validator("files")
    @classmethod
    def _need_files(cls, v):
        if not v:
            raise ValueError("list the files the model needs, each with its sha256")
        return v


class ZooFile(BaseModel):
    version: Literal[1]
    models: list[ZooModel]


class ZooError(ValueError):
    pass


def load_zoo(path: str | os.PathLike | None = None) -> ZooFile:
    path = Path(path or os.environ.get("ONNX_COMPAT_ZOO", DEFAULT_PATH))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no zoo file; restore zoo.yaml or set ONNX_COMPAT_ZOO")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return ZooFile.model_validate(data)
    except yaml.YAMLError as e:
        raise ZooError(f"{path}: not YAML ({e}); fix the syntax") from None
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ZooError(f"{path}: {loc}: {first['msg']}; see the schema in harness/zoo.py") from None


def zoo_cases(mode: str = "twins") -> list[Case]:
    zoo = load_zoo()
    if not zoo.models:
        return []
    raise ZooError("zoo twins are not built yet by this version of onnx-compat; run with --zoo none")
