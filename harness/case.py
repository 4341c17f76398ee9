"""A conformance case: one ONNX model, its feeds, the oracle's outputs and how to judge them.

Cases are declared lazily (building a model and computing the oracle can be costly), so a
`Case` holds a `make` function; `Case.build()` calls it once per process with a generator
seeded from the case id, so every run and every backend sees the same bytes.
"""

from __future__ import annotations

import functools
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import numpy as np

if TYPE_CHECKING:  # a Case is described without onnx; a built model is an onnx.ModelProto
    import onnx


@dataclass
class Built:
    """What a case turns into: a model, one feed dict per step, and the oracle's answer.

    Multi-step cases (a prefill then decodes) feed each step's outputs named in `carry`
    back as the next step's inputs, from the backend's own outputs, so cache-placement
    bugs show. `expected[i]` holds only the outputs that are compared; `masks[i][name]`,
    where present, is True on the elements the op specifies.
    """

    model: onnx.ModelProto
    feeds: list[dict[str, np.ndarray]]
    expected: list[dict[str, np.ndarray]]
    masks: list[dict[str, np.ndarray]] = field(default_factory=list)
    carry: dict[str, str] = field(default_factory=dict)
    oracle: str = ""
    #: where the spec text is ambiguous: the other reading's expected outputs, by a name
    #: that says what the reading is. A backend that fails the chosen reading but matches
    #: another gets `ambiguous`, the reading named in its cell (compare.judge_readings).
    alternates: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    #: readings the text rules out (harness/readings.py `excluded`), by name: a backend that
    #: matches one is still a mismatch, and its cell names the reading it took
    excluded: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    #: a second kind of case (a zoo model): an object whose `prepare(backend.prepare)` gives a
    #: session-like object with `run_steps()` and `close()`, and whose `judge(outputs, tol)`
    #: gives the Judgement; None runs `feeds`/`carry` on one session (runner.execute_steps)
    driver: Any = None

    def __post_init__(self) -> None:
        if len(self.feeds) != len(self.expected):
            raise ValueError("Built: one expected dict per step is required")
        while len(self.masks) < len(self.feeds):
            self.masks.append({})

    @property
    def steps(self) -> int:
        return len(self.feeds)


@dataclass(frozen=True, eq=False)
class Case:
    id: str
    family: str
    features: Mapping[str, Any]
    marks: tuple[str, ...]
    tolerance: str
    make: Callable[[np.random.Generator], Built]
    description: str = ""
    #: ids of harness.readings.REFUSALS: configurations the operator text says some backends
    #: must reject, so their refusal is the conformant verdict (`unsupported`, not `error`)
    refusals: tuple[str, ...] = ()
    #: the model alone, where building it is much cheaper than `make` (feeds and oracle):
    #: coverage reads only the graph; None means `build().model`
    model_only: Callable[[], onnx.ModelProto] | None = None
    #: the backend whose own outputs are this case's oracle (an extracted case's expected outputs
    #: are the reference backend's on the same bytes): that column's cell could only compare the
    #: backend with itself, so it is `skip`, saying so, and the case is not built for it
    oracle_backend: str = ""

    @property
    def seed(self) -> int:
        return seed_for(self.id)

    @functools.cached_property
    def features_record(self) -> dict[str, Any]:
        """`features` as every record of this case carries them (JSON-clean): made once, since
        each of the case's cells on every column writes them."""
        from .json_clean import clean_for_json

        return clean_for_json(dict(self.features))

    def build(self) -> Built:
        return _build_cached(self)

    def model(self) -> onnx.ModelProto:
        """The case's model; without building feeds and oracle where the case can."""
        if self.model_only is not None and self.id not in _CACHE:
            return self.model_only()
        return self.build().model


def seed_for(case_id: str) -> int:
    """A seed that depends on the id alone (not on Python's hash randomisation)."""
    import hashlib  # here, not at the top: `check` of a bundle never needs it (~3 ms of OpenSSL)

    return int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "little")


_CACHE: "OrderedDict[str, Built]" = OrderedDict()
_CACHE_SIZE = 32


def _build_cached(case: Case) -> Built:
    if case.id in _CACHE:
        _CACHE.move_to_end(case.id)
        return _CACHE[case.id]
    built = case.make(np.random.default_rng(case.seed))
    _CACHE[case.id] = built
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return built


def grid(**axes: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """The Cartesian product of named axes, as dicts, in declaration order."""
    names = list(axes)
    for values in itertools.product(*(list(v) for v in axes.values())):
        yield dict(zip(names, values))


DTYPE_NAMES = {np.dtype(np.float32): "fp32", np.dtype(np.float16): "fp16", np.dtype(np.float64): "fp64"}


def dtype_name(dtype: Any) -> str:
    d = np.dtype(dtype)
    if d in DTYPE_NAMES:
        return DTYPE_NAMES[d]
    if d.name == "bfloat16":
        return "bf16"
    return d.name
