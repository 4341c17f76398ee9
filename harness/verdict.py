"""The statuses a (case, backend) cell can get. They are never folded into each other."""

from enum import Enum


class Status(str, Enum):
    PASS = "pass"  # agrees with the oracle within the case's tolerance profile
    MISMATCH = "mismatch"  # ran, and the numbers disagree (NaN/Inf where the oracle is finite too)
    #: ran, fails the reading the reference implements but matches another reading the operator text
    #: allows (harness/readings.py); metrics.matches_reading names it. Not a fault of the backend.
    AMBIGUOUS = "ambiguous"
    UNSUPPORTED = "unsupported"  # refused (its own message kept); a refusal the text requires says so
    ERROR = "error"  # loaded, then failed while running
    CRASH = "crash"  # the process running the backend died (signal or exit code)
    TIMEOUT = "timeout"  # no answer within the per-cell time limit
    UNAVAILABLE = "unavailable"  # backend not installed, or no device
    SKIP = "skip"  # not applicable to this backend by the harness's own rule (stated in message)

    def __str__(self) -> str:  # so f-strings and JSON print the plain word
        return self.value


ALL_STATUSES = [s.value for s in Status]
