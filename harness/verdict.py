"""The statuses a (case, backend) cell can get, and the policy that goes with each: what pytest
does with it, whether it gates `check`, whether it is a finding, how bad it is. One place, so
pytest, `check`, the report and the drafts cannot disagree. Statuses are never folded together."""

from enum import Enum


class Status(str, Enum):
    PASS = "pass"  # agrees with the oracle within the case's tolerance profile
    MISMATCH = "mismatch"  # ran, and the numbers disagree (NaN/Inf where the oracle is finite too)
    #: ran, fails the reading the reference implements but matches another reading the operator text
    #: allows (harness/readings.py); metrics.matches_reading names it. Not a fault of the backend.
    AMBIGUOUS = "ambiguous"
    #: a zoo twin: disagrees with eager, and agrees with eager changed the way the exporter changed
    #: the model (the twin's second oracle; metrics.matches_export names the change). The exporter
    #: is at fault, not the backend: the cell says so and the report lists the exporter finding.
    EXPORTER = "exporter"
    UNSUPPORTED = "unsupported"  # refused (its own message kept); a refusal the text requires says so
    ERROR = "error"  # loaded, then failed while running
    CRASH = "crash"  # the process running the backend died (signal or exit code)
    TIMEOUT = "timeout"  # no answer within the per-cell time limit
    UNAVAILABLE = "unavailable"  # backend not installed, or no device
    SKIP = "skip"  # not applicable to this backend by the harness's own rule (stated in message)

    def __str__(self) -> str:  # so f-strings and JSON print the plain word
        return self.value

    @property
    def ran(self) -> bool:
        """The backend produced outputs and they were judged."""
        return self in (Status.PASS, Status.AMBIGUOUS, Status.MISMATCH)

    @property
    def acceptable(self) -> bool:
        """Agrees with a reading the operator text allows: green in pytest, `check` exits 0."""
        return self in (Status.PASS, Status.AMBIGUOUS, Status.EXPORTER)

    @property
    def finding(self) -> bool:
        """The backend is at fault (wrong numbers, died, hung, or failed after loading)."""
        return self in (Status.MISMATCH, Status.CRASH, Status.TIMEOUT, Status.ERROR)

    @property
    def pytest_outcome(self) -> str:
        """'pass', 'warn' (passes with a warning naming the reading), 'skip' (no verdict on the
        numbers: refused, absent, not applicable) or 'fail'."""
        if self is Status.PASS:
            return "pass"
        if self in (Status.AMBIGUOUS, Status.EXPORTER):
            return "warn"
        return "skip" if self in (Status.UNSUPPORTED, Status.UNAVAILABLE, Status.SKIP) else "fail"

    @property
    def severity(self) -> int:
        """Higher is worse: the order in which a group of cells takes its headline status."""
        return SEVERITY.index(self)


ALL_STATUSES = [s.value for s in Status]
SEVERITY = [Status.PASS, Status.SKIP, Status.UNAVAILABLE, Status.AMBIGUOUS, Status.EXPORTER, Status.UNSUPPORTED,
            Status.TIMEOUT, Status.ERROR, Status.MISMATCH, Status.CRASH]


def worst(statuses) -> Status | None:
    """The headline status of a group of cells."""
    return max((Status(s) for s in statuses), key=lambda s: s.severity, default=None)
