"""The tiny random-weight Gemma-4 text checkpoint every Gemma-4 twin is exported from.

It has every path the real E2B (google/gemma-4-E2B-it, text part) has, scaled down:
sliding and full layers (E2B: 4 sliding then 1 full, the last layer full), two head sizes
(head_dim 32 sliding / global_head_dim 64 full: E2B 256 / 512), MQA (1 KV head), per-layer
inputs (hidden_size_per_layer_input 16: E2B 256), KV sharing for the last layers
(num_kv_shared_layers 2 of 6: E2B 20 of 35), the double-wide MLP of the shared layers, separate
rope thetas (sliding 1e4 default; full 1e6 proportional, partial 0.25), final logit softcap 30.

Layer types S S F S S F with the last two layers shared: 4 KV pairs (0..3) for 6 layers; the
shared sliding layer 4 reads layer 3's KV and the shared full layer 5 reads layer 2's (the last
unshared layer of the same type, which is not the last unshared layer: a wrong "last layer"
mapping shows). A 24-token prompt crosses the sliding window of 8.

Saved with the transformers of the exporter that reads it (a 5.23 config stores per_layer_config,
which 5.14 does not know), so each twin's config.json is what its exporter saw.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SEED = 0
INIT_STD = 0.25  # weights: a std that gives non-degenerate logits through the tiny stack (top-1 varies)
WINDOW = 8

CONFIG = {
    "vocab_size": 256, "vocab_size_per_layer_input": 256, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 6,
    "layer_types": ["sliding_attention", "sliding_attention", "full_attention",
                    "sliding_attention", "sliding_attention", "full_attention"],
    "num_kv_shared_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    "head_dim": 32, "global_head_dim": 64, "hidden_size_per_layer_input": 16, "use_double_wide_mlp": True,
    "sliding_window": WINDOW, "final_logit_softcapping": 30.0, "max_position_embeddings": 128,
    "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                           "rope_theta": 1_000_000.0}},
    "rms_norm_eps": 1e-6, "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
    "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
}


# Shape-true E2B (issue 22): every field that shapes attention as google/gemma-4-E2B-it's text_config
# has it (zoo-facts.md §4: 35 layers, ([sliding]*4 + [full]) * 7, 20 KV-shared layers = 15 KV pairs,
# 8 query heads on 1 KV head, head_dim 256 / global_head_dim 512, window 512, rope 1e4 default /
# 1e6 proportional 0.25, final softcap 30, double-wide MLP on the shared layers). Shrunk: hidden
# size, MLP width, vocabulary and the per-layer-input width (16; E2B 256: a width, not attention).
# max_position_embeddings 1024 (E2B 131072): enough for the 600-token prompt and its decode steps.
E2B_SHAPE_TRUE = {
    **CONFIG, "num_hidden_layers": 35,
    "layer_types": (["sliding_attention"] * 4 + ["full_attention"]) * 7,
    "num_kv_shared_layers": 20, "num_attention_heads": 8, "num_key_value_heads": 1,
    "head_dim": 256, "global_head_dim": 512, "sliding_window": 512, "max_position_embeddings": 1024,
}
#: the shape-true twin's prompt crosses the 512-key window; decode positions 600..603 lie past it
E2B_TOKENS = dict(prompt_len=600, decode_len=4)
TOKENS: dict = {}
#: mean of the q_norm / k_norm scales (None: the N(1, 0.1) every other RMSNorm scale gets). Gemma-4
#: scales attention by 1.0 after RMS-normalising q and k, so with head_dim 256/512 a score's std is
#: ~16-22 x the two norm scales: near one-hot softmax, and through 35 random layers eager's own
#: cached and full-forward logits differ by 2.8e-3 (rms 7.8), float noise as large as a finding.
#: Scales ~0.25 give scores of std ~1: the two eager paths agree to 2.1e-5, and the 512-key window
#: still moves the logits of positions past it by a median 1.6 (max 4.4) against no window.
QK_NORM_MEAN = None


def use_shape_true() -> None:
    """Switch this module to the shape-true E2B geometry (call before building anything)."""
    global CONFIG, WINDOW, TOKENS, QK_NORM_MEAN
    CONFIG = copy.deepcopy(E2B_SHAPE_TRUE)
    WINDOW = CONFIG["sliding_window"]
    TOKENS = dict(E2B_TOKENS)
    QK_NORM_MEAN = 0.25


def fixed_hash_seed() -> None:
    """Re-run this script with PYTHONHASHSEED=0 unless it already is: Gemma4TextModel iterates a
    set of layer-type strings, so the exported node order (and the files' sha256) would follow the
    hash seed. Call first thing in a build script's main."""
    import os
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.argv])


