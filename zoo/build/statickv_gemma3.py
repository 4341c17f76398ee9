"""Static-KV Gemma-3 twins, route 1: the graph built node by node with onnx_ir from the
checkpoint's weights (seed 002's build_gemma.py), in fp32, fp16, q4 and q4f16.

Form (docs/zoo.md, "The static form"): separate prefill and decode graphs; a fixed cache of
MAX_LENGTH rows per layer, an input on decode and an output of both, written by
ScatterElements at the `cache_position` rows; the causal / sliding-window mask and the rotary
angles are computed inside the graph from `cache_position` (no attention_mask, no
position_ids). Standard ONNX ops only (opset 21). fp16 and q4f16 have fp16 I/O and weights,
with the norms and the softmax in fp32 (as Gemma's eager code does); q4 / q4f16 quantise every
weight MatMul with onnxruntime's MatMulNBitsQuantizer (4 bits, block 32, symmetric), the
embedding stays a float Gather.

Run inside the statickv environment: python zoo/build/statickv_gemma3.py [PRECISION ...]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

import statickv_common as sc
from statickv_common import common

PRECISIONS = ("fp32", "fp16", "q4", "q4f16")
SUFFIX = {"fp32": "", "fp16": "_fp16", "q4": "_q4", "q4f16": "_q4f16"}
OPSET = 21
SCRIPT = "zoo/build/statickv_gemma3.py"


def twin_name(precision: str) -> str:
    return f"gemma3-statickv-irbuilt-{precision}"


class GraphBuilder:
    """One phase's graph: `phase` is "prefill" (S tokens, empty cache made inside) or "decode"
    (one token, the cache fed in)."""

    def __init__(self, params: dict, cfg, phase: str, io: np.dtype):
        import onnx_ir as ir
        from onnx_ir import tape

        self.ir, self.t, self.p, self.cfg, self.phase, self.io = ir, tape.Tape(), params, cfg, phase, io
        self.irdt = ir.DataType.FLOAT16 if io == np.float16 else ir.DataType.FLOAT
        self._n = 0
        self.inputs, self.outputs = [], []

    # -- small helpers
    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def init(self, arr: np.ndarray, name: str | None = None):
        name = name or self.name("const")
        return self.t.initializer(self.ir.tensor(np.ascontiguousarray(arr), name=name), name=name)

    def op(self, op_type: str, inputs, attrs=None, name: str | None = None):
        return self.t.op(op_type, inputs, attrs or {}, name=name or self.name(f"/{op_type}"))

    def i64(self, values):
        return self.init(np.asarray(values, np.int64))

    def weight_t(self, pname: str):
        """An HF Linear weight [out, in] as the MatMul B operand [in, out], in the I/O dtype."""
        return self.init(self.p[pname].T.astype(self.io), pname + ".T")

    def linear(self, x, pname: str, node: str):
        return self.op("MatMul", [x, self.weight_t(pname)], name=node)

    def cast(self, x, to):
        return self.op("Cast", [x], {"to": to})

    def rms(self, x, pname: str):
        """Gemma RMSNorm in float32: x * rsqrt(mean(x^2) + eps) * (1 + w), cast back."""
        ir = self.ir
        fp16 = self.io == np.float16
        x32 = self.cast(x, ir.DataType.FLOAT) if fp16 else x
        ms = self.op("ReduceMean", [self.op("Mul", [x32, x32]), self.i64([-1])], {"keepdims": 1})
        inv = self.op("Reciprocal", [self.op("Sqrt", [self.op("Add", [ms, self.init(
            np.array(self.cfg.rms_norm_eps, np.float32))])])])
        w = self.init(self.p[pname].astype(self.io), pname)
        w32 = self.cast(w, ir.DataType.FLOAT) if fp16 else w
        scale = self.op("Add", [self.init(np.array(1.0, np.float32)), w32])
        y = self.op("Mul", [self.op("Mul", [x32, inv]), scale])
        return self.cast(y, self.irdt) if fp16 else y

    def rope_tables(self, theta: float, cache_position):
        """cos / sin rows for `cache_position`, [S, head_dim], from [max_pos, head_dim] tables
        computed like transformers (float32 inv_freq and angles)."""
        hd = self.cfg.head_dim
        inv = (1.0 / (np.float32(theta) ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd))).astype(np.float32)
        ang = np.arange(self.cfg.max_position_embeddings, dtype=np.float32)[:, None] * inv[None, :]
        emb = np.concatenate([ang, ang], axis=-1)
        tag = "global" if theta > 1e5 else "local"
        cos = self.init(np.cos(emb).astype(self.io), f"cos_cache_{tag}")
        sin = self.init(np.sin(emb).astype(self.io), f"sin_cache_{tag}")
        return (self.op("Gather", [cos, cache_position], {"axis": 0}),
                self.op("Gather", [sin, cache_position], {"axis": 0}))

    def rope(self, x, cos, sin):
        half = self.cfg.head_dim // 2
        x1 = self.op("Slice", [x, self.i64([0]), self.i64([half]), self.i64([-1])])
        x2 = self.op("Slice", [x, self.i64([half]), self.i64([2 * half]), self.i64([-1])])
        rot = self.op("Concat", [self.op("Neg", [x2]), x1], {"axis": -1})
        return self.op("Add", [self.op("Mul", [x, cos]), self.op("Mul", [rot, sin])])

    def mask_bias(self, cache_position, window: int | None):
        """[S, L] float32: 0 where key row j is visible from query position p (j <= p, and
        j > p - window on sliding layers), the float32 minimum elsewhere (as transformers)."""
        kpos = self.i64(np.arange(sc.MAX_LENGTH))
        qpos = self.op("Unsqueeze", [cache_position, self.i64([1])])
        ok = self.op("LessOrEqual", [kpos, qpos])
        if window:
            lo = self.op("Sub", [qpos, self.i64(window)])
            ok = self.op("And", [ok, self.op("Greater", [kpos, lo])])
        return self.op("Where", [ok, self.init(np.array(0.0, np.float32)),
                                 self.init(np.array(np.finfo(np.float32).min, np.float32))])

    def gelu_tanh(self, x):
        c = lambda v: self.init(np.array(v, self.io))  # noqa: E731
        x3 = self.op("Mul", [self.op("Mul", [x, x]), x])
        inner = self.op("Mul", [c(np.sqrt(2.0 / np.pi)), self.op("Add", [x, self.op("Mul", [c(0.044715), x3])])])
        return self.op("Mul", [self.op("Mul", [c(0.5), x]), self.op("Add", [c(1.0), self.op("Tanh", [inner])])])

    # -- the model
    def build(self):
        ir, cfg = self.ir, self.cfg
        S = "sequence_length" if self.phase == "prefill" else 1
        L, nkv, hd, nh = sc.MAX_LENGTH, cfg.num_key_value_heads, cfg.head_dim, cfg.num_attention_heads
        ids = ir.Value(name="input_ids", shape=ir.Shape([1, S]), type=ir.TensorType(ir.DataType.INT64))
        cp = ir.Value(name="cache_position", shape=ir.Shape([S]), type=ir.TensorType(ir.DataType.INT64))
        self.inputs += [ids, cp]
        emb = self.init(self.p["model.embed_tokens.weight"].astype(self.io), "model.embed_tokens.weight")
        x = self.op("Gather", [emb, ids], {"axis": 0}, name="/model/embed_tokens/Gather")
        x = self.op("Mul", [x, self.init(np.array(cfg.hidden_size ** 0.5, self.io))])
        thetas = {t: cfg.rope_parameters[t]["rope_theta"] for t in ("sliding_attention", "full_attention")}
        ropes = {t: self.rope_tables(th, cp) for t, th in thetas.items()}
        masks = {"sliding_attention": self.mask_bias(cp, cfg.sliding_window),
                 "full_attention": self.mask_bias(cp, None)}
        cp4 = self.op("Reshape", [cp, self.i64([1, 1, -1, 1])])
        for i, kind in enumerate(cfg.layer_types):
            pre = f"model.layers.{i}."
            h = self.rms(x, pre + "input_layernorm.weight")
            q = self.linear(h, pre + "self_attn.q_proj.weight", f"/model/layers.{i}/attn/q_proj/MatMul")
            k = self.linear(h, pre + "self_attn.k_proj.weight", f"/model/layers.{i}/attn/k_proj/MatMul")
            v = self.linear(h, pre + "self_attn.v_proj.weight", f"/model/layers.{i}/attn/v_proj/MatMul")
            q = self.rms(self.op("Reshape", [q, self.i64([1, -1, nh, hd])]), pre + "self_attn.q_norm.weight")
            k = self.rms(self.op("Reshape", [k, self.i64([1, -1, nkv, hd])]), pre + "self_attn.k_norm.weight")
            v = self.op("Reshape", [v, self.i64([1, -1, nkv, hd])])
            q, k, v = (self.op("Transpose", [t], {"perm": [0, 2, 1, 3]}) for t in (q, k, v))
            cos, sin = ropes[kind]
            q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
            presents = []
            for which, new in (("key", k), ("value", v)):
                if self.phase == "decode":
                    past = ir.Value(name=f"past_key_values.{i}.{which}", shape=ir.Shape([1, nkv, L, hd]),
                                    type=ir.TensorType(self.irdt))
                    self.inputs.append(past)
                else:
                    past = self.init(np.zeros((1, nkv, L, hd), self.io), self.name(f"empty_cache.{i}.{which}"))
                idx = self.op("Expand", [cp4, self.op("Shape", [new])])
                present = self.op("ScatterElements", [past, idx, new], {"axis": 2},
                                  name=f"/model/layers.{i}/attn/{which}_cache/ScatterElements")
                present.name = f"present.{i}.{which}"
                present.shape, present.type = ir.Shape([1, nkv, L, hd]), ir.TensorType(self.irdt)
                presents.append(present)
            kk, vv = presents
            if nh != nkv:  # repeat_kv: [1, nkv, L, hd] -> [1, nh, L, hd]
                rep = [1, nkv, nh // nkv, L, hd]
                kk, vv = (self.op("Reshape", [self.op("Expand", [self.op("Unsqueeze", [t, self.i64([2])]),
                                                                 self.i64(rep)]), self.i64([1, nh, L, hd])])
                          for t in (kk, vv))
            scores = self.op("MatMul", [q, self.op("Transpose", [kk], {"perm": [0, 1, 3, 2]})])
            scores = self.op("Mul", [scores, self.init(np.array(cfg.query_pre_attn_scalar ** -0.5, self.io))])
            if self.io == np.float16:
                scores = self.cast(scores, ir.DataType.FLOAT)
            probs = self.op("Softmax", [self.op("Add", [scores, masks[kind]])], {"axis": -1})
            if self.io == np.float16:
                probs = self.cast(probs, self.irdt)
            a = self.op("MatMul", [probs, vv])
            a = self.op("Reshape", [self.op("Transpose", [a], {"perm": [0, 2, 1, 3]}), self.i64([1, -1, nh * hd])])
            a = self.linear(a, pre + "self_attn.o_proj.weight", f"/model/layers.{i}/attn/o_proj/MatMul")
            x = self.op("Add", [x, self.rms(a, pre + "post_attention_layernorm.weight")])
            h = self.rms(x, pre + "pre_feedforward_layernorm.weight")
            g = self.linear(h, pre + "mlp.gate_proj.weight", f"/model/layers.{i}/mlp/gate_proj/MatMul")
            u = self.linear(h, pre + "mlp.up_proj.weight", f"/model/layers.{i}/mlp/up_proj/MatMul")
            m = self.linear(self.op("Mul", [self.gelu_tanh(g), u]), pre + "mlp.down_proj.weight",
                            f"/model/layers.{i}/mlp/down_proj/MatMul")
            x = self.op("Add", [x, self.rms(m, pre + "post_feedforward_layernorm.weight")])
            self.outputs += presents
        x = self.rms(x, "model.norm.weight")
        logits = self.op("MatMul", [x, self.init(self.p["lm_head.weight"].T.astype(self.io), "lm_head.weight.T")],
                         name="/lm_head/MatMul")
        logits.name = "logits"
        logits.shape, logits.type = ir.Shape([1, S, cfg.vocab_size]), ir.TensorType(self.irdt)
        self.outputs.insert(0, logits)
        graph = ir.Graph(self.inputs, self.outputs, nodes=self.t.nodes, initializers=self.t.initializers,
                         opset_imports={"": OPSET}, name=f"gemma3_statickv_{self.phase}")
        model = ir.Model(graph, ir_version=10, producer_name="onnx-compat statickv_gemma3.py (onnx_ir)")
        return ir.serde.serialize_model(model)


def quantize(proto):
    """MatMulNBits, 4 bits, block 32, symmetric, default accuracy level (TJS's q4 recipe)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    cfg = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=None,
                                       op_types_to_quantize=("MatMul",), bits=4)
    logging.disable(logging.WARNING)
    try:
        q = MatMulNBitsQuantizer(proto, algo_config=cfg)
        q.process()
    finally:
        logging.disable(logging.NOTSET)
    return q.model.model


