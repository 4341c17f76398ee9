"""Static-KV Gemma-3 twin, route 2: `torch.onnx.export` of prefill and decode wrapper modules
with static shapes (seed 002's gemma_onnx_conversion.py, made static), fp32.

The wrappers hold the eager Gemma3ForCausalLM and give it a cache that writes each layer's new
key/value rows into fixed [1, kv_heads, MAX_LENGTH, head_dim] buffers at `cache_position`
(`index_copy`, out of place, so the export has no mutated inputs), and the causal and
sliding-window masks computed from `cache_position` (passed as Gemma-3's per-layer-type mask
mapping). Same checkpoint and contract as route 1 (docs/zoo.md, "The static form"); every
shape is fixed: the prefill takes exactly the 24 prompt tokens, the decode one token. The
exporter's per-node debug metadata (stack traces naming this machine's paths) is stripped, so
the files are small and the same on every machine.

Run inside the statickv environment: python zoo/build/statickv_torch_gemma3.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

import statickv_common as sc
from statickv_common import common

SCRIPT = "zoo/build/statickv_torch_gemma3.py"
NAME = "gemma3-statickv-torchexport-fp32"
OPSET = 18


class IndexCache:
    """The `past_key_values` the Gemma-3 layers call: update() writes rows at cache_position."""

    def __init__(self, keys, values, cache_position):
        self.keys, self.values, self.pos = list(keys), list(values), cache_position

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.keys[layer_idx] = self.keys[layer_idx].index_copy(2, self.pos, key_states)
        self.values[layer_idx] = self.values[layer_idx].index_copy(2, self.pos, value_states)
        return self.keys[layer_idx], self.values[layer_idx]


def _wrappers(model):
    import torch

    cfg = model.config
    L, nkv, hd = sc.MAX_LENGTH, cfg.num_key_value_heads, cfg.head_dim

    def masks(cache_position):
        kpos = torch.arange(L, device=cache_position.device)
        q = cache_position[:, None]
        full = kpos[None, :] <= q
        sliding = full & (kpos[None, :] > q - cfg.sliding_window)
        lo = torch.finfo(torch.float32).min

        def bias(ok):
            return torch.where(ok, 0.0, lo).to(torch.float32)[None, None]
        return {"full_attention": bias(full), "sliding_attention": bias(sliding)}

    def run(input_ids, cache_position, keys, values):
        cache = IndexCache(keys, values, cache_position)
        out = model(input_ids=input_ids, position_ids=cache_position[None], past_key_values=cache,
                    attention_mask=masks(cache_position), use_cache=True)
        flat = []
        for k, v in zip(cache.keys, cache.values):
            flat += [k, v]
        return (out.logits, *flat)

    class Prefill(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, cache_position):
            empty = [torch.zeros(1, nkv, L, hd, dtype=torch.float32) for _ in range(cfg.num_hidden_layers)]
            return run(input_ids, cache_position, empty, [e.clone() for e in empty])

    class Decode(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, cache_position, *past):
            return run(input_ids, cache_position, past[0::2], past[1::2])

    return Prefill().eval(), Decode().eval()


def build(out_root: Path) -> dict:
    import onnx
    import torch

    model = sc.make_model()
    cfg = model.config
    tokens = common.twin_tokens(NAME, cfg.vocab_size)
    prompt = tokens["prompt"][0]
    s = len(prompt)
    L, nkv, hd = sc.MAX_LENGTH, cfg.num_key_value_heads, cfg.head_dim
    tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}.", dir=out_root))
    (tmp / "onnx").mkdir()
    paths = {"prefill": "onnx/prefill.onnx", "decode": "onnx/decode.onnx"}
    kv_out = [f"present.{i}.{w}" for i in range(cfg.num_hidden_layers) for w in ("key", "value")]
    kv_in = [f"past_key_values.{i}.{w}" for i in range(cfg.num_hidden_layers) for w in ("key", "value")]
    prefill, decode = _wrappers(model)
    ids = torch.tensor([prompt], dtype=torch.long)
    pos = torch.arange(s, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(prefill, (ids, pos), str(tmp / paths["prefill"]), input_names=["input_ids", "cache_position"],
                          output_names=["logits", *kv_out], opset_version=OPSET, dynamo=True, external_data=False)
        past = [torch.zeros(1, nkv, L, hd) for _ in kv_in]
        torch.onnx.export(decode, (ids[:, :1], pos[:1], *past), str(tmp / paths["decode"]),
                          input_names=["input_ids", "cache_position", *kv_in], output_names=["logits", *kv_out],
                          opset_version=OPSET, dynamo=True, external_data=False)
    for rel in paths.values():  # the exporter's per-node debug metadata (stack traces with this
        m = onnx.load(str(tmp / rel))  # machine's paths: 1.2 MB a graph) is dropped; nothing else changes
        for node in m.graph.node:
            del node.metadata_props[:]
        onnx.checker.check_model(m, full_check=True)
        onnx.save(m, str(tmp / rel))
    cfg.save_pretrained(tmp)
    steps, info = common.eager_oracle(model, tokens)
    common.save_oracle(tmp / "oracle.npz", steps)
    c = sc.contract(paths["prefill"], paths["decode"], "float32")
    manifest = {
        "name": NAME, "model": sc.MODEL, "form": "statickv-torchexport", "precision": "fp32",
        "exporter": {"name": "torch.onnx.export (dynamo) of prefill/decode wrapper modules, static shapes",
                     "version": f"torch {torch.__version__.split('+')[0]}",
                     "command": f"python {SCRIPT}", "env": sc.ENV, "script": SCRIPT},
        "reconstruction": sc.RECONSTRUCTION,
        "checkpoint": sc.checkpoint_record(model),
        "contract": c, "tokens": tokens,
        "oracle": {"kind": "torch-eager", "file": "oracle.npz", "dtype": "float32",
                   "weights": "the checkpoint's float32 weights"},
    }
    common.write_manifest(tmp, manifest)
    rows = sc.step_report(steps, sc.ort_static(tmp, c, tokens))
    dest = out_root / NAME
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    sc.print_report(NAME, rows, info)
    return {"name": NAME, "rows": rows, "info": info}


def main(argv=None) -> int:
    if os.environ.get("PYTHONHASHSEED") != "0":  # transformers walks set(layer_types): the node order of
        os.environ["PYTHONHASHSEED"] = "0"       # the export follows string hashing, so fix it to rebuild
        os.execv(sys.executable, [sys.executable, *sys.argv])  # byte-identical files
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(common.TWINS), help="twins folder (default zoo/twins)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    build(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
