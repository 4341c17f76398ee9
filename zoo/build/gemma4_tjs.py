"""Gemma-4 twin in the transformers.js two-graph form of onnx-community/gemma-4-E2B-it-ONNX.

onnx/embed_tokens.onnx:           input_ids -> inputs_embeds [B,S,H], per_layer_inputs [B,S,L,P]
onnx/decoder_model_merged.onnx:   inputs_embeds, per_layer_inputs, attention_mask, position_ids,
                                  past_key_values.{0..K-1}.{key,value} -> logits, present.*
with KV pairs only for the K unshared layers, each at its layer's head size (zoo-facts.md §4).

No public exporter emits this form (the ORT-GenAI builder has no Gemma-4 class; mobius and
transformers' own exporter emit other layouts): it is this project's reconstruction, made with
torch.onnx.export (dynamo) of two wrapper modules around the eager transformers model. The
embedding graph holds the two scaled lookups; the decoder holds the per-layer projection, as the
hub's split must (the projection reads inputs_embeds, which TJS may overwrite with image features).

Run inside .zoo-envs/gemma4-torch:  python zoo/build/gemma4_tjs.py [--q4 | --shape-true]
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
MODEL = "gemma4-e2b-onnx-community"  # the zoo.yaml entry: onnx-community/gemma-4-E2B-it-ONNX
SHAPE_TRUE_NAME = "gemma4-shapetrue-tjs-q4"
RECONSTRUCTION = ("this project's reconstruction of the transformers.js two-graph form of "
                  "onnx-community/gemma-4-E2B-it-ONNX (I/O names and split as on the hub); no public "
                  "exporter emits it: torch.onnx.export (dynamo) of two wrapper modules around the "
                  "eager transformers Gemma4ForCausalLM")


def _wrappers(model):
    import torch
    from transformers import DynamicCache
    n_kv = ck.kv_layout()["count"]
    cfg = model.config

    class Embed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model.model

        def forward(self, input_ids):
            return self.inner.embed_tokens(input_ids), self.inner.get_per_layer_inputs(input_ids, None)

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = model

        def forward(self, inputs_embeds, per_layer_inputs, attention_mask, position_ids, past):
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(n_kv)])
            out = self.lm(inputs_embeds=inputs_embeds, per_layer_inputs=per_layer_inputs,
                          attention_mask=attention_mask, position_ids=position_ids,
                          past_key_values=cache, use_cache=True)
            present = []
            for i in range(n_kv):
                present += [out.past_key_values.layers[i].keys, out.past_key_values.layers[i].values]
            return out.logits, present

    assert cfg.num_hidden_layers - cfg.num_kv_shared_layers == n_kv
    return Embed().eval(), Decoder().eval()


def _rename_dims(path, renames: dict) -> None:
    """Give the exported symbolic dims the hub's names (torch.export numbers them s0, s1...)."""
    import onnx
    m = onnx.load(str(path))
    for v in list(m.graph.input) + list(m.graph.output):
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and (v.name, d.dim_param) in renames:
                d.dim_param = renames[(v.name, d.dim_param)]
            elif d.HasField("dim_param") and d.dim_param in renames:
                d.dim_param = renames[d.dim_param]
    common.atomic_write_bytes(path, m.SerializeToString())


def tidy(path) -> None:
    """Name each Linear's MatMul (and its weight) after the module it came from, as optimum and the
    hub graphs do (`/model/layers.0/self_attn/q_proj/MatMul`), then drop the exporter's per-node
    metadata (stack traces: half the file). The quantiser names its MatMulNBits after the MatMul,
    so the q4 oracle finds each weight's parameter from the name."""
    import onnx
    m = onnx.load(str(path))
    uses = {}
    for n in m.graph.node:
        for x in n.input:
            uses[x] = uses.get(x, 0) + 1
    inits = {t.name: t for t in m.graph.initializer}
    for n in m.graph.node:
        ns = next((p.value for p in n.metadata_props if p.key == "namespace"), "")
        parts = ns.split("/")
        if n.op_type == "MatMul" and len(parts) >= 2 and "torch.nn.modules.linear.Linear" in parts[-2]:
            module = parts[-2].split(":")[0]
            module = module.removeprefix("lm.")
            n.name = "/" + module.replace(".", "/").replace("/layers/", "/layers.") + "/MatMul"
            w = n.input[1]
            if w in inits and uses.get(w) == 1:
                new = module + ".weight.T"
                inits[w].name = new
                n.input[1] = new
        del n.metadata_props[:]
        n.doc_string = ""
    del m.graph.value_info[:]
    common.atomic_write_bytes(path, m.SerializeToString())


