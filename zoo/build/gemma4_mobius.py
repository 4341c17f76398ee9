"""Gemma-4 twin exported by mobius (`mobius-onnx`), the exporter ORT-GenAI's Gemma-4 support
comes from (ORT-GenAI's own gemma-4 example: "builder.py has no Gemma 4 support, so the graphs
come from an external exporter -- mobius").

One graph for the CPU EP: input_ids, attention_mask (no position_ids: GroupQueryAttention does
the rotary from seqlens_k), past_key_values.{0..K-1} only for the K unshared layers at their own
head sizes -> logits, present.*. With `--runtime ort-genai` mobius also writes genai_config.json
and copies the checkpoint's tokenizer files (a tiny word-level one here), so the ORT-GenAI
runtime can load the twin as mobius meant it.

Run inside .zoo-envs/mobius:  python zoo/build/gemma4_mobius.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import gemma4_checkpoint as ck
import gemma4_onnxrun

ENV = "zoo/envs/mobius.txt"
MODEL = "gemma4-e2b-mobius"  # the zoo.yaml entry: a mobius E2B export for ORT-GenAI
NAME = "gemma4-mobius-fp32"
COMMAND = "python -m mobius build --config ckpt out/m --ep cpu --runtime ort-genai"


def contract() -> dict:
    lay = ck.kv_layout()
    return {
        "graphs": {"decoder": "model.onnx", "embed": None, "prefill": None},
        "input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": None,
        "position_base": 0, "extra_inputs": {},
        "kv": {"past": "past_key_values.{i}.{kv}", "present": "present.{i}.{kv}", "count": lay["count"],
               "layout": "BNSH", "heads": ck.CONFIG["num_key_value_heads"], "head_dim": lay["head_dim"],
               "dtype": "float32", "cache": "concat", "max_length": None, "window": None},
        "logits": "logits",
    }


def _version() -> str:
    from importlib.metadata import version
    return version("mobius-onnx")


def build() -> None:
    work = Path(tempfile.mkdtemp(prefix="gemma4-mobius-"))
    ckpt, out = work / "ckpt", work / "out"  # mobius names the graph after --config: keep it relative
    try:
        ck.save_checkpoint(ck.make_model(), ckpt, tokenizer=True)
        model = ck.load_checkpoint(ckpt)
        gen = ck.check_generate(model)
        cmd = [sys.executable, "-m", "mobius", "build", "--config", "ckpt", "out/m", "--ep", "cpu",
               "--runtime", "ort-genai"]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=work, check=False)
        if r.returncode != 0:
            raise SystemExit(f"mobius failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
        twin = common.TWINS / NAME
        if twin.exists():
            shutil.rmtree(twin)
        twin.mkdir(parents=True)
        for f in sorted((out / "m").iterdir()):
            shutil.copy(f, twin / f.name)
        saved_config = ck.write_config(ckpt, twin)
        tokens, steps, info = ck.oracle_and_tokens(model, NAME)
        common.save_oracle(twin / "oracle.npz", steps)
        c = contract()
        cmp = common.compare_steps(steps, gemma4_onnxrun.run(twin, c, tokens))
        import torch
        import transformers
        manifest = {
            "name": NAME, "model": MODEL, "form": "mobius-gemma4-gqa", "precision": "fp32",
            "exporter": {"name": "mobius (mobius-onnx)", "version": _version(), "command": COMMAND, "env": ENV,
                         "script": "zoo/build/gemma4_mobius.py"},
            "reconstruction": None,
            "checkpoint": {**ck.checkpoint_record(model), "config": saved_config},
            "contract": c, "tokens": tokens,
            "oracle": {"kind": "torch-eager", "file": "oracle.npz", "dtype": "float32",
                       "weights": "the checkpoint's float32 weights"},
            "build_info": {"kv_sharing": ck.kv_layout(), "init_std": ck.INIT_STD, "generate_check": gen,
                           "exporter_versions": {
                               "mobius-onnx": _version(), "transformers": transformers.__version__,
                               "torch": torch.__version__.split("+")[0]},
                           "eager_steps": info["steps"],
                           "eager_cached_vs_full_max_abs": info.get("cached_vs_full_max_abs"),
                           "eager_top1": info["top1"], "ort_cpu_vs_eager": cmp},
        }
        common.write_manifest(twin, manifest)
        print(NAME, json.dumps(cmp))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    ck.fixed_hash_seed()
    build()
