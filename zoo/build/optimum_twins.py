"""Build the optimum twins: tiny Qwen2.5 and Gemma-3 text checkpoints exported by optimum's ONNX
exporter (the decomposed form transformers.js ships: RoPE, repeat_kv and attention as plain ONNX
ops, a concatenating past), fp32 and q4 the way transformers.js' scripts/quantize.py makes q4
(onnxruntime MatMulNBitsQuantizer, block 32, symmetric, accuracy_level None, MatMul only).

Run inside the optimum environment (zoo/envs/optimum.txt), from the repository root:

    .zoo-envs/optimum/bin/python zoo/build/optimum_twins.py [NAME ...] [--out zoo/twins]

Each family is exported once (a fresh seeded checkpoint in a temporary folder, then the real
`optimum-cli export onnx` on it); its fp32 and q4 twins are written from that export. The
checkpoint itself is not kept: the twin ships config.json, the ONNX file and the eager oracle.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ENV_FILE = "zoo/envs/optimum.txt"
SCRIPT = "zoo/build/optimum_twins.py"
FORM = "optimum-decomposed"
SEED = 0

# Tiny, same architecture as the hub models (zoo-facts.md §1, §3). hidden 64 (sqrt exact for
# Gemma's embedding scale), head_dim 16 (ORT CPU rotary kernels want % 16), GQA ratio kept,
# Qwen2.5's QKV bias and tied embeddings, Gemma-3's 5:1 sliding/full pattern with a window of 8
# so the 24-token prompt crosses it. initializer_range 0.1 keeps logits non-degenerate.
FAMILIES = {
    "qwen25": {
        "model": "qwen2.5-0.5b",
        "class": "Qwen2ForCausalLM",
        "config_class": "Qwen2Config",
        "config": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
                       sliding_window=128, max_window_layers=4, hidden_act="silu", initializer_range=0.1,
                       bos_token_id=1, eos_token_id=2),
        "position_ids": "position_ids",
        "notes": ("optimum ties lm_head to the embedding (accelerate's tied-weight check): lm_head is a MatMul on "
                  "Transpose(model.embed_tokens.weight), so q4 leaves it float, as the hub's model_q4.onnx size "
                  "implies. transformers.js' convert.py also runs onnxslim by default; this twin is optimum-cli's "
                  "graph as exported."),
    },
    "gemma3": {
        "model": "gemma3-1b",
        "class": "Gemma3ForCausalLM",
        "config_class": "Gemma3TextConfig",
        "config": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                       max_position_embeddings=128, sliding_window=8, rope_theta=1e6, rope_local_base_freq=1e4,
                       rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh", initializer_range=0.1,
                       tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0),
        # optimum-onnx 0.1.0's Gemma3TextOnnxConfig derives from TextDecoderOnnxConfig (no
        # position_ids input): positions come from the past length inside the graph
        "position_ids": None,
        "notes": ("optimum-onnx 0.1.0 gives Gemma-3 text no position_ids input (Gemma3TextOnnxConfig derives from "
                  "TextDecoderOnnxConfig; the hub's gemma-3-1b-it-ONNX takes 1-based position_ids): positions come "
                  "from the past length inside the graph. Its tied lm_head is not deduplicated (the embedding is "
                  "Gemma3TextScaledWordEmbedding, not nn.Embedding, so optimum skips the group): lm_head is a second "
                  "float copy, and q4 quantises it (MatMulNBits) while the Gather embedding stays float. "
                  "transformers.js' convert.py also runs onnxslim by default; this twin is optimum-cli's graph."),
    },
}
# Shape-true twins (issue 22): every field that shapes attention as the hub model's config has it,
# only hidden size, MLP width and vocabulary shrunk; q4 only, as the hub files are (fp32 would not
# ship within 16 MiB). Qwen2.5 derives head_dim from hidden_size (896 / 14 = 64), so hidden stays
# 896 and the layer count is cut to 2 (hub 24). Gemma-3 1B keeps all 26 layers (zoo-facts.md §1).
# max_position_embeddings 1024 (hub 32768): enough for the 600-token prompt and its decode steps.
LONG_PROMPT = dict(prompt_len=600, decode_len=4)
FAMILIES["qwen25-shapetrue"] = {
    **FAMILIES["qwen25"], "precisions": ["q4"], "tokens": LONG_PROMPT,
    "config": dict(FAMILIES["qwen25"]["config"], hidden_size=896, num_hidden_layers=2, num_attention_heads=14,
                   num_key_value_heads=2, max_position_embeddings=1024, sliding_window=32768, max_window_layers=21,
                   initializer_range=0.02),
    "notes": "Shape-true (issue 22): Qwen2.5-0.5B's attention geometry, 2 of its 24 layers. "
             + FAMILIES["qwen25"]["notes"],
}
FAMILIES["gemma3-shapetrue"] = {
    **FAMILIES["gemma3"], "precisions": ["q4"], "tokens": LONG_PROMPT,
    "config": dict(FAMILIES["gemma3"]["config"], num_hidden_layers=26, head_dim=256, query_pre_attn_scalar=256,
                   sliding_window=512, max_position_embeddings=1024),
    "notes": "Shape-true (issue 22): gemma-3-1b-it's attention geometry. " + FAMILIES["gemma3"]["notes"],
}
PRECISIONS = {"fp32": "onnx/model.onnx", "q4": "onnx/model_q4.onnx"}
TWINS = {f"{fam}-optimum-{p}": (fam, p) for fam, spec in FAMILIES.items() for p in spec.get("precisions", PRECISIONS)}
Q4 = dict(block_size=32, is_symmetric=True, accuracy_level=None)


def _versions() -> dict:
    from importlib.metadata import version
    return {k: version(k) for k in ("optimum-onnx", "optimum", "transformers", "torch", "onnxruntime", "onnx")}


def make_checkpoint(fam: str, ckpt: Path):
    import torch
    import transformers
    spec = FAMILIES[fam]
    torch.manual_seed(SEED)
    cfg = getattr(transformers, spec["config_class"])(**spec["config"])
    model = getattr(transformers, spec["class"])(cfg).eval()
    model.save_pretrained(ckpt)


def export(ckpt: Path, out: Path) -> tuple[str, str]:
    """The real optimum CLI, offline on the local checkpoint. Returns (command, its log)."""
    cmd = ["optimum-cli", "export", "onnx", "--model", str(ckpt), "--task", "text-generation-with-past", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    exe = Path(sys.executable).with_name("optimum-cli")
    if not exe.exists():
        raise SystemExit(f"{SCRIPT}: no optimum-cli beside {sys.executable}; run it with the Python of the "
                         f"exporter environment (.zoo-envs/optimum, from {ENV_FILE})")
    r = subprocess.run([str(exe), *cmd[1:]], check=False, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"optimum-cli export failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    shown = "optimum-cli export onnx --model ckpt --task text-generation-with-past out"
    return shown, r.stdout + r.stderr


def quantize_q4(src: Path, dst: Path) -> None:
    """transformers.js scripts/quantize.py `quantize_q4`: MatMul4BitsQuantizer(model, block_size,
    is_symmetric, accuracy_level) (now MatMulNBitsQuantizer, bits 4 by default), process, save."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    q = MatMulNBitsQuantizer(model=onnx.load(str(src)), **Q4)
    q.process()
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(q.model.model, str(dst))