def export(model, out_dir: Path) -> None:
    import torch
    from torch.export import Dim
    embed, dec = _wrappers(model)
    lay = ck.kv_layout()
    H, L, P = ck.CONFIG["hidden_size"], ck.CONFIG["num_hidden_layers"], ck.CONFIG["hidden_size_per_layer_input"]
    b, s, p = 1, 3, 5
    ids = torch.tensor([[5, 9, 11]])
    (out_dir / "onnx").mkdir(parents=True, exist_ok=True)
    n = max(128, ck.CONFIG["max_position_embeddings"])
    batch, seq, past_len = Dim("batch_size", min=1, max=8), Dim("sequence_length", min=1, max=n), \
        Dim("past_sequence_length", min=1, max=n)
    total = Dim("total_sequence_length", min=2, max=2 * n)
    prog = torch.onnx.export(embed, (ids,), dynamo=True, input_names=["input_ids"],
                             output_names=["inputs_embeds", "per_layer_inputs"],
                             dynamic_shapes=({0: batch, 1: seq},), optimize=True)
    prog.save(str(out_dir / "onnx" / "embed_tokens.onnx"))
    tidy(out_dir / "onnx" / "embed_tokens.onnx")
    past = []
    for i, hd in enumerate(lay["head_dim"]):
        past += [torch.randn(b, 1, p, hd), torch.randn(b, 1, p, hd)]
    args = (torch.randn(b, s, H), torch.randn(b, s, L, P), torch.ones(b, p + s, dtype=torch.long),
            torch.arange(p, p + s)[None], past)
    kv_shapes = [{0: batch, 2: past_len} for _ in past]
    names_in = ["inputs_embeds", "per_layer_inputs", "attention_mask", "position_ids"] + \
        [f"past_key_values.{i}.{w}" for i in range(lay["count"]) for w in ("key", "value")]
    names_out = ["logits"] + [f"present.{i}.{w}" for i in range(lay["count"]) for w in ("key", "value")]
    prog = torch.onnx.export(
        dec, args, dynamo=True, input_names=names_in, output_names=names_out, optimize=True,
        dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, kv_shapes))
    prog.save(str(out_dir / "onnx" / "decoder_model_merged.onnx"))
    tidy(out_dir / "onnx" / "decoder_model_merged.onnx")


