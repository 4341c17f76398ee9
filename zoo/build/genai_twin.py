"""Build the ORT-GenAI model-builder twins (issue 12): Gemma-3 in the April-2025 form (RoPE
outside GQA, position_ids) and the current form (do_rotary=1, windowed cache, quantised
embedding), and Phi-3 mini int4 (packed QKV, do_rotary=1, shared buffer).

Run inside the twin's exporter environment (zoo/envs/<env>.txt, created under .zoo-envs/<env>/):

    .zoo-envs/genai-0.18.0/bin/python zoo/build/genai_twin.py gemma3-genai-current-q4

It writes a tiny random-weight checkpoint to a temporary folder (never committed), runs the
real builder on it offline (`python -m onnxruntime_genai.models.builder -i ckpt -o out ...`),
copies the graph, its external data and genai_config.json into zoo/twins/<name>/, computes the
teacher-forced eager oracle (quantised twins: the graph's own dequantised weights loaded back),
checks the graph on onnxruntime CPU against it and writes the manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SEED = 0
GEMMA3 = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
              num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, sliding_window=8,
              max_position_embeddings=128, rms_norm_eps=1e-6, initializer_range=0.2,
              pad_token_id=0, eos_token_id=1, bos_token_id=2)
PHI3 = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=4096, original_max_position_embeddings=4096,
            rope_theta=10000.0, sliding_window=16, rms_norm_eps=1e-5, hidden_act="silu", initializer_range=0.2,
            tie_word_embeddings=False, pad_token_id=0, eos_token_id=2, bos_token_id=1)
# Shape-true (issue 22): every field that shapes attention as google/gemma-3-1b-it has it (zoo-facts.md
# §1: 26 layers, full at 5/11/17/23, 4 query heads on 1 KV head, head_dim 256, query_pre_attn_scalar
# 256, window 512, rope 1e6 global / 1e4 local, no softcaps); only hidden size, MLP width and
# vocabulary shrunk. max_position_embeddings 1024 (hub 32768): enough for the 600-token prompt and
# its decode steps, and it keeps the four [max_pos, 128] rotary caches at 2 MiB. Vocabulary 512, not
# 256: the builder takes any Linear with out_features == vocab_size for the LM head, and k_proj /
# v_proj (1 KV head x 256) have 256 outputs (with vocab 256 it wired lm_head to layer 0's k_proj).
GEMMA3_SHAPE_TRUE = dict(GEMMA3, vocab_size=512, num_hidden_layers=26, head_dim=256, query_pre_attn_scalar=256,
                         sliding_window=512, max_position_embeddings=1024)
#: prompt and decode lengths of the shape-true twins: the prefill crosses the 512-key window and
#: every decode position (600..603) lies past it
LONG_PROMPT = dict(prompt_len=600, decode_len=4)
# Shape-true Phi-3 mini (issue 22; zoo-facts.md §2: 32 heads on 32 KV heads, head_dim 96, rope_theta
# 1e4, sliding_window 2047, max / original_max_position_embeddings 4096). Phi-3's config has no
# head_dim: transformers and the builder derive it as hidden_size / heads, so hidden stays 3072 and
# only the layer count (1 of 32), MLP width and vocabulary are cut. Vocabulary 512, MLP 128: no
# Linear has out_features == vocab (the builder's LM-head test; fused qkv 9216, o 3072, gate_up 256).
# initializer_range 0.02 (the hub config's, not the small twins' 0.2): at hidden 3072, 0.2 gives q.k
# logits of ~100 and one-hot attention. One q4 layer's fused QKV MatMulNBits alone is ~14 MB, so the
# builder's single .onnx.data (~33 MB) is split one file per tensor after the build
# (common.split_external_data), each under 16 MiB.
PHI3_SHAPE_TRUE = dict(PHI3, hidden_size=3072, num_attention_heads=32, num_key_value_heads=32, num_hidden_layers=1,
                       intermediate_size=128, vocab_size=512, sliding_window=2047, initializer_range=0.02)
#: the prefill (2100 tokens) crosses the 2047-key window and the decode positions 2100..2103 lie past it
PHI3_LONG_PROMPT = dict(prompt_len=2100, decode_len=4)
PHI3_HUB_DIR = "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"
PHI3_FILE = "phi3-mini-4k-instruct-cpu-int4-rtn-block-32-acc-level-4.onnx"

NOTE_G3_OLD = ("Builder 0.7.1, the first release with Gemma-3 (cb5baa7f5, 2025-04-03), the builder of the April-2025 "
               "-GQA hub export: q_norm/k_norm keep RoPE out of GQA (com.microsoft.RotaryEmbedding x2 per layer, "
               "do_rotary=0, a position_ids input), separate Q/K/V, local_window_size=sliding_window on local layers. "
               "On onnxruntime 1.21.1 (this env, the runtime of that date) GQA's window attends W+1 keys: the graph "
               "matches eager with sliding_window=W+1, not W (build_info.env_ort_vs_eager_window_variants); "
               "onnxruntime 1.32 attends W keys and matches eager. EXPORTER FINDING: genai_config.json says "
               "type 'gemma3_tex' (0.7.1 slices model_type 'gemma3_text' up to find('For') == -1; fixed in 0.8.0), "
               "and the ORT-GenAI runtime refuses it (0.7.1 and 0.18.0 alike): 'Unsupported model_type in "
               "config.json: gemma3_tex'. Kept as built.")
NOTE_G3_NEW = ("Builder 0.18.0 with transformers 5.23: the builder fails on the nested rope_parameters "
               "(KeyError 'rope_type'), so zoo/build/genai_flat_config.py hands it a flattened config (weights are "
               "still loaded by the builder from the checkpoint). Form: packed QKV split, q/k norm as "
               "SimplifiedLayerNormalization before GQA, do_rotary=1 with cos/sin caches (local/global theta), "
               "sliding_window_cache=1 and window-sized past buffers on the local layers (genai_config "
               "sliding_window.layers), max_length buffers on the global one. q4: shared_embeddings=true gives a "
               "GatherBlockQuantized embedding reading lm_head's packed weight. No builder release emits the "
               "seeds' GQA node with attention_bias wired at input 10: zoo/build/genai_probe_seed.jsonl.")
FINDING_PHI3 = ("the builder drops Phi-3's sliding_window (local_window_size=-1 while transformers applies "
                "config.sliding_window=16): past the window every backend disagrees with eager")
NOTE_PHI3 = ("EXPORTER FINDING: the builder emits local_window_size=-1 for Phi-3 (0.3.0: 'Disable sliding window "
             "attribute temporarily'; 0.18.0: a layer is local only if config.layer_types says so, and Phi-3's "
             "config has none), while transformers applies config.sliding_window (2047 on the hub model, 16 here) "
             "to every layer. Past the window every backend disagrees with eager; against eager with no window "
             "the graph matches (build_info.env_ort_vs_eager_window_variants). The oracle stays the model's own "
             "semantics (sliding_window kept).")
FINDING_PHI3_SHAPE_TRUE = ("the builder drops Phi-3's sliding_window (local_window_size=-1 while transformers "
                           "applies config.sliding_window=2047, the hub config's): past the window every backend "
                           "disagrees with eager")
NOTE_PHI3_SHAPE_TRUE = ("Shape-true (issue 22): hidden 3072, 32 heads on 32 KV heads, head_dim 96, window 2047 in the "
                        "config, rope 1e4, 4096 positions as the hub model; 1 of 32 layers, MLP 128, vocabulary 512. "
                        "POST-BUILD STEP: the builder's single .onnx.data (over the 16 MiB a shipped file may have) "
                        "is re-saved one file per tensor, <graph>.data.NN (zoo/build/common.py split_external_data); "
                        "the hub file keeps one .onnx.data. " + NOTE_PHI3.replace("16 here", "2047 here too"))

SPECS = {
    "gemma3-genai-2025-04-fp32": dict(arch="gemma3", env="genai-0.7.1", builder="0.7.1", precision="fp32",
                                      extra={}, form="ortgenai-gqa-separate-rotary", model="gemma3-1b-gqa",
                                      notes=NOTE_G3_OLD),
    "gemma3-genai-2025-04-q4": dict(arch="gemma3", env="genai-0.7.1", builder="0.7.1", precision="int4",
                                    extra={}, form="ortgenai-gqa-separate-rotary", model="gemma3-1b-gqa",
                                    notes=NOTE_G3_OLD),
    "gemma3-genai-current-fp32": dict(arch="gemma3", env="genai-0.18.0", builder="0.18.0", precision="fp32",
                                      extra={}, form="ortgenai-gqa-fused-rotary-windowed", model="gemma3-1b-gqa",
                                      notes=NOTE_G3_NEW),
    "gemma3-genai-current-q4": dict(arch="gemma3", env="genai-0.18.0", builder="0.18.0", precision="int4",
                                    extra={"shared_embeddings": "true"}, form="ortgenai-gqa-fused-rotary-windowed",
                                    model="gemma3-1b-gqa", notes=NOTE_G3_NEW),
    "gemma3-shapetrue-genai-2025-04-q4": dict(arch="gemma3", env="genai-0.7.1", builder="0.7.1", precision="int4",
                                              extra={}, form="ortgenai-gqa-separate-rotary", model="gemma3-1b-gqa",
                                              config=GEMMA3_SHAPE_TRUE, tokens=LONG_PROMPT,
                                              notes="Shape-true (issue 22). " + NOTE_G3_OLD),
    "gemma3-shapetrue-genai-current-q4": dict(arch="gemma3", env="genai-0.18.0", builder="0.18.0", precision="int4",
                                              extra={"shared_embeddings": "true"},
                                              form="ortgenai-gqa-fused-rotary-windowed", model="gemma3-1b-gqa",
                                              config=GEMMA3_SHAPE_TRUE, tokens=LONG_PROMPT,
                                              notes="Shape-true (issue 22). " + NOTE_G3_NEW),
    "phi3-genai-q4": dict(arch="phi3", env="genai-0.2.0", builder="0.2.0", precision="int4",
                          extra={"int4_block_size": "32", "int4_accuracy_level": "4", "filename": PHI3_FILE},
                          subdir=PHI3_HUB_DIR, form="ortgenai-gqa-fused-rotary", model="phi3-mini-4k-genai-cpu-int4",
                          notes=NOTE_PHI3, exporter_finding=FINDING_PHI3),
    "phi3-genai-current-q4": dict(arch="phi3", env="genai-0.18.0", builder="0.18.0", precision="int4",
                                  extra={"int4_block_size": "32", "accuracy_level": "4", "filename": PHI3_FILE},
                                  subdir=PHI3_HUB_DIR, form="ortgenai-gqa-fused-rotary",
                                  model="phi3-mini-4k-genai-cpu-int4", notes=NOTE_PHI3,
                                  exporter_finding=FINDING_PHI3),
    "phi3-shapetrue-genai-current-q4": dict(arch="phi3", env="genai-0.18.0", builder="0.18.0", precision="int4",
                                            extra={"int4_block_size": "32", "accuracy_level": "4",
                                                   "filename": PHI3_FILE},
                                            subdir=PHI3_HUB_DIR, form="ortgenai-gqa-fused-rotary",
                                            model="phi3-mini-4k-genai-cpu-int4", config=PHI3_SHAPE_TRUE,
                                            tokens=PHI3_LONG_PROMPT, split_external_data=True,
                                            notes=NOTE_PHI3_SHAPE_TRUE, exporter_finding=FINDING_PHI3_SHAPE_TRUE),
}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def make_checkpoint(spec: dict, ckpt: Path) -> dict:
    """A seeded random-weight checkpoint saved with this environment's transformers."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.manual_seed(SEED)
    if spec["arch"] == "gemma3":
        kw = dict(spec.get("config", GEMMA3))
        if int(transformers.__version__.split(".")[0]) < 5:  # 4.5x: flat rope fields, a layer pattern
            kw.update(rope_theta=1e6, rope_local_base_freq=1e4, sliding_window_pattern=6)
        cfg = transformers.Gemma3TextConfig(**kw)
        cfg.architectures = ["Gemma3ForCausalLM"]
    else:
        cfg = transformers.Phi3Config(**spec.get("config", PHI3))
        cfg.architectures = ["Phi3ForCausalLM"]
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float()
    model.save_pretrained(ckpt, safe_serialization=True)
    _tiny_tokenizer(ckpt, cfg.vocab_size)
    return {"class": type(model).__name__, "seed": SEED, "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0]}


def _tiny_tokenizer(ckpt: Path, vocab: int) -> None:
    """A word-level tokenizer over ids t0..t{vocab-1}: the builder saves tokenizer files and
    some versions refuse a folder without one. The twins are driven by token ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", pad_token="t0", eos_token="t1",
                            bos_token="t2").save_pretrained(ckpt)


def builder_command(spec: dict) -> list[str]:
    """The builder's own CLI, as run (checkpoint `ckpt`, output `out`, cache `cache`)."""
    cmd = ["-m", "onnxruntime_genai.models.builder"]
    if spec["arch"] == "gemma3" and spec["builder"] == "0.18.0":
        cmd = ["zoo/build/genai_flat_config.py"]  # transformers-5 Gemma-3 config flattened for it
    cmd += ["-i", "ckpt", "-o", "out", "-p", spec["precision"], "-e", "cpu", "-c", "cache"]
    if spec["extra"]:
        cmd += ["--extra_options"] + [f"{k}={v}" for k, v in spec["extra"].items()]
    return cmd


def run_builder(spec: dict, work: Path) -> tuple[str, float, str]:
    args = builder_command(spec)
    real = [sys.executable] + [str(common.REPO / a) if a.endswith(".py") else a for a in args]
    t0 = time.monotonic()
    # builder 0.18.0 stamps producer_version with `git rev-parse HEAD` run five folders above its
    # own module: inside .zoo-envs that is this repository's HEAD, so every commit changed the
    # graph's bytes. Stop git's search at .zoo-envs; the builder falls back to its wheel's commit.
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(common.REPO / ".zoo-envs"))
    proc = subprocess.run(real, cwd=work, capture_output=True, text=True, env=env)
    dt = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    (work / "builder.log").write_text(log)
    if proc.returncode != 0:
        raise SystemExit(f"builder failed ({proc.returncode}); log: {work / 'builder.log'}\n" + log[-3000:])
    return "python " + " ".join(args), dt, log


