"""pytest plumbing: one item per (case, backend), `--backend`, marks, and result recording.

    pytest -m gqa_decode --backend tract          # one slice, one backend
    pytest cases --backend reference -n 2         # the reference column against its oracles

A mismatch fails the item with the metrics in the message; `unsupported` and `unavailable`
skip with the backend's reason; `error`, `crash` and `timeout` fail. An `ambiguous` cell (the
backend matches another reading the operator text allows) ran and is not the backend's fault:
it passes, with an `AmbiguousReading` warning naming the reading in pytest's warnings summary.
"""

from __future__ import annotations

import os
from pathlib import Path

# One BLAS thread per test process, as the CLI sets it (harness/cli.py): OpenBLAS's threads spin
# after every call, and two xdist workers each spinning a pool over the same two cores slowed the
# numpy oracles and comparisons many times over. Before numpy loads; a user's own setting wins;
# xdist workers and the CLI subprocesses tests start inherit it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

from harness.marks import all_marks  # noqa: E402

#: progress lines and the slowest tests (tests/progress.py)
pytest_plugins = ["tests.progress"]

HERE = Path(__file__).resolve().parent
_BACKENDS: dict = {}
_WRITER = None


def pytest_addoption(parser):
    g = parser.getgroup("onnx-compat")
    g.addoption("--backend", action="append", default=None, metavar="NAME",
                help="backend(s) for conformance cells, repeatable or comma-separated (default: every available one)")
    g.addoption("--grid", choices=["quick", "full"], default=None, help="case grid (default quick; env ONNX_COMPAT_GRID)")
    g.addoption("--compat-out", default=None, metavar="DIR",
                help="append every cell's record to DIR/results-<worker>.jsonl (merge with `onnx-compat report`)")
    g.addoption("--cell-timeout", type=float, default=120.0, metavar="S", help="per-cell limit for isolated backends")


def pytest_configure(config):
    for name, doc in all_marks().items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    _check_backend_option(config)
    if not hasattr(config, "workerinput"):
        _check_compat_out(config)
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        _check_mark_option(config, carried=None)  # xdist: workers collect; the controller judges alone


def _check_compat_out(config) -> None:
    """--compat-out a directory that cannot be written: one usage error at the start, not an
    OSError in every test."""
    import tempfile

    out = config.getoption("--compat-out")
    if not out:
        return
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as e:
        raise pytest.UsageError(f"--compat-out {out}: cannot write there ({e.strerror}); choose a directory you "
                                "can write") from None


def _check_backend_option(config) -> None:
    """A misspelt --backend is one usage error, before collection (not one traceback per family)."""
    from harness import backends

    raw = config.getoption("--backend")
    if not raw:
        return
    known = backends.names()
    for name in (n.strip() for spec in raw for n in spec.split(",")):
        if name and name not in known:
            raise pytest.UsageError(f"--backend {name!r}: unknown backend; choose from: {', '.join(known)}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    if items and not hasattr(config, "workerinput") and not config.getoption("numprocesses", None):
        _check_mark_option(config, carried=[{m.name for m in item.iter_markers()} for item in items])


def _check_mark_option(config, carried) -> None:
    """`-m` naming no mark that any test carries would deselect everything without a word; say
    so in one line, with the marks there are. Expressions that select something, such as
    `not slow`, are pytest's business, as are its own marks (parametrize, skipif ...).
    `carried`: each collected item's marks; None (under xdist, before collection): selectable
    means some choice of the known marks it names makes the expression true."""
    import itertools
    import re

    from _pytest.mark.expression import Expression

    expr = config.getoption("markexpr", None)
    if not expr:
        return
    try:
        compiled = Expression.compile(expr)
    except Exception:  # noqa: BLE001 - pytest reports a malformed expression itself
        return
    registered = {ln.split(":")[0].split("(")[0].strip() for ln in config.getini("markers")}
    known = set(all_marks()) | registered | set().union(*(carried or []))
    names = [n for n in dict.fromkeys(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr)) if n not in ("and", "or", "not")]
    unknown = [n for n in names if n not in known]
    if not unknown:
        return
    if carried is not None:
        choices = carried
    else:
        mentioned = [n for n in names if n in known]
        if len(mentioned) > 12:
            return
        choices = [{n for n, on in zip(mentioned, bits) if on}
                   for bits in itertools.product((False, True), repeat=len(mentioned))]
    if any(compiled.evaluate(lambda name, _m=m, **_kw: name in _m) for m in choices):
        return
    raise pytest.UsageError(f"-m {expr!r}: unknown mark {unknown[0]!r}; case marks: {', '.join(sorted(all_marks()))}")


def _selected_backends(config) -> list[str]:
    from harness import backends

    raw = config.getoption("--backend")
    spec = ",".join(raw) if raw else None
    try:
        return backends.parse_list(spec)
    except KeyError as e:
        raise pytest.UsageError(f"--backend: {e.args[0]}") from None