def kv_layout() -> dict:
    """KV pairs the unshared layers own, their head dims, and which layer each shared layer reads."""
    types = CONFIG["layer_types"]
    n_kv = CONFIG["num_hidden_layers"] - CONFIG["num_kv_shared_layers"]
    head_dims = [CONFIG["global_head_dim"] if t == "full_attention" else CONFIG["head_dim"] for t in types[:n_kv]]
    donors = {}
    for i in range(n_kv, len(types)):
        donors[i] = max(j for j in range(n_kv) if types[j] == types[i])
    return {"count": n_kv, "head_dim": head_dims, "layers": len(types), "layer_types": types,
            "shared_from": {str(k): v for k, v in donors.items()}}


def make_model():
    """Gemma4ForCausalLM, float32, eager attention, fixed seed."""
    import torch
    from transformers import Gemma4ForCausalLM, Gemma4TextConfig
    torch.manual_seed(SEED)
    cfg = Gemma4TextConfig(**copy.deepcopy(CONFIG))
    cfg._attn_implementation = "eager"
    model = Gemma4ForCausalLM(cfg).eval().to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, INIT_STD if "embed" not in name else 1.0)
            elif QK_NORM_MEAN and name.endswith(("q_norm.weight", "k_norm.weight")):
                p.normal_(QK_NORM_MEAN, QK_NORM_MEAN / 10)
            elif name.endswith("weight"):  # RMSNorm scales: Gemma-4 multiplies by weight itself
                p.normal_(1.0, 0.1)
    return model


def save_checkpoint(model, out_dir, tokenizer: bool = False) -> None:
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if tokenizer:
        tiny_tokenizer(out_dir, CONFIG["vocab_size"])


def tiny_tokenizer(out_dir, vocab: int) -> None:
    """A word-level tokenizer over ids t0..t{vocab-1} (as zoo/build/genai_twin.py makes): mobius
    copies tokenizer files next to genai_config.json. The twins are driven by token ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", pad_token="t0", eos_token="t1",
                            bos_token="t2").save_pretrained(str(out_dir))


def load_checkpoint(ckpt_dir):
    import torch
    from transformers import Gemma4ForCausalLM
    m = Gemma4ForCausalLM.from_pretrained(str(ckpt_dir), torch_dtype=torch.float32, attn_implementation="eager")
    return m.eval()


def checkpoint_record(model) -> dict:
    import torch
    import transformers
    return {"class": type(model).__name__, "seed": SEED,
            "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}


def check_generate(model) -> list:
    """The tiny model must run forward and generate with a cache (greedy, 6 new tokens)."""
    import torch
    ids = torch.tensor([[5, 17, 99, 3, 42, 7, 8, 120, 33, 64, 200, 11]])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
    return [int(x) for x in out[0, ids.shape[1]:]]


def oracle_and_tokens(model, twin_name: str):
    tokens = common.twin_tokens(twin_name, CONFIG["vocab_size"], **TOKENS)
    steps, info = common.eager_oracle(model, tokens)
    if len(set(info["top1"])) < 2:
        raise SystemExit(f"{twin_name}: eager top-1 is constant across steps {info['top1']}: raise INIT_STD")
    return tokens, steps, info


def write_config(ckpt_dir, twin_dir) -> dict:
    """config.json exactly as the exporter's transformers saved it; returns it parsed."""
    data = (Path(ckpt_dir) / "config.json").read_bytes()
    common.atomic_write_bytes(Path(twin_dir) / "config.json", data)
    return json.loads(data)


def report(rows: list) -> str:
    return json.dumps(rows)
