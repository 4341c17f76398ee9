"""The ORT-GenAI runtime column (`ort-genai`): a whole zoo model through onnxruntime_genai.

GenAI owns the decode loop (KV buffers, masks, positions), so it cannot run one graph with
given feeds: it drives a zoo case's whole model through `og.Model` / `og.Generator`,
teacher-forced (the manifest's prompt, then each decode token, appended one call at a time;
the logits of every call read back with `get_output("logits")`). The model folder needs a
`genai_config.json`: a model builder export has one; for any other form one is written from
the contract into a temporary folder beside links to the model's files, and the cell says
so. Separate graphs (an embedding graph, a prefill graph) become a GenAI `decoder-pipeline`
(stages with run_on_prompt / run_on_token_gen); what GenAI then does with what it has no
input for (`cache_position`) is its own message in the cell. Op cases are not GenAI's to
run: `skip`.

onnxruntime-genai pins its own onnxruntime (`pip install -e .[genai]`); where that would
replace the core's, give the column its own virtual environment.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .base import Backend, ModelRef, Session

INSTALL = "pip install -e .[genai]  (onnxruntime-genai; it requires onnxruntime>=1.31 — check it keeps the core's)"
SKIP_OP_CASES = ("ort-genai runs whole zoo models through its own decode loop (og.Model / og.Generator); "
                 "an op case is one graph with given feeds, which GenAI has no API to run")


def _og():
    import onnxruntime_genai

    return onnxruntime_genai


def _pattern(name: str, which: str) -> str:
    return name.format(i="%d", kv=which)


def _graph_io(path: Path) -> tuple[list[str], list[str]]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits], [o.name for o in m.graph.output]


def genai_config(contract, root: Path, steps: int, prompt: int) -> tuple[dict[str, Any], list[str]]:
    """A genai_config.json for a zoo model from its contract and config.json, and notes on how
    it was written and what of the contract it cannot say (no GenAI field for it)."""
    hf_path = root / "config.json"
    hf = json.loads(hf_path.read_text()) if hf_path.exists() else {}
    text = hf.get("text_config", hf)
    kv = contract.kv
    first = lambda v: v[0] if isinstance(v, list) else v  # noqa: E731
    notes: list[str] = []
    inputs = {"input_ids": contract.input_ids, "past_key_names": _pattern(kv.past, "key"),
              "past_value_names": _pattern(kv.past, "value")}
    if contract.attention_mask:
        inputs["attention_mask"] = contract.attention_mask
    if contract.position_ids:
        inputs["position_ids"] = contract.position_ids
    outputs = {"logits": contract.logits, "present_key_names": _pattern(kv.present, "key"),
               "present_value_names": _pattern(kv.present, "value")}
    g = contract.graphs
    if g.prefill or g.embed:
        notes.append("written as a GenAI decoder-pipeline: " + ", ".join(
            ([f"{g.embed} on every call"] if g.embed else [])
            + ([f"{g.prefill} on the prompt (run_on_token_gen false)"] if g.prefill else [])
            + [f"{g.decoder} on " + ("each new token (run_on_prompt false)" if g.prefill else "every call")]))
    if contract.cache_position:
        notes.append(f"GenAI has no input for {contract.cache_position!r}")
    if contract.position_base:
        notes.append("GenAI feeds 0-based position_ids; the contract says 1-based")
    if isinstance(kv.head_dim, list) or isinstance(kv.heads, list):
        notes.append("per-pair head sizes written as the first pair's")
    total = prompt + steps - 1
    max_length = kv.max_length or kv.window or total
    decoder = {"filename": contract.graphs.decoder,
               "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
               "head_size": first(kv.head_dim), "hidden_size": text.get("hidden_size", 0),
               "num_attention_heads": text.get("num_attention_heads", first(kv.heads)),
               "num_hidden_layers": kv.count, "num_key_value_heads": first(kv.heads),
               "inputs": inputs, "outputs": outputs}
    mtype = text.get("model_type") or hf.get("model_type") or "decoder"
    if g.prefill or g.embed:
        stages = []
        for name, rel, prompt_, token in (("embedding", g.embed, True, True), ("prefill", g.prefill, True, False),
                                          ("decoder", g.decoder, not g.prefill, True)):
            if rel:
                ins, outs = _graph_io(root / rel)
                stages.append({name: {"filename": rel, "inputs": ins, "outputs": outs,
                                      "run_on_prompt": prompt_, "run_on_token_gen": token}})
        del decoder["filename"]
        decoder["pipeline"] = stages
        mtype = "decoder-pipeline"
    eos = text.get("eos_token_id", hf.get("eos_token_id", 1))
    model = {"type": mtype,
             "vocab_size": text.get("vocab_size", 0), "context_length": max(max_length, total),
             "bos_token_id": text.get("bos_token_id", 2) or 0, "eos_token_id": eos if eos is not None else 1,
             "pad_token_id": text.get("pad_token_id", 0) or 0, "decoder": decoder}
    search = {"max_length": max(max_length, total), "min_length": 0, "do_sample": False, "num_beams": 1,
              "num_return_sequences": 1, "top_k": 1, "top_p": 1.0, "temperature": 1.0,
              "repetition_penalty": 1.0, "length_penalty": 1.0, "early_stopping": True,
              "no_repeat_ngram_size": 0, "diversity_penalty": 0.0,
              "past_present_share_buffer": kv.cache == "shared_buffer"}
    return {"model": model, "search": search}, notes


def own_config_folder(root: Path, decoder: str) -> Path | None:
    """The folder of the model's own genai_config.json: the decoder's (a builder export in a hub
    subfolder keeps it there) or one above it, up to the model's root; None if it has none."""
    top = Path(root).resolve()
    d = (top / decoder).parent.resolve()
    while True:
        if (d / "genai_config.json").exists():
            return d
        if d == top or top not in d.parents:
            return None
        d = d.parent


