"""Moved to harness.report.drafts (the report package); this name stays an alias of it so that
existing imports keep working."""

import sys

from .report import drafts as _module

sys.modules[__name__] = _module
