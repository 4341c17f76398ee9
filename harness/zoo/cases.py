"""Zoo cases: one per shipped twin (oracle: its eager logits) or per zoo.yaml entry under
`--zoo hub` (oracle: another backend, `--oracle`). Both run through the decode loop."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..case import Built, Case
from .decode import ZooDriver, kv_names, load_plan
from .schema import Contract, Manifest, Tokens, ZooError
from .twins import load_manifest, manifest_dirs, verify_files

ORACLE_ENV = "ONNX_COMPAT_ZOO_ORACLE"
DEFAULT_ORACLE = "ort-cpu-noopt"


def form_mark(form: str) -> str:
    return "zoo_" + form.replace("-", "_").replace(".", "_")


def tolerance_for(precision: str, quantized: list[dict[str, Any]]) -> str:
    """fp16 graphs -> fp16-logits; a MatMulNBits with accuracy_level 4 -> int8act-logits (the
    schema lets it quantise activations); everything else float32 -> fp32-logits."""
    if "f16" in precision or precision in ("fp16", "bf16"):
        return "fp16-logits"
    if any(q.get("op", "").endswith("MatMulNBits") and int(q.get("attrs", {}).get("accuracy_level", 0)) == 4
           for q in quantized):
        return "int8act-logits"
    return "fp32-logits"


def _features(m: Manifest | None, contract: Contract, **extra) -> dict[str, Any]:
    g = contract.graphs
    f = {"cache": contract.kv.cache, "kv_pairs": contract.kv.count,
         "graphs": "+".join(k for k in ("embed", "prefill", "decoder") if getattr(g, k)),
         "position_base": contract.position_base, "attention_mask": bool(contract.attention_mask),
         "position_ids": bool(contract.position_ids)}
    if m is not None:
        ops = {op for s in m.graphs.values() for op in s.ops}
        f.update(model=m.model, form=m.form, precision=m.precision, exporter=f"{m.exporter.name} {m.exporter.version}",
                 n_steps=1 + len(m.tokens.decode), prompt=len(m.tokens.prompt[0]), reconstruction=bool(m.reconstruction),
                 ops=sorted(ops))
    f.update(extra)
    return f


def built_for(contract: Contract, tokens: Tokens, root: Path, expected: list[np.ndarray], oracle: str,
              weights: bool = True, as_exported: tuple[list[np.ndarray], str] | None = None) -> Built:
    """`weights`: load the decoder's external data into Built.model (twins: small, and the
    generic bundle saves it); hub models keep only the graph (their bundles link the files)."""
    steps = load_plan(contract, tokens, root)
    if len(expected) != len(steps):
        raise ZooError(f"{root}: the oracle has {len(expected)} steps, the tokens make {len(steps)}")
    decoder = root / contract.graphs.decoder
    single = not (contract.graphs.embed or contract.graphs.prefill)
    model = onnx.load(str(decoder), load_external_data=weights and single)
    return Built(model=model, feeds=[s.feeds for s in steps], expected=[{contract.logits: e} for e in expected],
                 carry={q: p for p, q in kv_names(contract)} if single else {}, oracle=oracle,
                 driver=ZooDriver(contract, root, steps, expected, oracle, as_exported=as_exported))


def _make_twin(twin_dir: str, rng=None) -> Built:
    d = Path(twin_dir)
    m = load_manifest(d)
    verify_files(d, m.files, f"{d.name}/manifest.json")
    n = 1 + len(m.tokens.decode)
    expected = _oracle_steps(d / m.oracle.file, n)
    ax = m.oracle.as_exported
    as_exported = (_oracle_steps(d / ax.file, n), ax.what) if ax else None
    return built_for(m.contract, m.tokens, d, expected, "torch eager (oracle.npz)", as_exported=as_exported)


def _oracle_steps(path: Path, n: int) -> list[np.ndarray]:
    with np.load(path) as z:
        missing = [f"step{i}" for i in range(n) if f"step{i}" not in z]
        if missing:
            raise ZooError(f"{path}: no {missing[0]}; rebuild the twin")
        return [np.asarray(z[f"step{i}"], np.float32) for i in range(n)]


def _broken(error: str, rng=None) -> Built:
    raise ZooError(error)


def twin_cases() -> list[Case]:
    out = []
    for d in manifest_dirs():
        try:
            m = load_manifest(d)
        except ZooError as e:  # shown as an `error` cell naming the file, not a crash of the run
            out.append(Case(id=f"zoo/{d.name}", family="zoo", features={"manifest": "invalid"}, marks=("zoo",),
                            tolerance="fp32-logits", make=partial(_broken, str(e)),
                            description=f"twin {d.name}: invalid manifest"))
            continue
        quant = [q for s in m.graphs.values() for q in s.quantized]
        out.append(Case(id=f"zoo/{m.name}", family="zoo", features=_features(m, m.contract, oracle="torch-eager"),
                        marks=("zoo", form_mark(m.form)), tolerance=tolerance_for(m.precision, quant),
                        make=partial(_make_twin, str(d)),
                        description=f"twin of {m.model} ({m.form}, {m.precision}) by {m.exporter.name} "
                                    f"{m.exporter.version}"))
    return out


def hub_cases() -> list[Case]:
    from .hub import hub_case

    from .twins import load_zoo

    oracle = os.environ.get(ORACLE_ENV, DEFAULT_ORACLE)
    return [hub_case(entry, oracle) for entry in load_zoo().models]


def forms() -> set[str]:
    """Every export form of a twin or zoo.yaml entry (each is a mark zoo_<form>)."""
    out = set()
    for d in manifest_dirs():
        try:
            out.add(load_manifest(d).form)
        except ZooError:
            pass
    try:
        from .twins import load_zoo

        out |= {e.form for e in load_zoo().models}
    except (ZooError, FileNotFoundError):
        pass
    return out
