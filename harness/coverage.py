"""Moved to harness.report.coverage (the report package); this name stays an alias of it so that
existing imports and `python -m harness.coverage` keep working."""

import sys

from .report import coverage as _module

if __name__ == "__main__":
    raise SystemExit(_module.main())
sys.modules[__name__] = _module