def build(precision: str, out_root: Path) -> dict:
    import onnx
    import onnx_ir
    import torch

    model = sc.make_model()
    cfg = model.config
    params = {k: v.detach().numpy().astype(np.float32) for k, v in model.named_parameters(remove_duplicate=False)}
    io = np.float16 if precision in ("fp16", "q4f16") else np.float32
    name = twin_name(precision)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_root))
    paths = {ph: f"onnx/{ph}{SUFFIX[precision]}.onnx" for ph in ("prefill", "decode")}
    for phase, rel in paths.items():
        proto = GraphBuilder(params, cfg, phase, io).build()
        if precision in ("q4", "q4f16"):
            proto = quantize(proto)
        onnx.checker.check_model(proto, full_check=True)
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(proto, str(tmp / rel))
    cfg.save_pretrained(tmp)

    # the oracle: eager float32 on the graph's own weights (fp16-rounded, then dequantised q4)
    weights = "the checkpoint's float32 weights"
    if io == np.float16:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
        weights = "the graph's own float16 weights, in float32"
    if precision in ("q4", "q4f16"):
        common.load_dequantized(model, tmp / paths["decode"])
        weights = ("the graph's own dequantised MatMulNBits weights loaded back into the eager model"
                   + (" (other weights float16-rounded)" if io == np.float16 else ""))
    tokens = common.twin_tokens(name, cfg.vocab_size)
    steps, info = common.eager_oracle(model, tokens)
    common.save_oracle(tmp / "oracle.npz", steps)
    c = sc.contract(paths["prefill"], paths["decode"], "float16" if io == np.float16 else "float32")
    manifest = {
        "name": name, "model": sc.MODEL, "form": "statickv-irbuilt", "precision": precision,
        "exporter": {"name": "onnx_ir hand-built graph (this project's statickv_gemma3.py)",
                     "version": f"onnx_ir {onnx_ir.__version__}",
                     "command": f"python {SCRIPT} {precision}", "env": sc.ENV, "script": SCRIPT},
        "reconstruction": sc.RECONSTRUCTION,
        "checkpoint": sc.checkpoint_record(model),
        "contract": c, "tokens": tokens,
        "oracle": {"kind": "torch-eager", "file": "oracle.npz", "dtype": "float32", "weights": weights},
    }
    common.write_manifest(tmp, manifest)
    rows = sc.step_report(steps, sc.ort_static(tmp, c, tokens))
    dest = out_root / name
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    sc.print_report(name, rows, info)
    return {"name": name, "rows": rows, "info": info}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("precisions", nargs="*", help=f"any of {', '.join(PRECISIONS)} (default: all)")
    ap.add_argument("--out", default=str(common.TWINS), help="twins folder (default zoo/twins)")
    a = ap.parse_args(argv)
    bad = sorted(set(a.precisions) - set(PRECISIONS))
    if bad:
        ap.error(f"unknown precision(s) {bad}; choose from {', '.join(PRECISIONS)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for p in a.precisions or PRECISIONS:
        build(p, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
