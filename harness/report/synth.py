"""A synthetic results file at the nightly's scale, for the report's size, memory and render
benchmarks (`python -m harness.report.synth --cells 100000 --out FILE`) and the test that
checks them on a smaller one. Cells look like the real grid's: families with feature grids,
one status mix per column (most pass; refusals, wrong values, crashes as a real run has them),
messages of real length, per-step metrics for zoo cells. Seeded: the same file every time."""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path
from typing import Any, Iterator

BACKENDS = ["reference", "ort-cpu", "ort-cpu-noopt", "tract", "ort-node", "ort-web", "ort-web-chromium",
            "ort-genai", "openvino", "ort-web-webgpu", "ort-webgpu", "ort-cuda"]
FAMILIES = {  # family -> (share of cases, feature -> values)
    "gqa": (0.30, {"layout": ["gemma3", "phi3", "llama", "qwen2"], "phase": ["prefill", "decode", "multistep"],
                   "ragged": [0, 1], "softcap": [0.0, 30.0], "do_rotary": [0, 1], "dtype": ["fp32", "fp16", "bf16"]}),
    "extracted": (0.18, {"graph": ["onnx/model_q4.onnx", "onnx/decoder_model_merged_q4.onnx"], "op": ["MatMulNBits"],
                         "model": ["gemma3-optimum-q4", "qwen25-optimum-q4", "gemma4-tjs-q4"]}),
    "onnx_node": (0.17, {"op": ["attention"], "opset": [23, 24, 25], "expanded": [0, 1]}),
    "rotary": (0.08, {"interleaved": [0, 1], "position_ids": ["none", "offset"], "dtype": ["fp32", "fp16"]}),
    "norm": (0.05, {"op": ["simplified", "skipsimplified", "rms23"], "dtype": ["fp32", "fp16"], "axis": [-1, 1]}),
    "matmulnbits": (0.05, {"bits": [2, 4, 8], "block_size": [32, 64, 128], "accuracy_level": [0, 4],
                           "dtype": ["fp32", "fp16"]}),
    "gather_block_quantized": (0.04, {"data": ["uint8-4bit", "uint4", "int4"], "dtype": ["fp32", "fp16"]}),
    "dequantize": (0.03, {"op": ["DequantizeLinear-21 blocked"], "block": [16, 32]}),
    "activation": (0.03, {"op": ["gelu", "fastgelu", "quickgelu"], "dtype": ["fp32", "fp16"]}),
    "mha": (0.02, {"unidirectional": [0, 1], "bias": [0, 1]}),
    "attention_ms": (0.02, {"bias": [0, 1], "mask": ["none", "2d"]}),
    "layernorm": (0.02, {"beta": [0, 1], "bias": [0, 1]}),
    "zoo": (0.01, {"model": ["gemma3-1b", "qwen2.5-0.5b", "gemma4-e2b", "phi3-mini-4k"], "form": ["optimum", "genai"],
                   "precision": ["fp32", "q4"]}),
}
TOL = {"atol": 1e-4, "rtol": 1e-3, "max_nmse": 1e-8, "int_atol": 0.0, "profile": "fp32-attention"}
MESSAGES = {
    "unsupported": "Can't create a session. ERROR_CODE: 9, ERROR_MESSAGE: Could not find an implementation for "
                   "{op}(1) node with name '' (the model declares types this build has no kernel for)",
    "mismatch": "output 'output': {n}/4096 element(s) outside atol 0.0001 + rtol 0.001 (max |Δ| {d:.3g}); "
                "output 'output': NMSE {nmse:.3g} > 1e-08",
    "error": "RuntimeError: failed to call OrtRun(). ERROR_CODE: 2, ERROR_MESSAGE: Non-zero status code returned while "
             "running {op} node. Name:'' Status Message: head_size shall be a multiple of 16. Got head_size % 16 == 8",
    "crash": "tract worker killed by signal SIGABRT (6) during run; stderr: thread '<unnamed>' panicked at "
             "onnx/src/ops/nn/attention.rs:212:9:\nassertion failed: mask.rank() == 4\nnote: run with RUST_BACKTRACE=1",
}


def _status(rng: random.Random, backend: str) -> str:
    if backend == "reference":
        return "pass"
    if backend in ("ort-cuda", "ort-webgpu"):
        return "unavailable" if rng.random() < 0.5 else "pass"
    x = rng.random()
    bad = 0.25 if backend == "tract" else 0.08
    if x > bad:
        return "pass"
    return rng.choices(["unsupported", "mismatch", "error", "crash", "ambiguous"], [60, 20, 10, 5, 5])[0]


def _metrics(rng: random.Random, status: str, zoo: bool) -> dict[str, Any]:
    nmse = 10 ** rng.uniform(-14, -9) if status == "pass" else 10 ** rng.uniform(-8, 1)
    m = {"max_abs": nmse ** 0.5, "max_rel": nmse ** 0.4, "nmse": nmse, "cosine": 1 - nmse, "need_atol": nmse ** 0.5,
         "need_rtol": 0.0}
    if zoo:
        m.update({"top1": 1.0 if status == "pass" else rng.choice([1.0, 0.92]), "kl": nmse, "oracle": "torch eager",
                  "steps": [{"n": 256, "top1": 1.0, "max_abs": m["max_abs"], "nmse": nmse, "cosine": 1 - nmse,
                             "kl": nmse} for _ in range(5)]})
    return m


def records(n_cells: int, backends: list[str] | None = None, seed: int = 0) -> Iterator[dict[str, Any]]:
    backends = backends or BACKENDS
    rng = random.Random(seed)
    n_cases = max(1, n_cells // len(backends))
    fams = list(FAMILIES)
    weights = [FAMILIES[f][0] for f in fams]
    emitted = 0
    for i in range(n_cases):
        fam = rng.choices(fams, weights)[0]
        feats = {k: rng.choice(v) for k, v in FAMILIES[fam][1].items()}
        cid = f"{fam}/synthetic-{i:06d}-" + "-".join(str(v) for v in feats.values())
        for b in backends:
            if emitted >= n_cells:
                return
            st = _status(rng, b)
            op = str(feats.get("op") or fam)
            msg = MESSAGES.get(st, "").format(op=op, n=rng.randint(1, 400), d=rng.random(), nmse=rng.random())
            yield {"case_id": cid, "family": fam, "features": feats, "marks": [fam, f"{fam}_{feats.get('dtype', 'fp32')}"],
                   "backend": b, "backend_version": f"{b} 1.0 (synthetic)", "status": st,
                   "metrics": {} if st in ("unsupported", "unavailable", "crash") else _metrics(rng, st, fam == "zoo"),
                   "tolerance": TOL, "message": msg, "seconds": round(rng.uniform(0.01, 2.0), 3),
                   "repro": f"repro/{cid}" if st not in ("pass", "unavailable") else None}
            emitted += 1


def write(path, n_cells: int, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records(n_cells, seed=seed)).encode()
    path.write_bytes(gzip.compress(lines) if path.suffix == ".gz" else lines)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.report.synth", description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--out", required=True, metavar="RESULTS.jsonl[.gz]")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(write(args.out, args.cells, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
