"""Teacher-forced onnxruntime (CPU) runs of the Gemma-4 twins, for the builders' own check.

common.ort_teacher_forced drives one graph with one head size; the Gemma-4 forms need an
embedding graph feeding the decoder by output name, a head size per KV pair, and (the
transformers exporter's form) a prefill graph followed by a decode graph. This is a builder's
check against the eager oracle, not the harness's decode loop.
"""

from __future__ import annotations

import numpy as np


def _session(path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _empty_past(kv: dict, sess) -> dict:
    names = {i.name for i in sess.get_inputs()}
    dims = kv["head_dim"] if isinstance(kv["head_dim"], list) else [kv["head_dim"]] * kv["count"]
    past = {}
    for i in range(kv["count"]):
        for which in ("key", "value"):
            n = kv["past"].format(i=i, kv=which)
            if n in names:
                past[n] = np.zeros((1, kv["heads"], 0, dims[i]), np.float32)
    return past


def run(twin_dir, contract: dict, tokens: dict) -> dict:
    """step0 over the prompt, then one step per decode token, growing (concat) past."""
    from pathlib import Path
    twin_dir = Path(twin_dir)
    g = contract["graphs"]
    dec = _session(twin_dir / g["decoder"])
    embed = _session(twin_dir / g["embed"]) if g.get("embed") else None
    prefill = _session(twin_dir / g["prefill"]) if g.get("prefill") else None
    kv = contract["kv"]
    seq = tokens["prompt"][0] + [d[0] for d in tokens["decode"]]
    s = len(tokens["prompt"][0])
    chunks = [seq[:s]] + [[t] for t in seq[s:]]
    past, pos, steps = None, 0, {}
    for k, chunk in enumerate(chunks):
        sess = prefill if (k == 0 and prefill is not None) else dec
        names = {i.name for i in sess.get_inputs()}
        ids = np.array([chunk], np.int64)
        feed = {}
        if embed is not None:
            outs = embed.run(None, {contract["input_ids"]: ids})
            feed.update(zip([o.name for o in embed.get_outputs()], outs))
        else:
            feed[contract["input_ids"]] = ids
        total = pos + len(chunk)
        if contract.get("attention_mask") in names:
            feed[contract["attention_mask"]] = np.ones((1, total), np.int64)
        if contract.get("position_ids") in names:
            feed[contract["position_ids"]] = np.arange(pos, total, dtype=np.int64)[None] + contract.get("position_base", 0)
        for name, rule in (contract.get("extra_inputs") or {}).items():
            if name in names and rule == "zero":
                feed[name] = np.array(0, np.int64)
        if past is None:
            past = _empty_past(kv, sess)
        feed.update({n: v for n, v in past.items() if n in names})
        feed = {n: v for n, v in feed.items() if n in names}
        res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        steps[f"step{k}"] = res[contract["logits"]]
        present = kv.get("prefill_present") if (sess is prefill and kv.get("prefill_present")) else kv["present"]
        past = {}
        for i in range(kv["count"]):
            for which in ("key", "value"):
                past[kv["past"].format(i=i, kv=which)] = res[present.format(i=i, kv=which)]
        pos = total
    return steps
