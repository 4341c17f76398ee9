"""The teacher-forced decode loop, driven by an export's I/O contract (docs/zoo.md).

A prefill of the fixed prompt, then one step per decode token. The tokens always come from
the manifest, never from the backend's argmax, so one wrong step cannot cascade into the
next. The loop only uses `prepare(ModelRef(path))` and `session.run(feeds)` with concrete
shapes, so it runs on every backend (ORT, tract, the reference, later GenAI / web runtimes).

Per cache kind, what is bound as past at step 0 and fed back afterwards:
- concat: an empty past [B, H, 0, D]; each step's present (past ++ new) is the next past.
- shared_buffer: one zeroed [B, H, max_length, D] buffer bound as past; the graph writes the
  new rows into it and returns it as present, which is bound again; attention_mask (total
  length) says how many rows are valid.
- sliding_window: a zeroed [B, H, window, D] buffer; the op evicts inside it; present is
  bound again.
- static: a zeroed [B, H, max_length, D] buffer updated by index at `cache_position`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from ..backends.base import Crashed, DeviceLacks, ModelRef, Session, TimedOut, Unsupported
from .schema import Contract, Tokens

ONNX_TO_NP = {onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32, onnx.TensorProto.FLOAT: np.float32,
              onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.BOOL: np.bool_, onnx.TensorProto.UINT8: np.uint8}
KV_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class InputSpec:
    dtype: type
    rank: int


def graph_inputs(path: Path) -> dict[str, InputSpec]:
    """Input names, element types and ranks of a graph (initialisers excluded), without its weights."""
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    out = {}
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        if t.elem_type == onnx.TensorProto.BFLOAT16:
            import ml_dtypes

            dt = ml_dtypes.bfloat16
        else:
            dt = ONNX_TO_NP.get(t.elem_type, np.float32)
        out[vi.name] = InputSpec(dt, len(t.shape.dim))
    return out


@dataclass
class StepPlan:
    """One step: the graph it runs, its feeds (pasts only at step 0), and the embed graph's feeds."""

    graph: str
    feeds: dict[str, np.ndarray]
    embed_feeds: dict[str, np.ndarray] = field(default_factory=dict)


class ContractError(ValueError):
    """The contract names something its graphs do not have; the message names both."""


def kv_names(contract: Contract, graph: str | None = None) -> list[tuple[str, str]]:
    """(past input, present output) per KV tensor; `graph` the prefill graph: its own present names."""
    kv = contract.kv
    present = kv.prefill_present if graph and graph == contract.graphs.prefill and kv.prefill_present else kv.present
    return [(kv.past.format(i=i, kv=k), present.format(i=i, kv=k)) for i in range(kv.count) for k in ("key", "value")]


def windowed_pasts(path: Path) -> set[str]:
    """Past inputs that feed a GroupQueryAttention with sliding_window_cache=1."""
    m = onnx.load(str(path), load_external_data=False)
    out: set[str] = set()
    for n in m.graph.node:
        if n.op_type == "GroupQueryAttention" and any(a.name == "sliding_window_cache" and a.i for a in n.attribute):
            out.update(x for x in list(n.input)[3:5] if x)
    return out


def _empty_past(contract: Contract, pair: int, batch: int, windowed: bool = True) -> np.ndarray:
    kv = contract.kv
    if kv.cache == "sliding_window":  # window buffers where the op evicts; the other layers share a max_length one
        rows = kv.window if windowed else (kv.max_length or 0)
    else:
        rows = {"concat": 0, "shared_buffer": kv.max_length, "static": kv.max_length}[kv.cache]
    h, d = kv.per_pair("heads", pair), kv.per_pair("head_dim", pair)
    shape = (batch, h, rows, d) if kv.layout == "BNSH" else (batch, rows, h, d)
    if kv.dtype == "bfloat16":
        import ml_dtypes

        return np.zeros(shape, ml_dtypes.bfloat16)
    return np.zeros(shape, KV_DTYPES[kv.dtype])


def _extra(rule: str, spec: InputSpec, batch: int, seq: int, past: int) -> np.ndarray:
    value = {"zero": 0, "one": 1, "seq_length": seq, "past_length": past, "total_length": past + seq}[rule]
    return np.full((), value, spec.dtype) if spec.rank == 0 else np.full((1,) * spec.rank, value, spec.dtype)


