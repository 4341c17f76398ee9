"""Check built twins on this interpreter's onnxruntime CPU against their eager oracle.

    python zoo/build/check_twin.py zoo/twins/<name> [...]

Prints per step top-1 agreement (every position) and max |Δ| of the logits; exits 1 when a
twin's oracle.npz or graph no longer matches the sha256 its manifest records. Needs numpy,
onnx and onnxruntime only (the project's own environment is enough).
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def check(twin: Path) -> list:
    m = json.loads((twin / "manifest.json").read_text())
    for rel, sha in m["files"].items():
        if common.sha256_file(twin / rel) != sha:
            raise SystemExit(f"{twin / rel}: sha256 differs from {twin / 'manifest.json'}; rebuild the twin")
    c = m["contract"]
    kv = dict(c["kv"], window_layers=m.get("build_info", {}).get("window_layers"))
    got = common.ort_teacher_forced(twin / c["graphs"]["decoder"], m["tokens"], {**c, "kv": kv})
    oracle = dict(np.load(twin / m["oracle"]["file"]))
    return common.compare_steps(oracle, got)


def main(argv) -> int:
    import onnxruntime
    for t in argv:
        rows = check(Path(t))
        print(f"{Path(t).name} (onnxruntime {onnxruntime.__version__}): " + "; ".join(
            f"{r['step']} top1={r['top1_rows_equal']:.2f} max|d|={r['max_abs']:.3g}" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
