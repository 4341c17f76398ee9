"""Shared helpers for the zoo twin builders (docs/zoo.md).

Runs inside an exporter environment (numpy, onnx; torch only for the eager oracle and the
weight loading, imported lazily so the harness can use the graph summary without torch).

- sha256 of files and the graph summary the manifest records (ops by domain.op, the attributes
  and inputs of every attention / rotary / quantised node, graph I/O with dtypes and shapes);
- the fixed token sequence of a twin, derived from its name alone;
- the teacher-forced eager oracle (float32 logits per step);
- a quantised graph's own dequantised weights (MatMulNBits, GatherBlockQuantized) loaded back
  into the eager model, so quantisation error is not mistaken for a runtime fault.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TWINS = REPO / "zoo" / "twins"

ATTENTION_OPS = {"GroupQueryAttention", "MultiHeadAttention", "Attention", "RotaryEmbedding",
                 "PackedAttention", "PackedMultiHeadAttention", "SparseAttention",
                 "DecoderMaskedMultiHeadAttention", "PagedAttention"}
QUANT_OPS = {"MatMulNBits", "GatherBlockQuantized", "DequantizeLinear", "QuantizeLinear",
             "DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulBnb4", "QMoE"}


# ---------------------------------------------------------------- files and writes

def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write via a temp file in the same folder + rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


# ---------------------------------------------------------------- graph summary

def _dtype_name(elem_type: int) -> str:
    import onnx
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name if elem_type else "undefined"


def _value_info(v) -> dict:
    t = v.type.tensor_type
    shape = None
    if t.HasField("shape"):
        shape = [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
                 for d in t.shape.dim]
    return {"name": v.name, "dtype": _dtype_name(t.elem_type), "shape": shape}


def _attr_value(a):
    import onnx
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, onnx.TensorProto):
        return {"tensor": _dtype_name(v.data_type), "dims": list(v.dims)}
    if isinstance(v, (list, tuple)):
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    if isinstance(v, float):
        return float(np.float32(v))  # stored as float32: print what the graph holds
    return v


def _op_key(node) -> str:
    return f"{node.domain or 'ai.onnx'}.{node.op_type}"


def graph_summary(path) -> dict:
    """What the manifest records for one ONNX file (external data is not loaded)."""
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    g = m.graph
    ops = Counter(_op_key(n) for n in g.node)

    def node_entry(n):
        return {"name": n.name, "op": _op_key(n),
                "attrs": {a.name: _attr_value(a) for a in n.attribute}, "inputs": list(n.input)}

    return {
        "opsets": {(o.domain or "ai.onnx"): o.version for o in m.opset_import},
        "ir_version": m.ir_version,
        "ops": dict(sorted(ops.items())),
        "attention": [node_entry(n) for n in g.node if n.op_type in ATTENTION_OPS],
        "quantized": [node_entry(n) for n in g.node if n.op_type in QUANT_OPS],
        "inputs": [_value_info(v) for v in g.input],
        "outputs": [_value_info(v) for v in g.output],
    }


def write_manifest(twin_dir, manifest: dict) -> dict:
    """Fill `files` (sha256 of every file in the twin but the manifest) and `graphs` (every
    .onnx), then write manifest.json atomically. Returns the manifest written."""
    twin_dir = Path(twin_dir)
    files = sorted(p for p in twin_dir.rglob("*") if p.is_file() and p.name != "manifest.json"
                   and not p.name.startswith("."))
    manifest = dict(manifest)
    manifest["files"] = {p.relative_to(twin_dir).as_posix(): sha256_file(p) for p in files}
    manifest["sizes"] = {p.relative_to(twin_dir).as_posix(): p.stat().st_size for p in files}
    manifest["graphs"] = {p.relative_to(twin_dir).as_posix(): graph_summary(p)
                          for p in files if p.suffix == ".onnx"}
    atomic_write_json(twin_dir / "manifest.json", manifest)
    return manifest


def split_external_data(onnx_path, max_bytes: int = 16 << 20) -> list[str]:
    """Post-build step of twins whose single external-data file would exceed the 16 MiB a shipped
    file may have (Phi-3's shape-true twin: hidden 3072, one fused-QKV MatMulNBits is ~14 MB):
    every tensor the exporter put in external data moves, unchanged, to a file of its own,
    `<graph>.data.NN` (NN: its index among the external tensors, in graph order), and the graph
    is re-saved pointing at them; the exporter's single file is removed. Deterministic (names
    from positions, not from uuids as onnx's all_tensors_to_one_file=False would pick), so a
    rebuild reproduces every byte. Returns the files written; a tensor over `max_bytes` is an
    error (it cannot ship at all)."""
    import onnx
    from onnx import external_data_helper as edh
    path = Path(onnx_path)
    m = onnx.load(str(path), load_external_data=False)
    tensors = [t for t in edh._get_all_tensors(m) if edh.uses_external_data(t)]
    olds, written = set(), []
    for i, t in enumerate(tensors):
        info = edh.ExternalDataInfo(t)
        src = path.parent / info.location
        olds.add(src)
        with open(src, "rb") as f:
            f.seek(info.offset or 0)
            data = f.read(info.length) if info.length else f.read()
        if len(data) > max_bytes:
            raise ValueError(f"{path}: tensor {t.name} has {len(data)} bytes, over {max_bytes}: it cannot ship")
        name = f"{path.name}.data.{i:02d}"
        atomic_write_bytes(path.parent / name, data)
        del t.external_data[:]
        for k, v in (("location", name), ("offset", "0"), ("length", str(len(data)))):
            e = t.external_data.add()
            e.key, e.value = k, v
        written.append(name)
    atomic_write_bytes(path, m.SerializeToString())
    for old in olds - {path.parent / w for w in written}:
        old.unlink()
    return written


# ---------------------------------------------------------------- tokens

def twin_tokens(name: str, vocab: int, prompt_len: int = 24, decode_len: int = 4, low: int = 3) -> dict:
    """The twin's fixed, teacher-forced sequence: a function of its name only (sha256 seed).
    Ids below `low` (pad/bos/eos in most configs) are avoided."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    ids = np.random.default_rng(seed).integers(low, vocab, size=prompt_len + decode_len)
    ids = [int(x) for x in ids]
    return {"batch": 1, "prompt": [ids[:prompt_len]], "decode": [[t] for t in ids[prompt_len:]]}


def token_sequence(tokens: dict) -> list:
    return tokens["prompt"][0] + [d[0] for d in tokens["decode"]]


# ---------------------------------------------------------------- eager oracle

def eager_oracle(model, tokens: dict) -> tuple[dict, dict]:
    """Teacher-forced float32 logits: step0 [1, S, V] for the prompt, stepK [1, 1, V] after
    feeding decode token K-1. Computed by one causal forward over the whole sequence (no cache
    to get wrong); a second, cached step-by-step pass is compared and its max |Δ| returned, so
    a disagreement between the two eager paths is visible rather than silently chosen."""
    import torch
    seq = token_sequence(tokens)
    s = len(tokens["prompt"][0])
    ids = torch.tensor([seq], dtype=torch.long)
    model.eval()
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits.float().numpy()
        # decode step k (k >= 1) feeds decode token k-1 at position s+k-1 and reads the logits there
        steps = {"step0": full[:, :s].copy()}
        for k in range(1, len(tokens["decode"]) + 1):
            steps[f"step{k}"] = full[:, s + k - 1: s + k].copy()
        info = {"steps": len(steps)}
        try:
            out = model(input_ids=ids[:, :s], use_cache=True)
            cached = [out.logits.float().numpy()]
            past = out.past_key_values
            for k in range(len(tokens["decode"])):
                out = model(input_ids=ids[:, s + k: s + k + 1], past_key_values=past, use_cache=True,
                            cache_position=torch.tensor([s + k]))
                past = out.past_key_values
                cached.append(out.logits.float().numpy())
            info["cached_vs_full_max_abs"] = float(max(
                np.abs(cached[0] - steps["step0"]).max(),
                *(np.abs(cached[k] - full[:, s + k - 1: s + k]).max() for k in range(1, len(cached)))))
        except Exception as e:  # noqa: BLE001 - recorded, not hidden
            info["cached_error"] = f"{type(e).__name__}: {e}"
    top1 = [int(steps["step0"][0, -1].argmax())] + [int(steps[f"step{k}"][0, -1].argmax())
                                                    for k in range(1, len(tokens["decode"]) + 1)]
    info["top1"] = top1
    return steps, info


def save_oracle(path, steps: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, dtype=np.float32) for k, v in steps.items()})
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- dequantised weights

