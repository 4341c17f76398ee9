"""Run the ORT-GenAI model builder with a transformers-5 Gemma-3 config flattened for it.

transformers 5 nests `rope_parameters` per layer type ({"full_attention": {...},
"sliding_attention": {...}}) and drops `rope_local_base_freq`; the builder (checked on 0.18.0)
reads `rope_parameters["rope_type"]` and `config.rope_local_base_freq`, so it fails with
KeyError 'rope_type'. This shim hands the builder the config it expects (global theta flat,
the sliding theta as rope_local_base_freq) and changes nothing else: the builder still loads
the weights itself from the checkpoint with the checkpoint's own config.

usage: python genai_flat_config.py <the builder's own arguments>
"""

import runpy
import sys

import transformers

_orig = transformers.AutoConfig.from_pretrained


def _flat(*args, **kwargs):
    config = _orig(*args, **kwargs)
    rp = getattr(config, "rope_parameters", None)
    if isinstance(rp, dict) and isinstance(rp.get("full_attention"), dict):
        full, sliding = rp["full_attention"], rp.get("sliding_attention", rp["full_attention"])
        config.rope_parameters = dict(full)
        config.rope_theta = full["rope_theta"]
        config.rope_local_base_freq = sliding["rope_theta"]
    return config


transformers.AutoConfig.from_pretrained = _flat

if __name__ == "__main__":
    sys.argv[0] = "onnxruntime_genai.models.builder"
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
