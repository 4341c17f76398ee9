"""The CLI as one stage of a shell pipeline."""

from __future__ import annotations

import subprocess
import sys


def test_a_closed_pipe_ends_list_quietly():
    """`onnx-compat list | head -1` printed "error: Broken pipe; check the path and try again"."""
    p = subprocess.run(f"'{sys.executable}' -m harness.cli list | head -1", shell=True, capture_output=True,
                       text=True, timeout=300)
    assert p.stdout.count("\n") == 1
    assert "error" not in p.stderr.lower(), p.stderr