def quantize_q4(src: Path, dst: Path) -> None:
    """q4 as the TJS conversion script does it: MatMulNBits block 32, symmetric, MatMul only."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    m = onnx.load(str(src))
    q = MatMulNBitsQuantizer(m, block_size=32, is_symmetric=True, accuracy_level=None, op_types_to_quantize=("MatMul",))
    q.process()
    common.atomic_write_bytes(dst, q.model.model.SerializeToString())


def contract(precision: str) -> dict:
    lay = ck.kv_layout()
    suf = "" if precision == "fp32" else "_q4"
    return {
        "graphs": {"decoder": f"onnx/decoder_model_merged{suf}.onnx", "embed": f"onnx/embed_tokens{suf}.onnx",
                   "prefill": None},
        "input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
        "position_base": 0, "extra_inputs": {},
        "kv": {"past": "past_key_values.{i}.{kv}", "present": "present.{i}.{kv}", "count": lay["count"],
               "layout": "BNSH", "heads": ck.CONFIG["num_key_value_heads"], "head_dim": lay["head_dim"],
               "dtype": "float32", "cache": "concat", "max_length": None, "window": None},
        "logits": "logits",
    }


def build(q4: bool, shape_true: bool = False, dest: Path | None = None) -> None:
    """The twins under `dest` (default zoo/twins/, replacing the shipped ones); a rebuild check
    writes them elsewhere and compares (harness/zoo/rebuild.py)."""
    dest = dest or common.TWINS
    ckpt = Path(tempfile.mkdtemp(prefix="gemma4-ckpt-"))
    try:
        model0 = ck.make_model()
        ck.save_checkpoint(model0, ckpt)
        model = ck.load_checkpoint(ckpt)
        gen = ck.check_generate(model)
        if shape_true:  # q4 only, as the hub ships it: the fp32 graph would be ~50 MB
            variants = [("q4", SHAPE_TRUE_NAME)]
        else:
            variants = [("fp32", "gemma4-tjs-fp32")] + ([("q4", "gemma4-tjs-q4")] if q4 else [])
        for precision, name in variants:
            twin = dest / name
            if twin.exists():
                shutil.rmtree(twin)
            twin.mkdir(parents=True)
            m = ck.load_checkpoint(ckpt)
            export(m, twin)
            if precision == "q4":
                for g in ("embed_tokens", "decoder_model_merged"):
                    quantize_q4(twin / "onnx" / f"{g}.onnx", twin / "onnx" / f"{g}_q4.onnx")
                    (twin / "onnx" / f"{g}.onnx").unlink()
                errs = common.load_dequantized(m, twin / "onnx" / "decoder_model_merged_q4.onnx", targets=_tjs_targets)
            tokens, steps, info = ck.oracle_and_tokens(m, name)
            common.save_oracle(twin / "oracle.npz", steps)
            saved_config = ck.write_config(ckpt, twin)
            c = contract(precision)
            got = gemma4_onnxrun.run(twin, c, tokens)
            cmp = common.compare_steps(steps, got)
            build_info = {"kv_sharing": ck.kv_layout(), "init_std": ck.INIT_STD, "generate_check": gen,
                          "eager_steps": info["steps"], "eager_cached_vs_full_max_abs": info.get("cached_vs_full_max_abs"),
                          "eager_top1": info["top1"], "ort_cpu_vs_eager": cmp, "exporter_versions": _versions()}
            if precision == "q4":
                build_info["quantisation_max_abs"] = max(errs.values())
                build_info["weights_loaded_back"] = len(errs)
            manifest = {
                "name": name, "model": MODEL, "form": "tjs-gemma4-two-graph", "precision": precision,
                "exporter": {"name": "torch.onnx.export (dynamo) of two wrapper modules" +
                             (" + onnxruntime MatMulNBitsQuantizer (block 32, symmetric)" if precision == "q4" else ""),
                             "version": f"torch {_versions()['torch']}",
                             "command": "python zoo/build/gemma4_tjs.py" + (" --q4" if q4 else "")
                             + (" --shape-true" if shape_true else ""), "env": ENV,
                             "script": "zoo/build/gemma4_tjs.py"},
                "reconstruction": RECONSTRUCTION,
                "checkpoint": {**ck.checkpoint_record(m), "config": saved_config},
                "contract": c, "tokens": tokens,
                "oracle": {"kind": "torch-eager", "file": "oracle.npz", "dtype": "float32",
                           "weights": "the checkpoint's float32 weights" if precision == "fp32" else
                           "the graph's own dequantised weights loaded back into the eager model"},
                "build_info": build_info,
            }
            common.write_manifest(twin, manifest)
            print(name, json.dumps(cmp))
    finally:
        shutil.rmtree(ckpt, ignore_errors=True)


def _tjs_targets(node_name: str, params: dict) -> list:
    """`/model/layers.0/self_attn/q_proj/MatMul_Q4` (tidy's names, the quantiser's suffix) ->
    the transformers parameter `model.layers.0.self_attn.q_proj.weight`."""
    if not node_name.endswith("/MatMul_Q4"):
        return []
    p = node_name[1:-len("/MatMul_Q4")].replace("/", ".") + ".weight"
    return [(p, 0, None)] if p in params else []


def _versions() -> dict:
    import onnx
    import onnxruntime
    import onnxscript
    import torch
    import transformers
    return {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "onnxscript": onnxscript.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--q4", action="store_true", help="also build the q4 twin (MatMulNBits)")
    ap.add_argument("--shape-true", action="store_true",
                    help=f"build {SHAPE_TRUE_NAME} instead: E2B's attention geometry (issue 22), q4 only")
    ap.add_argument("--dest", type=Path, default=None, metavar="DIR",
                    help="write the twins under DIR instead of zoo/twins/ (a rebuild check)")
    args = ap.parse_args()
    ck.fixed_hash_seed()
    if args.shape_true:
        ck.use_shape_true()
    build(args.q4, args.shape_true, args.dest)
