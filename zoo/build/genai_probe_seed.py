"""Which ORT-GenAI builder release emits the seed's Gemma-3 GQA node?

The seeds' first document dumps the GQA node of onnx-community/gemma-3-1b-it-ONNX
onnx/model_q4.onnx: attrs num_heads=4, kv_num_heads=1, scale=0.0625, local_window_size=512,
softcap=0, do_rotary=1, rotary_interleaved=0; 11 inputs query, key, value, past_key,
past_value, seqlens_k, total_seq, cos_cache, sin_cache, "", attention_bias. A tiny Gemma-3
twin differs in the numbers (scale, window) by design, so the comparison is structural: the
attribute names, do_rotary / rotary_interleaved / softcap, the input count and which input
slots are wired (non-empty).

Run in an environment holding torch, transformers 4.5x and onnxruntime; for each version it
installs that onnxruntime-genai release (pip, no deps), builds fp32 from one checkpoint and
prints one JSON line per version:

    .zoo-envs/genai-probe/bin/python zoo/build/genai_probe_seed.py 0.8.3 0.9.0 0.9.1 ...
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import genai_twin  # noqa: E402

SEED_ATTRS = {"num_heads": 4, "kv_num_heads": 1, "scale": 0.0625, "local_window_size": 512, "softcap": 0.0,
              "do_rotary": 1, "rotary_interleaved": 0}
SEED_WIRED = [True] * 9 + [False, True]  # slot 9 (position_ids) empty, slot 10 attention_bias wired


def structure(node: dict) -> dict:
    return {"attr_names": sorted(node["attrs"]),
            "do_rotary": node["attrs"].get("do_rotary", 0),
            "rotary_interleaved": node["attrs"].get("rotary_interleaved", 0),
            "softcap": node["attrs"].get("softcap", 0.0),
            "wired": [bool(x) for x in node["inputs"]]}


def probe(version: str, work: Path) -> dict:
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", f"onnxruntime-genai=={version}"]
    r = subprocess.run(pip, capture_output=True, text=True)
    if r.returncode:
        return {"version": version, "error": "pip: " + r.stderr.strip().splitlines()[-1]}
    ckpt = work / "ckpt"
    if not ckpt.exists():
        genai_twin.make_checkpoint({"arch": "gemma3"}, ckpt)
    out = work / f"out-{version}"
    import transformers
    shim = int(transformers.__version__.split(".")[0]) >= 5  # nested rope_parameters: flatten for the builder
    runner = [str(Path(__file__).with_name("genai_flat_config.py"))] if shim else ["-m", "onnxruntime_genai.models.builder"]
    cmd = [sys.executable, *runner, "-i", str(ckpt), "-o", str(out),
           "-p", "fp32", "-e", "cpu", "-c", str(work / "cache")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        return {"version": version, "error": "builder: " + (r.stdout + r.stderr).strip().splitlines()[-1]}
    s = common.graph_summary(out / "model.onnx")
    gqa = [a for a in s["attention"] if a["op"].endswith("GroupQueryAttention")]
    local = next(a for a in gqa if a["attrs"].get("local_window_size", -1) > 0)
    st = structure(local)
    want = structure({"attrs": SEED_ATTRS, "inputs": ["x"] * 9 + ["", "x"]})
    return {"version": version, "inputs": [i["name"] for i in s["inputs"]][:4],
            "ops": {k: v for k, v in s["ops"].items() if "Rotary" in k or "Attention" in k},
            "gqa_attrs": local["attrs"], "gqa_inputs": local["inputs"], "structure": st,
            "matches_seed": st == want,
            "differs": sorted(k for k in want if want[k] != st[k])}


def main(argv) -> int:
    with tempfile.TemporaryDirectory(prefix="genai-probe-") as d:
        for v in argv:
            print(json.dumps(probe(v, Path(d))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
