"""Gemma-4 twin exported by transformers' own ONNX exporter (transformers.exporters, 5.2x).

`OnnxExporter().export_for_generation(model, generate_inputs, OnnxConfig(dynamic=True))` runs
`model.generate` once, captures the forward kwargs of its prefill and first decode call, and
exports each as its own graph (there is no CLI for it in 5.23):

prefill.onnx  input_ids [1, S], position_ids [1, S], one pass-through scalar per sliding layer
              (`input.past_key_values.layers.{i}._sliding_window_tensor`, an Identity to the
              output of the same name) -> logits, past_key_values.layers.{i}.{keys,values}
decode.onnx   input_ids [1, 1], position_ids [1, 1], input.past_key_values.layers.{i}.{keys,values}
              (+ the pass-through scalars) -> logits, output.past_key_values.layers.{i}.{keys,values}

KV pairs only for the unshared layers, each at its head size; no attention_mask input; the
exporter's sliding-window patch traces sliding layers as full concat layers (the mask applies
the window), so every past holds all tokens seen. The prefill and decode presents have different
names: the contract's kv.prefill_present (docs/zoo.md).

The graphs are as exported but for the per-node metadata (the exporter's stack traces, most of
each .onnx file), which is dropped to keep the twin small.

With `--ort-fusions cpu` (OnnxConfig(ort_fusions="cpu"): the exporter's own fusion into ONNX
Runtime CPU ops) the same two graphs carry com.microsoft RotaryEmbedding, SkipSimplifiedLayer-
Normalization and, in the prefill, GroupQueryAttention with the sliding mask as attention_bias.

With `--multi-token-decode` (export_for_generation(multi_token_decode=True)) the decode graph
takes any number of query tokens: it runs the prompt on an empty past and then each decode
token, so the twin ships and drives that graph alone (contract: one decoder, no prefill).

Run inside .zoo-envs/gemma4-torch:
    python zoo/build/gemma4_hfexport.py [--ort-fusions cpu] [--multi-token-decode]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import gemma4_checkpoint as ck
import gemma4_onnxrun

ENV = "zoo/envs/gemma4-torch.txt"
MODEL = "gemma4-e2b-transformers-export"  # no hub export of this form is known: no zoo.yaml entry
NAMES = {(None, False): "gemma4-hfexport-fp32", ("cpu", False): "gemma4-hfexport-ortcpu-fp32",
         (None, True): "gemma4-hfexport-mtd-fp32", ("cpu", True): "gemma4-hfexport-mtd-ortcpu-fp32"}
FORMS = {(None, False): "transformers-export-prefill-decode", ("cpu", False): "transformers-export-ort-cpu-fused",
         (None, True): "transformers-export-multi-token-decode",
         ("cpu", True): "transformers-export-multi-token-decode-ort-cpu-fused"}
SAMPLE = [5, 17, 99, 3, 42, 7, 8, 120, 33, 64, 200, 11]  # generate() input the exporter traces with
API = ("OnnxExporter().export_for_generation(model, {{input_ids: [1, 12], attention_mask: ones}}, "
       "OnnxConfig(dynamic=True{fusions}){mtd}).save_pretrained(out)")


def contract(multi_token: bool) -> dict:
    """Prefill + decode graphs; with a multi-token decode graph, that graph alone (prefill on an
    empty past, then one token a step), which the contract needs no prefill_present for."""
    lay = ck.kv_layout()
    sliding = [i for i in range(lay["count"]) if lay["layer_types"][i] == "sliding_attention"]
    return {
        "graphs": {"decoder": "decode.onnx", "embed": None, "prefill": None if multi_token else "prefill.onnx"},
        "input_ids": "input_ids", "attention_mask": None, "position_ids": "position_ids",
        "position_base": 0,
        "extra_inputs": {f"input.past_key_values.layers.{i}._sliding_window_tensor": "zero" for i in sliding},
        "kv": {"past": "input.past_key_values.layers.{i}.{kv}s", "present": "output.past_key_values.layers.{i}.{kv}s",
               **({} if multi_token else {"prefill_present": "past_key_values.layers.{i}.{kv}s"}),
               "count": lay["count"], "layout": "BNSH", "heads": ck.CONFIG["num_key_value_heads"],
               "head_dim": lay["head_dim"], "dtype": "float32", "cache": "concat", "max_length": None, "window": None},
        "logits": "logits",
    }


def strip_metadata(path: Path) -> None:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    for n in m.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    common.atomic_write_bytes(path, m.SerializeToString())


def build(fusions: str | None, multi_token: bool) -> None:
    import torch
    import transformers
    from transformers.exporters import OnnxConfig, OnnxExporter
    ckpt = Path(tempfile.mkdtemp(prefix="gemma4-ckpt-"))
    out = Path(tempfile.mkdtemp(prefix="gemma4-hfexport-"))
    try:
        ck.save_checkpoint(ck.make_model(), ckpt)
        model = ck.load_checkpoint(ckpt)
        gen = ck.check_generate(model)
        ids = torch.tensor([SAMPLE])
        exported = OnnxExporter().export_for_generation(
            model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, OnnxConfig(dynamic=True, ort_fusions=fusions),
            multi_token_decode=multi_token)
        exported.save_pretrained(str(out))
        name = NAMES[(fusions, multi_token)]
        twin = common.TWINS / name
        if twin.exists():
            shutil.rmtree(twin)
        twin.mkdir(parents=True)
        graphs = ("decode",) if multi_token else ("prefill", "decode")  # an undriven prefill is not shipped
        for g in graphs:
            shutil.copy(out / f"{g}.onnx", twin / f"{g}.onnx")
            shutil.copy(out / f"{g}.onnx.data", twin / f"{g}.onnx.data")
        shutil.copy(out / "export.json", twin / "export.json")
        for f in (f"{g}.onnx" for g in graphs):
            strip_metadata(twin / f)
        saved_config = ck.write_config(ckpt, twin)
        model = ck.load_checkpoint(ckpt)  # a fresh copy: generate() and the export leave state behind
        tokens, steps, info = ck.oracle_and_tokens(model, name)
        common.save_oracle(twin / "oracle.npz", steps)
        c = contract(multi_token)
        cmp = common.compare_steps(steps, gemma4_onnxrun.run(twin, c, tokens))
        manifest = {
            "name": name, "model": MODEL, "form": FORMS[(fusions, multi_token)], "precision": "fp32",
            "exporter": {"name": "transformers.exporters.OnnxExporter.export_for_generation",
                         "version": transformers.__version__,
                         "command": "python zoo/build/gemma4_hfexport.py" + (f" --ort-fusions {fusions}" if fusions else "")
                         + (" --multi-token-decode" if multi_token else ""),
                         "env": ENV,
                         "script": "zoo/build/gemma4_hfexport.py"},
            "reconstruction": None,
            "checkpoint": {**ck.checkpoint_record(model), "config": saved_config},
            "contract": c, "tokens": tokens,
            "oracle": {"kind": "torch-eager", "file": "oracle.npz", "dtype": "float32",
                       "weights": "the checkpoint's float32 weights"},
            "build_info": {"kv_sharing": ck.kv_layout(), "init_std": ck.INIT_STD, "generate_check": gen,
                           "exporter_sample_input_ids": SAMPLE,
                           "exporter_call": API.format(fusions=f", ort_fusions={fusions!r}" if fusions else "",
                                                       mtd=", multi_token_decode=True" if multi_token else ""),
                           "exporter_versions": {"transformers": transformers.__version__,
                                                 "torch": torch.__version__.split("+")[0]},
                           "postprocess": "per-node metadata_props and doc_strings dropped from both graphs",
                           "eager_steps": info["steps"],
                           "eager_cached_vs_full_max_abs": info.get("cached_vs_full_max_abs"),
                           "eager_top1": info["top1"], "ort_cpu_vs_eager": cmp},
            "notes": ("the _sliding_window_tensor inputs are pass-through scalars (an Identity to the output of "
                      "the same name), so their value cannot change the logits; fed 0"
                      + ("; the exporter's prefill graph is not shipped: this multi-token decode graph runs the prompt "
                         "too" if multi_token else "")),
        }
        common.write_manifest(twin, manifest)
        print(name, json.dumps(cmp))
    finally:
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ort-fusions", choices=["cpu"], default=None,
                    help="OnnxConfig(ort_fusions=...): fuse into ONNX Runtime's ops for that provider")
    ap.add_argument("--multi-token-decode", action="store_true",
                    help="export_for_generation(multi_token_decode=True): the decode graph takes any number of "
                         "tokens, so it alone runs the prompt and the decode steps")
    args = ap.parse_args()
    ck.fixed_hash_seed()
    build(args.ort_fusions, args.multi_token_decode)
