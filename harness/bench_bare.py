"""The runtime without the harness, for `onnx-compat bench`'s cell overhead: the same bytes and
session options as the harness's cell, and nothing of its own (no judging, no record)."""

from __future__ import annotations

from typing import Callable

from . import backends
from .backends.base import ModelRef
from .cell_run import execute_steps


def bare_runner(name: str, backend, built, model_bytes: bytes) -> Callable[[], None]:
    """The runtime without the harness: same bytes, same session options, no judging."""
    inner = getattr(backend, "inner", backend)
    if hasattr(inner, "_options") and hasattr(inner, "provider"):
        import onnxruntime as ort

        def run_ort():
            sess = ort.InferenceSession(model_bytes, sess_options=inner._options(), providers=[inner.provider])
            prev: dict = {}
            for i, feeds in enumerate(built.feeds):
                f = dict(feeds)
                if i:
                    f.update({inp: prev[out] for out, inp in built.carry.items()})
                names = [o.name for o in sess.get_outputs()]
                prev = dict(zip(names, sess.run(names, f)))
        return run_ort
    if name == "reference":
        from onnx.reference import ReferenceEvaluator

        from .backends.reference import name_unused_outputs
        from .refops import all_ops

        def run_ref():
            ev = ReferenceEvaluator(name_unused_outputs(built.model), new_ops=all_ops())
            prev: dict = {}
            ins = set(ev.input_names)
            for i, feeds in enumerate(built.feeds):
                f = {k: v for k, v in feeds.items() if k in ins}
                if i:
                    f.update({inp: prev[out] for out, inp in built.carry.items()})
                prev = dict(zip(ev.output_names, ev.run(None, f)))
        return run_ref
    plain = backends.get(name, isolated=False)

    def run_plain():
        s = plain.prepare(ModelRef(built.model))
        try:
            execute_steps(s, built)
        finally:
            s.close()
    return run_plain
