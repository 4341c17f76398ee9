"""What the two static-KV Gemma-3 routes share (seed 002; docs/zoo.md, "The static form").

The tiny checkpoint (Gemma-3 270M's architecture, scaled down), the I/O contract both routes
follow, the manifest fields they have in common, and the builder's own check of a twin on
onnxruntime CPU against the eager oracle (top-1, max |Δ|, KL per step). Runs inside the
statickv exporter environment (zoo/envs/statickv.txt).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (zoo/build/common.py: manifest, tokens, oracle, dequantisation)

SEED = 0
MAX_LENGTH = 32  # the fixed cache length: 24 prompt + 4 decode tokens fit, with slack
ENV = "zoo/envs/statickv.txt"
MODEL = "gemma3-270m"  # what the form stands for: google/gemma-3-270m-it, hand-exported
RECONSTRUCTION = ("this project's reconstruction of the hand-built static-KV Gemma-3 export described in "
                  "seed 002 (build_gemma.py / gemma_onnx_conversion.py); no published export of it exists")

# Gemma-3 270M: 18 layers (full attention every 6th), 4 heads, 1 KV head, head_dim 256,
# query_pre_attn_scalar 256, sliding window 512, tied embeddings. Scaled down per the zoo rules:
# hidden 64 (sqrt exact), head_dim 32 (= query_pre_attn_scalar), 6 layers (full at index 5),
# window 8 so a 24-token prompt crosses it, every matmul K a multiple of the q4 block (32).
CONFIG = dict(vocab_size=256, hidden_size=64, intermediate_size=64, num_hidden_layers=6,
              num_attention_heads=4, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
              sliding_window=8, max_position_embeddings=128, rms_norm_eps=1e-6)
INIT_STD = 0.08  # non-degenerate logits (std ~1) and visible (1 + w) norm offsets


def make_model():
    """The float32 eager checkpoint, deterministic from SEED (no file is kept: it rebuilds)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(SEED)
    cfg = Gemma3TextConfig(**CONFIG)
    model = Gemma3ForCausalLM(cfg).to(torch.float32).eval()
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * INIT_STD)
    model.config._attn_implementation = "eager"
    return model


def contract(prefill: str, decode: str, dtype: str) -> dict:
    cfg = CONFIG
    return {
        "graphs": {"decoder": decode, "embed": None, "prefill": prefill},
        "input_ids": "input_ids",
        "attention_mask": None,
        "position_ids": None,
        "position_base": 0,
        "cache_position": "cache_position",
        "extra_inputs": {},
        "kv": {"past": "past_key_values.{i}.{kv}", "present": "present.{i}.{kv}",
               "count": cfg["num_hidden_layers"], "layout": "BNSH", "heads": cfg["num_key_value_heads"],
               "head_dim": cfg["head_dim"], "dtype": dtype, "cache": "static", "max_length": MAX_LENGTH,
               "window": None},
        "logits": "logits",
    }


def checkpoint_record(model) -> dict:
    import torch
    import transformers
    return {"class": type(model).__name__, "seed": SEED, "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0]}


def ort_static(twin_dir: Path, c: dict, tokens: dict) -> dict:
    """The twin on onnxruntime CPU, teacher-forced through the static contract: prefill with
    cache_position 0..S-1, then each decode token at its position with the previous present."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    pre = ort.InferenceSession(str(twin_dir / c["graphs"]["prefill"]), so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(twin_dir / c["graphs"]["decoder"]), so, providers=["CPUExecutionProvider"])
    kv = c["kv"]
    prompt = tokens["prompt"][0]
    s = len(prompt)
    onames = [o.name for o in pre.get_outputs()]
    out = dict(zip(onames, pre.run(None, {"input_ids": np.array([prompt], np.int64),
                                          "cache_position": np.arange(s, dtype=np.int64)})))
    steps = {"step0": out["logits"]}
    for k, (tok,) in enumerate(tokens["decode"], start=1):
        feed = {"input_ids": np.array([[tok]], np.int64), "cache_position": np.array([s + k - 1], np.int64)}
        for i in range(kv["count"]):
            for w in ("key", "value"):
                feed[kv["past"].format(i=i, kv=w)] = out[kv["present"].format(i=i, kv=w)]
        onames = [o.name for o in dec.get_outputs()]
        out = dict(zip(onames, dec.run(None, feed)))
        steps[f"step{k}"] = out["logits"]
    return steps


def step_report(oracle: dict, got: dict) -> list[dict]:
    """Per step: top-1 agreement over positions, max |Δ|, mean KL(oracle ‖ ORT) in nats."""
    rows = []
    for k in sorted(oracle, key=lambda x: int(x[4:])):
        a = np.asarray(oracle[k], np.float64).reshape(-1, oracle[k].shape[-1])
        b = np.asarray(got[k], np.float64).reshape(-1, oracle[k].shape[-1])
        lp = a - a.max(1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(1, keepdims=True))
        lq = b - b.max(1, keepdims=True)
        lq -= np.log(np.exp(lq).sum(1, keepdims=True))
        rows.append({"step": k, "top1": float((a.argmax(1) == b.argmax(1)).mean()),
                     "max_abs": float(np.abs(a - b).max()),
                     "kl": float((np.exp(lp) * (lp - lq)).sum(1).mean())})
    return rows


def print_report(name: str, rows: list[dict], info: dict) -> None:
    print(f"{name}: eager top-1 per step {info.get('top1')}; eager cached-vs-full max|d| "
          f"{info.get('cached_vs_full_max_abs', info.get('cached_error'))}")
    for r in rows:
        print(f"  {r['step']}: top1 {r['top1']:.3f}  max|d| {r['max_abs']:.3g}  KL {r['kl']:.3g}")