def contract(fam: str, rel: str) -> dict:
    c = FAMILIES[fam]["config"]
    return {
        "graphs": {"decoder": rel, "embed": None, "prefill": None},
        "input_ids": "input_ids",
        "attention_mask": "attention_mask",
        "position_ids": FAMILIES[fam]["position_ids"],
        "position_base": 0,
        "extra_inputs": {},
        "kv": {"past": "past_key_values.{i}.{kv}", "present": "present.{i}.{kv}",
               "count": c["num_hidden_layers"], "layout": "BNSH", "heads": c["num_key_value_heads"],
               "head_dim": c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
               "dtype": "float32", "cache": "concat", "max_length": None, "window": None},
        "logits": "logits",
    }


def eager_model(ckpt: Path):
    import transformers
    return transformers.AutoModelForCausalLM.from_pretrained(
        ckpt, attn_implementation="eager", dtype="float32").eval()


def build_family(fam: str, precisions: list[str], out_root: Path) -> list[dict]:
    versions = _versions()
    spec = FAMILIES[fam]
    made = []
    with tempfile.TemporaryDirectory(prefix=f"optimum-{fam}-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_checkpoint(fam, tmp / "ckpt")
        t_ckpt = time.perf_counter()
        shown, log = export(tmp / "ckpt", tmp / "export")
        t_export = time.perf_counter()
        warnings = sorted({re.sub(r"^\S*site-packages/", "", ln.strip()) for ln in log.splitlines()
                           if "Warning" in ln or "duplicate" in ln.lower() or "tied weights" in ln})
        for prec in precisions:
            t1 = time.perf_counter()
            name = f"{fam}-optimum-{prec}"
            rel = PRECISIONS[prec]
            stage = tmp / "twin" / name
            stage.mkdir(parents=True)
            shutil.copy(tmp / "ckpt" / "config.json", stage / "config.json")
            if prec == "fp32":
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(tmp / "export" / "model.onnx", stage / rel)
            else:
                quantize_q4(tmp / "export" / "model.onnx", stage / rel)
            tokens = common.twin_tokens(name, spec["config"]["vocab_size"], **spec.get("tokens", {}))
            model = eager_model(tmp / "ckpt")
            info = {"export_command": shown, "exporter_messages": warnings}
            if prec == "q4":
                errs = common.load_dequantized(model, stage / rel)
                info["quantize"] = ("onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer("
                                    "model, block_size=32, is_symmetric=True, accuracy_level=None).process()")
                info["dequantized_weights_loaded"] = len(errs)
                info["quantization_max_abs"] = max(errs.values()) if errs else 0.0
            steps, oinfo = common.eager_oracle(model, tokens)
            common.save_oracle(stage / "oracle.npz", steps)
            info["eager"] = oinfo
            c = contract(fam, rel)
            ort_rows = common.compare_steps(steps, common.ort_teacher_forced(stage / rel, tokens, c))
            info["ort_cpu_vs_eager"] = ort_rows
            print(f"{name}: checkpoint {t_ckpt - t0:.1f} s, export {t_export - t_ckpt:.1f} s, "
                  f"twin {time.perf_counter() - t1:.1f} s", file=sys.stderr)
            manifest = {
                "name": name, "model": spec["model"], "form": FORM, "precision": prec,
                "exporter": {"name": "optimum-onnx (optimum.exporters.onnx)", "version": versions["optimum-onnx"],
                             "command": f"python {SCRIPT} {name}", "env": ENV_FILE, "script": SCRIPT},
                "reconstruction": None,
                "checkpoint": {"class": spec["class"], "seed": SEED, "transformers": versions["transformers"],
                               "torch": versions["torch"], "config": spec["config"]},
                "contract": c, "tokens": tokens,
                "oracle": {"kind": "torch-eager", "file": "oracle.npz", "dtype": "float32",
                           "weights": ("the graph's own dequantised weights loaded back into the eager model"
                                       if prec == "q4" else "the checkpoint's float32 weights")},
                "build_info": dict(info, versions=versions),
                "notes": spec["notes"],
            }
            common.write_manifest(stage, manifest)
            dest = out_root / name
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(stage, dest)
            made.append({"name": name, "ort_cpu_vs_eager": ort_rows, "eager_top1": oinfo.get("top1"),
                         "sizes": json.loads((dest / "manifest.json").read_text())["sizes"]})
    return made


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"twins to build (default: all of {', '.join(TWINS)})")
    ap.add_argument("--out", default=str(common.TWINS), help="folder the twin folders go into")
    a = ap.parse_args(argv)
    names = a.names or list(TWINS)
    bad = [n for n in names if n not in TWINS]
    if bad:
        print(f"{SCRIPT}: unknown twin {', '.join(bad)}; known: {', '.join(TWINS)}", file=sys.stderr)
        return 2
    by_fam: dict[str, list[str]] = {}
    for n in names:
        fam, prec = TWINS[n]
        by_fam.setdefault(fam, []).append(prec)
    for fam, precs in by_fam.items():
        t = time.perf_counter()
        for row in build_family(fam, precs, Path(a.out)):
            print(json.dumps(row))
        print(f"{fam}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
