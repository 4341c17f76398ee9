"""Schemas of zoo.yaml entries and twin manifests (docs/zoo.md), strict on purpose.

Unknown keys are refused (a typo must not silently drop a contract field), paths stay inside
their repository or twin folder, revisions are full commits, and nothing may ask for remote
code. Errors are one line naming the file, the entry and the field.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SHA256 = r"^[0-9a-f]{64}$"
REVISION = r"^[0-9a-f]{40}$"
NAME = r"^[a-z0-9][a-z0-9._-]*$"


class ZooError(ValueError):
    """A zoo file, manifest or download is not usable; the message is one line with the fix."""

    #: the runner shows the message alone, not a traceback: it is about the user's files
    user_facing = True


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_remote_code(cls, data: Any) -> Any:
        if isinstance(data, dict) and "trust_remote_code" in data:
            raise ValueError("trust_remote_code is never allowed: onnx-compat runs no code from a model repo")
        return data


def check_rel_path(p: str) -> str:
    """A path inside a repository or twin folder: relative, forward slashes, no '..'."""
    if not p or "\\" in p or p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        raise ValueError(f"{p!r} must be a relative path with forward slashes")
    if any(part in ("..", "") for part in p.split("/")):
        raise ValueError(f"{p!r} must not contain '..' or empty parts")
    return p


RelPath = str


class Graphs(Strict):
    decoder: RelPath
    embed: RelPath | None = None
    prefill: RelPath | None = None

    @field_validator("decoder", "embed", "prefill")
    @classmethod
    def _paths(cls, v):
        return None if v is None else check_rel_path(v)

    def all(self) -> list[str]:
        return [p for p in (self.embed, self.prefill, self.decoder) if p]


CacheKind = Literal["concat", "shared_buffer", "sliding_window", "static"]
ExtraRule = Literal["zero", "one", "seq_length", "past_length", "total_length"]


class KV(Strict):
    past: str = "past_key_values.{i}.{kv}"
    present: str = "present.{i}.{kv}"
    #: the prefill graph's present names, where they differ from the decode graph's
    #: (transformers' own exporter: "past_key_values.layers.{i}.{kv}s" vs "output.…")
    prefill_present: str | None = None
    count: int = Field(ge=0)
    layout: Literal["BNSH", "BSNH"] = "BNSH"
    heads: int | list[int]
    head_dim: int | list[int]
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    cache: CacheKind = "concat"
    max_length: int | None = Field(default=None, ge=1)
    window: int | None = Field(default=None, ge=1)
    #: sliding_window: the KV pairs with window-sized buffers (the others get max_length
    #: buffers, as the builder's global layers do); None reads it from the graph (the pasts
    #: that feed a GroupQueryAttention with sliding_window_cache=1)
    window_layers: list[int] | None = None

    @model_validator(mode="after")
    def _consistent(self):
        for field in ("past", "present", "prefill_present"):
            name = getattr(self, field)
            if name is not None and ("{i}" not in name or "{kv}" not in name):
                raise ValueError(f"kv.{field} {name!r} must contain {{i}} and {{kv}}")
        for field in ("heads", "head_dim"):
            v = getattr(self, field)
            if isinstance(v, list) and len(v) != self.count:
                raise ValueError(f"kv.{field} lists {len(v)} values for {self.count} KV pairs")
        if self.cache in ("shared_buffer", "static") and not self.max_length:
            raise ValueError(f"kv.cache {self.cache} needs kv.max_length (the buffer length)")
        if self.cache == "sliding_window" and not self.window:
            raise ValueError("kv.cache sliding_window needs kv.window (the buffer length)")
        return self

    def per_pair(self, field: str, i: int) -> int:
        v = getattr(self, field)
        return v[i] if isinstance(v, list) else v


class Contract(Strict):
    """What the decode loop needs to drive an export (docs/zoo.md, "The I/O contract")."""

    graphs: Graphs
    input_ids: str = "input_ids"
    attention_mask: str | None = "attention_mask"
    #: total: [B, past + new] ones (what optimum, TJS and GenAI feed); buffer: [B, max_length]
    #: with the valid prefix set (some static-cache forms)
    attention_mask_length: Literal["total", "buffer"] = "total"
    position_ids: str | None = "position_ids"
    position_base: Literal[0, 1] = 0
    cache_position: str | None = None
    extra_inputs: dict[str, ExtraRule] = Field(default_factory=dict)
    kv: KV
    logits: str = "logits"

    @model_validator(mode="after")
    def _static(self):
        if self.kv.cache == "static" and not self.cache_position:
            raise ValueError("kv.cache static needs cache_position (the input that says where rows go)")
        if self.attention_mask_length == "buffer" and not self.kv.max_length:
            raise ValueError("attention_mask_length buffer needs kv.max_length")
        return self


class Exporter(Strict):
    name: str
    version: str
    command: str | None = None
    env: RelPath | None = None
    script: RelPath | None = None

    @field_validator("env", "script")
    @classmethod
    def _paths(cls, v):
        return None if v is None else check_rel_path(v)


class IOSpec(Strict):
    name: str
    dtype: str
    shape: list[int | str | None] | None


class GraphSummary(Strict):
    """What zoo/build/common.py graph_summary() records for one .onnx file."""

    opsets: dict[str, int] = Field(default_factory=dict)
    ir_version: int | None = None
    ops: dict[str, int]
    attention: list[dict[str, Any]] = Field(default_factory=list)
    quantized: list[dict[str, Any]] = Field(default_factory=list)
    inputs: list[IOSpec]
    outputs: list[IOSpec]


class Tokens(Strict):
    batch: int = Field(ge=1)
    prompt: list[list[int]]
    decode: list[list[int]]

    @model_validator(mode="after")
    def _shapes(self):
        if len(self.prompt) != self.batch or len({len(r) for r in self.prompt}) != 1 or not self.prompt[0]:
            raise ValueError(f"tokens.prompt must hold {self.batch} non-empty rows of one length")
        for i, step in enumerate(self.decode):
            if len(step) != self.batch:
                raise ValueError(f"tokens.decode[{i}] must hold one token per batch row ({self.batch})")
        return self


class AsExported(Strict):
    """Eager changed the way the exporter changed the model (a window it drops, say): what the
    export computes, so a backend that runs the export faithfully is told from one that does not."""

    file: RelPath
    what: str

    @field_validator("file")
    @classmethod
    def _path(cls, v):
        return check_rel_path(v)


class Oracle(Strict):
    kind: Literal["torch-eager"]
    file: RelPath = "oracle.npz"
    dtype: Literal["float32"] = "float32"
    weights: str = ""
    as_exported: AsExported | None = None

    @field_validator("file")
    @classmethod
    def _path(cls, v):
        return check_rel_path(v)


class Checkpoint(Strict):
    class_: str = Field(alias="class")
    seed: int
    transformers: str
    torch: str
    config: dict[str, Any] | None = None


class Manifest(Strict):
    """zoo/twins/<name>/manifest.json: one twin, written by its build script."""

    name: str = Field(pattern=NAME)
    model: str
    form: str = Field(pattern=NAME)
    precision: str
    exporter: Exporter
    reconstruction: str | None = None
    checkpoint: Checkpoint
    files: dict[RelPath, str]
    sizes: dict[RelPath, int] = Field(default_factory=dict)
    graphs: dict[RelPath, GraphSummary]
    contract: Contract
    tokens: Tokens
    oracle: Oracle
    #: what the builder measured about its own oracle (eager cached vs full max |Δ|,
    #: quantisation error of the weights loaded back, exporter warnings): kept for the record
    build_info: dict[str, Any] = Field(default_factory=dict)
    notes: str | None = None

    @field_validator("files")
    @classmethod
    def _files(cls, v):
        for p, sha in v.items():
            check_rel_path(p)
            if not re.match(SHA256, sha):
                raise ValueError(f"files[{p!r}]: sha256 must be 64 lowercase hex digits")
        return v

    @model_validator(mode="after")
    def _covers(self):
        extra = [self.oracle.as_exported.file] if self.oracle.as_exported else []
        for g in self.contract.graphs.all() + [self.oracle.file] + extra:
            if g not in self.files:
                raise ValueError(f"{g!r} is used by the contract/oracle but not listed in files with its sha256")
        return self


#: files that are code: never fetched from a model repo (compared lower-cased)
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyw", ".pyd", ".so", ".dll", ".dylib")


class HubFile(Strict):
    path: RelPath
    sha256: str | None = Field(default=None, pattern=SHA256)
    bytes: int | None = Field(default=None, ge=0)

    @field_validator("path")
    @classmethod
    def _path(cls, v):
        if v.lower().endswith(CODE_SUFFIXES):  # case-insensitive: modeling_x.PY is code too
            raise ValueError(f"{v!r} is code: onnx-compat fetches and runs no code from a model repo")
        return check_rel_path(v)


class ZooModel(Strict):
    """One zoo.yaml entry: a real export on the hub, pinned, and the twins that stand for it."""

    name: str = Field(pattern=NAME)
    repo: str
    revision: str | None = Field(default=None, pattern=REVISION)
    #: why no full revision is known (e.g. "a58439f… short hash only; resolve online");
    #: `--zoo hub` refuses such an entry instead of guessing
    unresolved: str | None = None
    subfolder: RelPath | None = None
    form: str = Field(pattern=NAME)
    precision: str
    exporter: Exporter
    files: list[HubFile]
    contract: Contract
    twins: list[str] = Field(default_factory=list)
    #: the twins (of `twins`) whose attention geometry is the hub model's (issue 22); the
    #: rest shrink it. harness/zoo/geometry.py compares them with `geometry` / `hub_attention`
    shape_true: list[str] = Field(default_factory=list)
    #: the hub model's attention-shaping config (heads, head sizes, window, full layers, RoPE,
    #: softcaps, KV sharing), keys as harness/zoo/geometry.py config_geometry() reads a config
    geometry: dict[str, Any] | None = None
    #: attributes of the hub graph's attention nodes by layer kind (`sliding` / `full`)
    hub_attention: dict[Literal["sliding", "full"], dict[str, Any]] | None = None
    #: the logits profile (harness/tolerances.py) when the precision alone does not say it,
    #: e.g. int8act-logits for MatMulNBits accuracy_level 4 exports
    tolerance: str | None = None
    notes: str | None = None

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, v):
        if v is not None:
            from ..tolerances import PROFILES

            if v not in PROFILES or not v.endswith("-logits"):
                raise ValueError(f"{v!r} is not a logits profile; use one of "
                                 f"{', '.join(p for p in PROFILES if p.endswith('-logits'))}")
        return v

    @field_validator("repo")
    @classmethod
    def _repo(cls, v):
        if not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", v) or ".." in v:
            raise ValueError(f"{v!r} must be a hub repo id org/name without '..' or backslashes")
        return v

    @field_validator("subfolder")
    @classmethod
    def _sub(cls, v):
        return None if v is None else check_rel_path(v)

    @model_validator(mode="after")
    def _pinned(self):
        if bool(self.revision) == bool(self.unresolved):
            raise ValueError("give exactly one of revision (a 40-hex commit) or unresolved (why it is not known)")
        if not self.files:
            raise ValueError("files: list every file the model needs (external data included)")
        if not set(self.shape_true) <= set(self.twins):
            raise ValueError(f"shape_true {sorted(set(self.shape_true) - set(self.twins))} must also be in twins")
        listed = {f.path for f in self.files}
        for g in self.contract.graphs.all():
            if g not in listed:
                raise ValueError(f"contract graph {g!r} is not listed in files")
        return self

    def hub_path(self, path: str) -> str:
        return f"{self.subfolder}/{path}" if self.subfolder else path


class ZooFile(Strict):
    version: Literal[1]
    models: list[ZooModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self):
        names = [m.name for m in self.models]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"model names must be unique; repeated: {sorted(dup)}")
        return self


def one_line(source: str, e: ValidationError, data: Any = None, hint: str = "") -> ZooError:
    """The first validation error as `<file>: <entry>: <field>: <why>`, naming the entry by name."""
    err = e.errors()[0]
    loc = list(err["loc"])
    where = ".".join(str(x) for x in loc) or "(top level)"
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int) and isinstance(data, dict):
        try:
            name = data["models"][loc[1]].get("name")
        except (AttributeError, IndexError, KeyError, TypeError):
            name = None
        if name:
            where = f"model {name!r}: " + (".".join(str(x) for x in loc[2:]) or "(entry)")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = f"unknown key (allowed keys are in {hint or 'docs/zoo.md'})"
    return ZooError(f"{source}: {where}: {msg}")