def install(spec: dict, name: str, work: Path, dest_root: Path) -> tuple[Path, str]:
    """Copy what the twin needs (graph, external data, genai_config.json, config.json)."""
    twin = dest_root / name
    if twin.exists():
        shutil.rmtree(twin)
    dest = twin / spec.get("subdir", "") if spec.get("subdir") else twin
    dest.mkdir(parents=True)
    out = work / "out"
    onnx_name = spec["extra"].get("filename", "model.onnx")
    for f in sorted(out.iterdir()):
        if f.name == onnx_name or f.name.startswith(onnx_name + ".") or f.name == "genai_config.json":
            shutil.copy2(f, dest / f.name)
    shutil.copy2(work / "ckpt" / "config.json", twin / "config.json")
    rel = (dest / onnx_name).relative_to(twin).as_posix()
    return twin, rel


def contract(spec: dict, twin: Path, decoder: str, summary: dict) -> tuple[dict, dict]:
    gc = json.loads((twin / Path(decoder).parent / "genai_config.json").read_text())
    dec = gc["model"]["decoder"]
    names = {i["name"] for i in summary["inputs"]}
    share = bool(gc["search"].get("past_present_share_buffer"))
    window = dec.get("sliding_window") or {}
    windowed = any(a["attrs"].get("sliding_window_cache") for a in summary["attention"])
    kv = {"past": dec["inputs"]["past_key_names"].replace("%d", "{i}").replace(".key", ".{kv}"),
          "present": dec["outputs"]["present_key_names"].replace("%d", "{i}").replace(".key", ".{kv}"),
          "count": dec["num_hidden_layers"], "layout": "BNSH", "heads": dec["num_key_value_heads"],
          "head_dim": dec["head_size"], "dtype": "float32",
          "cache": "sliding_window" if windowed else ("shared_buffer" if share else "concat"),
          "max_length": gc["search"]["max_length"] if share else None,
          "window": window.get("window_size") if windowed else None}
    c = {"graphs": {"decoder": decoder, "embed": None, "prefill": None},
         "input_ids": dec["inputs"]["input_ids"],
         "attention_mask": "attention_mask" if "attention_mask" in names else None,
         "position_ids": "position_ids" if "position_ids" in names else None,
         "position_base": 0, "extra_inputs": {}, "kv": kv, "logits": dec["outputs"]["logits"]}
    extra = {"window_layers": window.get("layers")} if windowed else {}
    return c, extra