def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """uint8 along the last axis -> values, low-order bits first."""
    p = np.asarray(packed).astype(np.uint8)
    per, mask = 8 // bits, (1 << bits) - 1
    return np.stack([(p >> (bits * j)) & mask for j in range(per)], axis=-1).reshape(*p.shape[:-1], -1)


def _initializers(model_proto) -> dict:
    from onnx import numpy_helper
    return {t.name: numpy_helper.to_array(t) for t in model_proto.graph.initializer}


def _constants(model_proto, inits: dict) -> dict:
    """Initializers plus what Constant / Identity / Reshape / Cast nodes make of them (the
    builder's shared embedding feeds GatherBlockQuantized a Reshape of lm_head's packed weight)."""
    from onnx import helper, numpy_helper
    vals = dict(inits)
    for n in model_proto.graph.node:
        if n.op_type == "Constant":
            a = n.attribute[0]
            vals[n.output[0]] = numpy_helper.to_array(a.t) if a.name == "value" else np.asarray(
                helper.get_attribute_value(a))
        elif n.op_type == "Identity" and n.input[0] in vals:
            vals[n.output[0]] = vals[n.input[0]]
        elif n.op_type == "Reshape" and n.input[0] in vals and n.input[1] in vals:
            shape = [int(d) for d in vals[n.input[1]]]
            src = vals[n.input[0]]
            shape = [src.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            vals[n.output[0]] = src.reshape(shape)
        elif n.op_type == "Cast" and n.input[0] in vals:
            to = [a.i for a in n.attribute if a.name == "to"][0]
            vals[n.output[0]] = vals[n.input[0]].astype(helper.tensor_dtype_to_np_dtype(to))
    return vals


def dequantize_matmulnbits(attrs: dict, b, scales, zero_points=None) -> np.ndarray:
    """(N, K) float32 weight of a MatMulNBits node (y = a @ W.T): (q - zp) * scale per block;
    absent zero points mean 2^(bits-1)."""
    k, n, bits, bs = attrs["K"], attrs["N"], attrs.get("bits", 4), attrs["block_size"]
    kb = (k + bs - 1) // bs
    q = _unpack(np.asarray(b).reshape(n, -1), bits).reshape(n, kb * bs)[:, :k].astype(np.float64)
    s = np.asarray(scales).astype(np.float64).reshape(n, kb)
    if zero_points is None:
        zp = np.full((n, kb), float(2 ** (bits - 1)))
    elif np.asarray(zero_points).dtype == np.uint8:
        zp = _unpack(np.asarray(zero_points).reshape(n, -1), bits)[:, :kb].astype(np.float64)
    else:
        zp = np.asarray(zero_points).astype(np.float64).reshape(n, kb)
    blk = np.arange(k) // bs
    return ((q - zp[:, blk]) * s[:, blk]).astype(np.float32)


def dequantize_gather_block_quantized(attrs: dict, data, scales, zero_points=None) -> np.ndarray:
    """The whole float32 table of a GatherBlockQuantized node (quantised along the last axis);
    absent zero points mean 2^(bits-1) for uint8-packed data and 0 for typed int4/uint4."""
    bits, bs = attrs.get("bits", 4), attrs.get("block_size", 128)
    if attrs.get("quantize_axis", 1) not in (-1, np.asarray(data).ndim - 1):
        raise NotImplementedError("GatherBlockQuantized quantised along an axis other than the last")
    data = np.asarray(data)
    packed = data.dtype == np.uint8 and bits < 8
    q = (_unpack(data, bits) if packed else data.astype(np.int64)).astype(np.float64)
    s = np.asarray(scales).astype(np.float64)
    if zero_points is None:
        zp = np.full_like(s, float(2 ** (bits - 1)) if data.dtype == np.uint8 else 0.0)
    else:
        z = np.asarray(zero_points)
        zp = (_unpack(z, bits) if z.dtype == np.uint8 and bits < 8 else z.astype(np.int64)).astype(np.float64)
        zp = zp[..., : s.shape[-1]]
    blk = np.arange(q.shape[-1]) // bs
    return ((q - zp[..., blk]) * s[..., blk]).astype(np.float32)


def quantized_weights(onnx_path) -> dict:
    """node name -> (op_type, dequantised float32 weight): MatMulNBits gives (N, K),
    GatherBlockQuantized its (rows, cols) table."""
    import onnx
    path = Path(onnx_path)
    m = onnx.load(str(path))  # external data too: twins are small
    inits = _constants(m, _initializers(m))
    out = {}
    for n in m.graph.node:
        if n.op_type not in ("MatMulNBits", "GatherBlockQuantized"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        ins = list(n.input) + [""] * 4
        if n.op_type == "MatMulNBits":
            b, s, zp = (inits.get(x) if x else None for x in (ins[1], ins[2], ins[3]))
            if b is None or s is None:
                raise ValueError(f"{path}: MatMulNBits {n.name} has non-constant weights or scales")
            if len(n.input) > 4 and n.input[4]:
                raise NotImplementedError(f"{path}: MatMulNBits {n.name} uses g_idx")
            out[n.name] = (n.op_type, dequantize_matmulnbits(attrs, b, s, zp))
        else:
            d, s, zp = (inits.get(x) if x else None for x in (ins[0], ins[2], ins[3]))
            if d is None or s is None:
                raise ValueError(f"{path}: GatherBlockQuantized {n.name} has non-constant data or scales")
            out[n.name] = (n.op_type, dequantize_gather_block_quantized(attrs, d, s, zp))
    return out


_LAYER = re.compile(r"/model/layers\.(\d+)/(attn|self_attn|mlp)/(\w+?)(?:/|$)")


def builder_targets(node_name: str, params: dict) -> list:
    """Where the ORT-GenAI model builder's quantised node `node_name` goes in a transformers
    model with parameters `params` (name -> tensor): a list of (param name, first row, rows).
    Packed QKV is split into q/k/v when the model has them separately; separate gate/up go
    into a fused gate_up_proj when the model has that (Phi-3)."""
    if node_name.startswith("/lm_head/"):
        return [("lm_head.weight", 0, None)]
    if "embed_tokens" in node_name:
        return [("model.embed_tokens.weight", 0, None)]
    m = _LAYER.search(node_name)
    if not m:
        return []
    i, block, proj = m.groups()
    hf_block = "self_attn" if block in ("attn", "self_attn") else "mlp"
    pre = f"model.layers.{i}.{hf_block}."
    if f"{pre}{proj}.weight" in params:
        return [(f"{pre}{proj}.weight", 0, None)]
    if proj == "qkv_proj":
        return [(f"{pre}{p}.weight", 0, params[f"{pre}{p}.weight"].shape[0]) for p in ("q_proj", "k_proj", "v_proj")]
    if proj in ("gate_proj", "up_proj") and f"{pre}gate_up_proj.weight" in params:
        half = params[f"{pre}gate_up_proj.weight"].shape[0] // 2
        return [(f"{pre}gate_up_proj.weight", 0 if proj == "gate_proj" else half, half)]
    return []


def load_dequantized(model, onnx_path, targets=builder_targets) -> dict:
    """Copy every quantised weight of the graph, dequantised, into the eager model. A weight the
    mapping cannot place is an error (the oracle would silently use fp32 weights otherwise).
    lm_head is untied from the embedding first when the graph quantises only one of them.
    Returns param name -> max |fp32 - dequantised| (the quantisation error, for the record)."""
    import torch
    q = quantized_weights(onnx_path)
    params = dict(model.named_parameters(remove_duplicate=False))
    quantises_embed = any(op == "GatherBlockQuantized" for op, _ in q.values())
    quantises_head = any(name.startswith("/lm_head/") for name in q)
    lm = getattr(model, "lm_head", None)
    if lm is not None and quantises_head != quantises_embed \
            and lm.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr():
        lm.weight = torch.nn.Parameter(lm.weight.detach().clone())
        model.config.tie_word_embeddings = False
        params = dict(model.named_parameters(remove_duplicate=False))
    errs = {}
    with torch.no_grad():
        for name, (op, w) in q.items():
            places = targets(name, params)
            if not places:
                raise ValueError(f"{onnx_path}: no model parameter for quantised node {name}; extend the mapping")
            row = 0
            for pname, r0, rows in places:
                p = params[pname]
                rows = p.shape[0] if rows is None else rows
                part = torch.from_numpy(np.ascontiguousarray(w[row: row + rows]))
                if tuple(part.shape) != tuple(p[r0: r0 + rows].shape):
                    raise ValueError(f"{onnx_path}: {name} rows {row}:{row + rows} {tuple(part.shape)} do not fit "
                                     f"{pname}[{r0}:{r0 + rows}] {tuple(p[r0:r0 + rows].shape)}")
                errs[f"{pname}[{r0}:{r0 + rows}]"] = float((p[r0: r0 + rows] - part).abs().max())
                p[r0: r0 + rows].copy_(part)
                row += rows
            if row != w.shape[0]:
                raise ValueError(f"{onnx_path}: {name} has {w.shape[0]} rows, the mapping placed {row}")
    return errs


# ---------------------------------------------------------------- ORT check

def ort_teacher_forced(onnx_path, tokens: dict, contract: dict) -> dict:
    """Run the twin on onnxruntime CPU, teacher-forced, growing past (concat) or one shared
    max-length buffer (shared_buffer): a builder's own check, not the harness's decode loop."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    kv = contract["kv"]
    hd = kv["head_dim"]
    seq = token_sequence(tokens)
    s = len(tokens["prompt"][0])
    mode = kv["cache"]
    windowed = set(kv.get("window_layers") or [])
    past = {}
    for i in range(kv["count"]):
        if mode == "sliding_window" and i in windowed:
            length = kv["window"]
        elif mode in ("shared_buffer", "sliding_window"):
            length = kv["max_length"]
        else:
            length = 0
        for which in ("key", "value"):
            past[kv["past"].format(i=i, kv=which)] = np.zeros((1, kv["heads"], length, hd), np.float32)
    steps, pos = {}, 0
    chunks = [seq[:s]] + [[t] for t in seq[s:]]
    for k, chunk in enumerate(chunks):
        feed = {contract["input_ids"]: np.array([chunk], np.int64)}
        total = pos + len(chunk)
        if contract.get("attention_mask") and contract["attention_mask"] in names:
            feed[contract["attention_mask"]] = np.ones((1, total), np.int64)
        if contract.get("position_ids") and contract["position_ids"] in names:
            base = contract.get("position_base", 0)
            feed[contract["position_ids"]] = np.arange(pos, total, dtype=np.int64)[None] + base
        feed.update({n: v for n, v in past.items() if n in names})
        outs = sess.run(None, feed)
        onames = [o.name for o in sess.get_outputs()]
        res = dict(zip(onames, outs))
        steps[f"step{k}"] = res[contract["logits"]]
        for i in range(kv["count"]):
            for which in ("key", "value"):
                past[kv["past"].format(i=i, kv=which)] = res[kv["present"].format(i=i, kv=which)]
        pos = total
    return steps


def compare_steps(oracle: dict, got: dict) -> list:
    """Per step: top-1 agreement (last position) and max |Δ| over the step's logits."""
    rows = []
    for k in sorted(oracle, key=lambda x: int(x[4:])):
        if k not in got:
            rows.append({"step": k, "missing": True})
            continue
        a = np.asarray(oracle[k])
        b = np.asarray(got[k])[:, -a.shape[1]:]
        rows.append({"step": k, "top1_equal": bool((a.argmax(-1) == b.argmax(-1)).all()),
                     "top1_rows_equal": float((a.argmax(-1) == b.argmax(-1)).mean()),
                     "max_abs": float(np.abs(a - b).max())})
    return rows
