"""Conformance cases, one module per op family. Each module exposes `cases(grid)`, a compact
parameter grid ("quick" for CI and the default run, "full" for the nightly matrix)."""