def eager_model(spec: dict, ckpt: Path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(ckpt, attn_implementation="eager").float().eval()


def window_variants(spec: dict, ckpt: Path, decoder: Path, tokens: dict, got: dict) -> dict:
    """Which window does the graph on this onnxruntime implement? Eager with sliding_window
    W-1, W+1 and none, each against the same ORT run (max |Δ| over all steps): evidence for an
    off-by-one or a dropped window, recorded instead of argued."""
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg0 = AutoConfig.from_pretrained(ckpt)
    w = getattr(cfg0, "sliding_window", None)
    if not w:
        return {}
    out, steps = {}, {}
    for label, sw in ((f"sliding_window={w - 1}", w - 1), (f"sliding_window={w + 1}", w + 1), ("no window", 10 ** 6)):
        cfg = AutoConfig.from_pretrained(ckpt)
        cfg.sliding_window = sw
        model = AutoModelForCausalLM.from_pretrained(ckpt, config=cfg, attn_implementation="eager").float().eval()
        if spec["precision"] != "fp32":
            common.load_dequantized(model, decoder)
        st, _ = common.eager_oracle(model, tokens)
        steps[label] = st
        out[label] = max(r["max_abs"] for r in common.compare_steps(st, got))
    return out, steps


def build(name: str, work: Path, dest_root: Path = common.TWINS) -> tuple[dict, dict]:
    spec = SPECS[name]
    have = _version("onnxruntime-genai")
    if have != spec["builder"]:
        raise SystemExit(f"{name} needs onnxruntime-genai {spec['builder']} (env zoo/envs/{spec['env']}.txt); "
                         f"this interpreter has {have}: run it with .zoo-envs/{spec['env']}/bin/python")
    t0 = time.monotonic()
    ckpt_info = make_checkpoint(spec, work / "ckpt")
    command, builder_s, log = run_builder(spec, work)
    twin, decoder = install(spec, name, work, dest_root)
    post_build = None
    if spec.get("split_external_data"):
        files = common.split_external_data(twin / decoder)
        post_build = (f"external data re-saved one file per tensor ({len(files)} files, {Path(decoder).name}.data.00"
                      f"..{len(files) - 1:02d}) by zoo/build/common.py split_external_data: every shipped file "
                      f"under 16 MiB")
    summary = common.graph_summary(twin / decoder)
    tokens = common.twin_tokens(name, json.loads((twin / "config.json").read_text())["vocab_size"],
                                **spec.get("tokens", {}))

    model = eager_model(spec, work / "ckpt")
    info = {"post_build": post_build} if post_build else {}
    if spec["precision"] != "fp32":
        err = common.load_dequantized(model, twin / decoder)
        info["weights_loaded_back"] = len(err)
        info["quantisation_max_abs"] = max(err.values())
    steps, oinfo = common.eager_oracle(model, tokens)
    info.update({"eager_" + k: v for k, v in oinfo.items()})
    if len(set(oinfo["top1"])) == 1:
        raise SystemExit(f"{name}: eager top-1 is {oinfo['top1'][0]} at every step: degenerate weights, change the init")
    common.save_oracle(twin / "oracle.npz", steps)

    c, cextra = contract(spec, twin, decoder, summary)
    info.update(cextra)
    got = common.ort_teacher_forced(twin / decoder, tokens, {**c, "kv": {**c["kv"], **cextra}})
    # the exporter environment's own onnxruntime (the runtime of the builder's date), not the project's
    info["env_onnxruntime"] = _version("onnxruntime")
    info["env_ort_cpu_vs_eager"] = common.compare_steps(steps, got)
    variants, variant_steps = window_variants(spec, work / "ckpt", twin / decoder, tokens, got)
    info["env_ort_vs_eager_window_variants"] = variants
    as_exported = None
    if spec.get("exporter_finding"):
        # the model as the exporter changed it (eager without the window it drops): a second
        # oracle, so a backend that runs the export faithfully is told apart from one that does not
        info["exporter_finding"] = spec["exporter_finding"]
        common.save_oracle(twin / "oracle_as_exported.npz", variant_steps["no window"])
        as_exported = {"file": "oracle_as_exported.npz", "what": spec["exporter_finding"]}
    warnings = [ln for ln in log.splitlines() if "warn" in ln.lower()][:20]
    if warnings:
        info["builder_warnings"] = warnings

    manifest = {
        "name": name, "model": spec["model"], "form": spec["form"],
        "precision": "fp32" if spec["precision"] == "fp32" else "q4",
        "exporter": {"name": "onnxruntime-genai model builder", "version": spec["builder"], "command": command,
                     "env": f"zoo/envs/{spec['env']}.txt", "script": "zoo/build/genai_twin.py"},
        "reconstruction": None,
        "checkpoint": {**ckpt_info, "config": json.loads((twin / "config.json").read_text())},
        "contract": c, "tokens": tokens,
        "oracle": {"kind": "torch-eager", "file": "oracle.npz", "dtype": "float32",
                   "weights": "checkpoint fp32 weights" if spec["precision"] == "fp32" else
                   "the graph's own dequantised weights loaded back into the eager model",
                   **({"as_exported": as_exported} if as_exported else {})},
        "build_info": info,
        "notes": spec["notes"],
    }
    # timings are printed, not recorded: a rebuild then reproduces every file byte for byte
    return common.write_manifest(twin, manifest), {"builder_seconds": builder_s, "build_seconds": time.monotonic() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", choices=sorted(SPECS))
    ap.add_argument("--work", help="keep the checkpoint and builder output here (default: a temp dir, removed)")
    ap.add_argument("--dest", default=str(common.TWINS), help="folder the twins are written to (default: zoo/twins)")
    a = ap.parse_args(argv)
    for name in a.names:
        if a.work:
            work = Path(a.work) / name
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            m, t = build(name, work, Path(a.dest))
        else:
            with tempfile.TemporaryDirectory(prefix=f"twin-{name}-") as d:
                m, t = build(name, Path(d), Path(a.dest))
        bi = m["build_info"]
        print(f"{name}: {sum(m['sizes'].values())} bytes, built in {t['build_seconds']:.1f} s "
              f"(builder {t['builder_seconds']:.1f} s); "
              f"onnxruntime {bi['env_onnxruntime']} CPU vs eager: "
              + "; ".join(f"{r['step']} top1={r.get('top1_equal')} max|d|={r.get('max_abs', float('nan')):.3g}"
                          for r in bi["env_ort_cpu_vs_eager"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
