"""Moved to harness.report.matrix (the report package); this name stays an alias of it so that
existing imports keep working."""

import sys

from .report import matrix as _module

sys.modules[__name__] = _module