def pytest_collect_file(file_path: Path, parent):
    # a family is cases/<name>.py or a package cases/<name>/__init__.py
    name = file_path.stem if file_path.parent == HERE / "cases" else (
        file_path.parent.name if file_path.name == "__init__.py" and file_path.parent.parent == HERE / "cases" else None)
    if file_path.suffix == ".py" and name:
        from harness.registry import module_names  # the discovery `run` and `list` use

        if name in module_names():
            return CaseFamily.from_parent(parent, path=file_path, name=name)
    return None


#: why a shape-true twin's cell (and one extracted from it) may take tens of seconds
SHAPE_TRUE_SLOW = ("a shape-true twin or an op case extracted from one: the hub model's attention geometry over "
                   "a 600- to 2 100-token prompt (the reference computes in float64)")


class CellFailed(Exception):
    def __init__(self, record):
        super().__init__(record["message"])
        self.record = record


class CaseFamily(pytest.File):
    def collect(self):
        from harness.registry import SelectionError, default_grid, family_cases

        try:
            grid = self.config.getoption("--grid") or default_grid()
        except SelectionError as e:
            raise pytest.UsageError(str(e)) from None
        from harness.backends.long_subset import long_prompt_case

        names = _selected_backends(self.config)
        for case in family_cases(self.name, grid):
            for b in names:
                item = CaseItem.from_parent(self, name=f"{case.id}[{b}]", case=case, backend_name=b)
                for m in case.marks:
                    item.add_marker(m)
                if long_prompt_case(case.id):  # tests/progress.py names it among the slowest, with this
                    item.add_marker(pytest.mark.slow_reason(SHAPE_TRUE_SLOW))
                yield item


class CaseItem(pytest.Item):
    def __init__(self, *, case, backend_name, **kw):
        super().__init__(**kw)
        self.case = case
        self.backend_name = backend_name

    def _backend(self):
        if self.backend_name not in _BACKENDS:
            from harness.backends.worker import get_isolated

            # native runtimes in a worker process, as under `run`: a segfault fails its test, not the session
            b = get_isolated(self.backend_name, self.config.getoption("--cell-timeout"), only_native=True)
            _BACKENDS[self.backend_name] = (b, b.available(), b.version())
        return _BACKENDS[self.backend_name]

    def runtest(self):
        from harness.runner import run_cell

        backend, avail, version = self._backend()
        rec = run_cell(self.case, backend, availability=avail, version=version)
        _record(self.config, rec)
        from harness.verdict import Status

        outcome = Status(rec["status"]).pytest_outcome
        if outcome == "pass":
            return
        if outcome == "warn":
            import warnings

            m = rec["metrics"] or {}
            if rec["status"] == Status.EXPORTER.value:
                warnings.warn(ExporterFinding(f"{self.case.id} on {rec['backend']}: runs the export faithfully; "
                                              f"the export differs from eager: {m.get('matches_export')}"), stacklevel=1)
            else:
                warnings.warn(AmbiguousReading(f"{self.case.id} on {rec['backend']}: matches the reading "
                                               f"'{m.get('matches_reading')}'"), stacklevel=1)
            return
        if outcome == "skip":
            pytest.skip(f"{rec['status']}: {rec['message'][:500]}")
        raise CellFailed(rec)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, CellFailed):
            r = excinfo.value.record
            m = r["metrics"] or {}
            from harness.compare import METRIC_NAMES

            keys = (*METRIC_NAMES, "worst_output", "first_bad_step", "oracle")
            metrics = ", ".join(f"{k}={m[k]:.4g}" if isinstance(m.get(k), float) else f"{k}={m[k]}" for k in keys if k in m)
            tol = r["tolerance"]
            return (f"{r['status'].upper()}: {self.case.id} on {r['backend']} ({r['backend_version']})\n"
                    f"  tolerance {tol['profile']}: atol {tol['atol']:g} rtol {tol['rtol']:g} max_nmse {tol['max_nmse']:g}\n"
                    f"  metrics: {metrics}\n  message: {r['message'][:2000]}\n"
                    f"  repro: onnx-compat export {self.case.id} --out DIR && sh DIR/repro.sh {r['backend']}")
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name


class ExporterFinding(UserWarning):
    """A zoo cell whose backend runs the export as exported, where the exporter changed the model
    (status `exporter`): a finding about the exporter, not the backend."""


class AmbiguousReading(UserWarning):
    """A cell that matches another reading the operator text allows (status `ambiguous`)."""


def _record(config, rec):
    global _WRITER
    out = config.getoption("--compat-out")
    if not out:
        return
    if _WRITER is None:
        from harness.results import ResultsWriter

        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        _WRITER = ResultsWriter(Path(out) / f"results-{worker}.jsonl", resume=True)
    if (rec["case_id"], rec["backend"]) not in _WRITER.done:
        _WRITER.append(rec)


def pytest_sessionfinish(session, exitstatus):
    for b, _, _ in _BACKENDS.values():
        b.close()
    _BACKENDS.clear()
    if _WRITER is not None:
        _WRITER.close()
