"""pytest plugin: progress a person can read, and the slow tests named.

With `-q -n 2` pytest prints only dots: on a loaded machine a user cannot tell slow from hung.
This prints, at most every PROGRESS_EVERY seconds, one line with the count done out of the
total, failures so far, the time spent and the test running longest so far; and at the end the
slowest tests, flagging any slower than SLOW_LIMIT seconds that carries no written reason
(`@pytest.mark.slow_reason("why")` next to it). Timings are reported, never asserted: a slow
machine is not a failing test.

Loaded from the root conftest.py (`pytest_plugins`); under xdist it runs in the controller,
which sees every worker's reports. `-p no:tests.progress` turns it off.
"""

from __future__ import annotations

import time

import pytest

PROGRESS_EVERY = 15.0
SLOW_LIMIT = 20.0
SHOW_SLOWEST = 8


class Progress:
    def __init__(self, config):
        self.config = config
        self.total: int | None = None
        self.done = 0
        self.failed = 0
        self.t0 = time.monotonic()
        self.last = self.t0
        self.durations: dict[str, float] = {}
        self.reasons: dict[str, str] = {}

    # totals: the controller of an xdist run collects nothing itself
    def pytest_collection_finish(self, session):
        if not hasattr(self.config, "workerinput"):
            self.total = len(session.items) or self.total
            for item in session.items:
                m = item.get_closest_marker("slow_reason")
                if m and m.args:
                    self.reasons[item.nodeid] = str(m.args[0])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self.total = len(ids)

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.done += 1
            self.failed += report.outcome == "failed"
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration
        if report.when == "setup":
            for key, value in report.user_properties:
                if key == "slow_reason":
                    self.reasons[report.nodeid] = value
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return
        total = f"/{self.total}" if self.total else ""
        slowest = max(self.durations.items(), key=lambda kv: kv[1], default=None)
        slow = f"; slowest so far {slowest[1]:.1f} s {slowest[0]}" if slowest else ""
        tr.write_line(f"progress: {self.done}{total} tests, {self.failed} failed, {now - self.t0:.0f} s{slow}")

    def pytest_terminal_summary(self, terminalreporter):
        if not self.durations:
            return
        top = sorted(self.durations.items(), key=lambda kv: kv[1], reverse=True)[:SHOW_SLOWEST]
        terminalreporter.write_sep("-", f"slowest {len(top)} tests (setup + call + teardown)")
        for nodeid, secs in top:
            why = self.reasons.get(nodeid)
            flag = f"  (slow: {why})" if why else ("  (over {:.0f} s without a slow_reason)".format(SLOW_LIMIT)
                                                   if secs > SLOW_LIMIT else "")
            terminalreporter.write_line(f"{secs:7.1f} s  {nodeid}{flag}")


def pytest_runtest_setup(item):
    """Carry a test's written reason to the controller (xdist workers collect, it does not)."""
    m = item.get_closest_marker("slow_reason")
    if m and m.args:
        item.user_properties.append(("slow_reason", str(m.args[0])))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow_reason(why): this test is slow for the reason given (shown in the "
                                       "slowest-tests summary)")
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(Progress(config), "onnx-compat-progress")