def plan(contract: Contract, tokens: Tokens, inputs: dict[str, dict[str, InputSpec]],
         windowed: set[str] | None = None) -> list[StepPlan]:
    """Feeds of every step, from the contract and the fixed tokens alone (no backend involved)."""
    g = contract.graphs
    batch = tokens.batch
    ids_steps = [np.asarray(tokens.prompt, np.int64)] + [np.asarray(t, np.int64).reshape(batch, 1) for t in tokens.decode]
    steps: list[StepPlan] = []
    past = 0
    n_tokens = sum(ids.shape[1] for ids in ids_steps)
    if contract.kv.cache in ("static", "shared_buffer") and n_tokens > (contract.kv.max_length or 0):
        raise ContractError(f"{n_tokens} tokens do not fit the {contract.kv.cache} cache of kv.max_length "
                            f"{contract.kv.max_length}; shorten the tokens or raise max_length")
    for t, ids in enumerate(ids_steps):
        graph = g.prefill if (t == 0 and g.prefill) else g.decoder
        spec = inputs[graph]
        seq = ids.shape[1]
        total = past + seq
        feeds: dict[str, np.ndarray] = {}
        embed_feeds: dict[str, np.ndarray] = {}

        def need(name: str, where: str) -> InputSpec:
            s = inputs[where].get(name)
            if s is None:
                raise ContractError(f"the contract names input {name!r}, which graph {where} does not have "
                                    f"(its inputs: {', '.join(inputs[where])})")
            return s

        if g.embed:
            embed_feeds[contract.input_ids] = ids.astype(need(contract.input_ids, g.embed).dtype)
        else:
            feeds[contract.input_ids] = ids.astype(need(contract.input_ids, graph).dtype)
        if contract.attention_mask:
            s = need(contract.attention_mask, graph)
            if contract.attention_mask_length == "buffer":
                m = np.zeros((batch, contract.kv.max_length), s.dtype)
                m[:, :total] = 1
            else:
                m = np.ones((batch, total), s.dtype)
            feeds[contract.attention_mask] = m
        if contract.position_ids:
            s = need(contract.position_ids, graph)
            pos = np.arange(past, total, dtype=np.int64) + contract.position_base
            feeds[contract.position_ids] = np.broadcast_to(pos, (batch, seq)).astype(s.dtype) if s.rank == 2 \
                else pos.astype(s.dtype)
        if contract.cache_position:
            s = need(contract.cache_position, graph)
            pos = np.arange(past, total, dtype=np.int64)
            feeds[contract.cache_position] = pos.astype(s.dtype) if s.rank == 1 else \
                np.broadcast_to(pos, (batch, seq)).astype(s.dtype)
        for name, rule in contract.extra_inputs.items():
            where = g.embed if (g.embed and name in inputs[g.embed] and name not in spec) else graph
            (embed_feeds if where == g.embed and where != graph else feeds)[name] = \
                _extra(rule, need(name, where), batch, seq, past)
        if t == 0:  # later steps (and a decode graph after a prefill graph) get the presents fed back
            wl = contract.kv.window_layers
            for i, (p, _) in enumerate(kv_names(contract)):
                if p in spec:
                    win = (i // 2 in wl) if wl is not None else (windowed is None or p in windowed)
                    feeds[p] = _empty_past(contract, i // 2, batch, win)
                elif not g.prefill:
                    need(p, graph)
        steps.append(StepPlan(graph, feeds, embed_feeds))
        past = total
    return steps


class Driven:
    """The sessions of one backend for one model, ready to run the planned steps.

    Graphs are prepared in the order they are used and each is used completely before the
    next is prepared (every step's embedding first: it depends on the tokens alone), because
    an isolated backend's worker holds one session at a time. The first graph is prepared
    here, so a refusal at load is the cell's `unsupported`; a later graph's refusal is raised
    as Unsupported naming that graph."""

    def __init__(self, contract: Contract, root: Path, steps: list[StepPlan],
                 prepare: Callable[[ModelRef], Session]):
        self.contract, self.root, self.steps, self._prepare = contract, root, steps, prepare
        self.sessions: dict[str, Session] = {}
        first = contract.graphs.embed or steps[0].graph
        self.sessions[first] = prepare(ModelRef(path=root / first))

    def _session(self, graph: str) -> Session:
        if graph not in self.sessions:
            try:
                self.sessions[graph] = self._prepare(ModelRef(path=self.root / graph))
            except (Crashed, TimedOut, Unsupported, DeviceLacks):
                raise
            except Exception as e:  # noqa: BLE001 - refused at load: the backend's own words
                raise Unsupported(f"{graph}: {str(e) or type(e).__name__}") from e
        return self.sessions[graph]

    def run_steps(self) -> list[dict[str, np.ndarray]]:
        """{logits} of every step; KV fed back from this backend's own presents."""
        c = self.contract
        pairs = kv_names(c)
        embedded: list[dict[str, np.ndarray]] = []
        if c.graphs.embed:
            emb = self._session(c.graphs.embed)
            embedded = [emb.run(step.embed_feeds) for step in self.steps]
        carried: dict[str, np.ndarray] = {}
        out: list[dict[str, np.ndarray]] = []
        for t, step in enumerate(self.steps):
            feeds = dict(step.feeds)
            if embedded:
                feeds.update(embedded[t])
            for p, _ in pairs:
                if p in carried and p not in step.feeds:
                    feeds[p] = carried[p]
            res = self._session(step.graph).run(feeds)
            if c.logits not in res:
                raise ContractError(f"{step.graph} gave no output {c.logits!r} (outputs: {', '.join(res)})")
            if t + 1 < len(self.steps):
                for p, q in kv_names(c, step.graph):
                    if q not in res:
                        raise ContractError(f"{step.graph} gave no output {q!r} to feed back as {p!r}")
                    carried[p] = res[q]
            out.append({c.logits: np.asarray(res[c.logits])})
        return out

    @property
    def note(self) -> str:
        """Each graph's session's note (how it ran), named by graph when there are several."""
        notes = [(g, getattr(s, "note", "")) for g, s in self.sessions.items()]
        notes = [(g, n) for g, n in notes if n]
        return notes[0][1] if len(self.sessions) == 1 and notes else "; ".join(f"{g}: {n}" for g, n in notes)

    @property
    def finding_label(self) -> str:
        return next((lab for s in self.sessions.values() if (lab := getattr(s, "finding_label", ""))), "")

    def close(self) -> None:
        for s in self.sessions.values():
            try:
                s.close()
            except Exception:  # noqa: BLE001
                pass


@dataclass
class ZooDriver:
    """Built.driver for a zoo case: prepares the graphs of one backend and runs the steps;
    judged by logit metrics against `oracle` (its name goes into every cell)."""

    contract: Contract
    root: Path
    steps: list[StepPlan]
    expected: list[np.ndarray]
    oracle: str

    #: the backend whose run made `expected` (hub models), so its own column says it agrees by construction
    oracle_backend: str | None = None
    #: (logits per step, the exporter's change): eager changed as the exporter changed the model
    as_exported: tuple[list[np.ndarray], str] | None = None
    _backend: str | None = None

    def prepare(self, prepare: Callable[[ModelRef], Session]) -> Driven:
        self._backend = getattr(getattr(prepare, "__self__", None), "name", None)  # cells run one at a time
        return Driven(self.contract, self.root, self.steps, prepare)

    def write_bundle(self, case, built, dest, backend: str):
        """Every zoo cell gets a zoo bundle (harness/zoo/bundle.py): the decode loop of the
        contract and the zoo verdict (eager, then eager as exported), which the generic bundle's
        tensor comparison cannot say."""
        from .bundle import write_zoo_bundle

        return write_zoo_bundle(case, built, dest, backend)

    def judge(self, outputs: Sequence[dict[str, np.ndarray]], tol):
        from .metrics import zoo_verdict

        j = zoo_verdict([o[self.contract.logits] for o in outputs], self.expected, tol, self.oracle, self.as_exported)
        if self.oracle_backend and self._backend == self.oracle_backend:
            j.metrics["self_oracle"] = True
            j.message = f"this backend is the oracle: it agrees with itself by construction; {j.message}"
        return j


def load_plan(contract: Contract, tokens: Tokens, root: Path) -> list[StepPlan]:
    inputs = {g: graph_inputs(root / g) for g in contract.graphs.all()}
    windowed = None
    if contract.kv.cache == "sliding_window" and contract.kv.window_layers is None:
        first = contract.graphs.prefill or contract.graphs.decoder
        windowed = windowed_pasts(root / first)
    return plan(contract, tokens, inputs, windowed)