def _tokens(driver) -> list[np.ndarray]:
    name = driver.contract.input_ids
    out = []
    for s in driver.steps:
        ids = s.feeds.get(name, s.embed_feeds.get(name))
        out.append(np.asarray(ids, np.int32))
    return out


class GenaiRun:
    """One zoo model loaded in GenAI; `run_steps` is the teacher-forced loop."""

    def __init__(self, driver, og):
        self.og, self.driver = og, driver
        self._tmp: str | None = None
        self.note = ""
        root = Path(driver.root)
        tokens = _tokens(driver)
        folder = own_config_folder(root, driver.contract.graphs.decoder)
        if folder is None:
            cfg, notes = genai_config(driver.contract, root, len(tokens), tokens[0].shape[1])
            self._tmp = tempfile.mkdtemp(prefix="onnx-compat-genai-")
            for entry in root.iterdir():
                os.symlink(entry.resolve(), Path(self._tmp) / entry.name)
            (Path(self._tmp) / "genai_config.json").write_text(json.dumps(cfg, indent=1))
            folder = Path(self._tmp)
            self.note = ("no genai_config.json in the model: one was written from the contract"
                         + ("; " + "; ".join(notes) if notes else ""))
        self.max_length = sum(t.shape[1] for t in tokens)
        self.tokens = tokens
        try:
            self.model = og.Model(str(folder))
        except Exception as e:
            self.close()
            raise RuntimeError(self._said(e)) from e

    def _said(self, e: Exception) -> str:
        """GenAI's own words, after what the harness did to give it the model."""
        words = f"onnxruntime-genai: {type(e).__name__}: {e}"
        return f"{self.note}; {words}" if self.note else words

    def run_steps(self) -> list[dict[str, np.ndarray]]:
        og, logits_name = self.og, self.driver.contract.logits
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.max_length, do_sample=False, num_beams=1)
        out = []
        try:
            gen = og.Generator(self.model, params)
            for ids in self.tokens:
                gen.append_tokens(ids)
                out.append({logits_name: np.asarray(gen.get_output("logits"))})
        except Exception as e:  # noqa: BLE001 - the cell keeps GenAI's words and the step
            raise RuntimeError(f"step {len(out)}: {self._said(e)}") from e
        return out

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class OrtGenai(Backend):
    name = "ort-genai"
    description = "ONNX Runtime GenAI (og.Model / og.Generator), zoo models only, CPU"
    #: the runner gives op cases `skip` with this reason instead of calling prepare
    zoo_only = SKIP_OP_CASES

    def available(self) -> tuple[bool, str]:
        try:
            _og()
        except ImportError as e:
            return False, f"onnxruntime_genai is not importable ({e}); {INSTALL}"
        return True, ""

    def version(self) -> str:
        try:
            og = _og()
        except ImportError:
            return "not installed"
        import onnxruntime

        return f"onnxruntime-genai {og.__version__} (onnxruntime {onnxruntime.__version__}); CPU"

    def drive(self, driver) -> GenaiRun:
        """The whole zoo model (a harness.zoo ZooDriver: contract, root, planned steps)."""
        return GenaiRun(driver, _og())

    def prepare(self, model: ModelRef) -> Session:
        raise RuntimeError("ort-genai runs whole zoo models through drive(); it was handed a single graph "
                           "(an isolated worker cannot drive GenAI: run it without --isolate)")

