"""`--zoo hub`: the real exports of zoo.yaml, from the Hugging Face cache at their pinned
revision, checksummed, judged against another backend (there is no eager oracle here).

Files come through `huggingface_hub.hf_hub_download` (its normal cache, resumable downloads,
HF_HUB_OFFLINE honoured); only the files an entry lists are fetched and nothing from the repo
is ever executed. A file without a sha256 in zoo.yaml gets one recorded in zoo.lock beside it
by its first download (printed, never silent); later downloads are verified against it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from ..case import Built, Case
from .schema import Tokens, ZooError, ZooModel
from .twins import sha256_file, zoo_path

LOCK_NAME = "zoo.lock"


def lock_path() -> Path:
    return zoo_path().with_name(LOCK_NAME)


def read_lock(path: Path | None = None) -> dict[str, str]:
    path = path or lock_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return dict(data["files"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ZooError(f"{path}: not a zoo lock file ({e}); delete it to record the checksums again") from None


def record_lock(key: str, sha: str, path: Path | None = None) -> None:
    """Add one checksum to zoo.lock, atomically (temp file + rename)."""
    path = path or lock_path()
    files = read_lock(path)
    files[key] = sha
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump({"version": 1, "files": dict(sorted(files.items()))}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def lock_key(entry: ZooModel, path: str) -> str:
    return f"{entry.repo}@{entry.revision}/{entry.hub_path(path)}"


def fetch(entry: ZooModel, log=sys.stderr) -> Path:
    """Every file of the entry in the local cache, verified; returns the folder the contract's
    paths are relative to (the snapshot, plus the entry's subfolder)."""
    if entry.unresolved or not entry.revision:
        raise ZooError(f"zoo.yaml: model {entry.name!r}: no pinned revision ({entry.unresolved}); "
                       "resolve the full commit online and set revision")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    lock = read_lock()
    root: Path | None = None
    for f in entry.files:
        hub = entry.hub_path(f.path)
        try:
            local = Path(hf_hub_download(entry.repo, hub, revision=entry.revision))
        except LocalEntryNotFoundError:
            raise ZooError(f"{entry.repo}@{entry.revision[:12]}: {hub} is not in the hub cache and cannot be downloaded "
                           f"(offline); fetch it online with `hf download {entry.repo} {hub} --revision "
                           f"{entry.revision}`") from None
        except Exception as e:  # noqa: BLE001 - network, auth, missing file: one line with the cause
            raise ZooError(f"{entry.repo}@{entry.revision[:12]}: {hub}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from None
        expected = f.sha256 or lock.get(lock_key(entry, f.path))
        got = sha256_file(local)
        if expected is None:
            record_lock(lock_key(entry, f.path), got)
            print(f"zoo.lock: recorded sha256 {got[:12]}… of {entry.repo}/{hub} at {entry.revision[:12]} "
                  "(first download; zoo.yaml gives none)", file=log)
        elif got != expected:
            raise ZooError(f"{local} (blob {local.resolve()}): sha256 {got[:12]}… is not the {expected[:12]}… pinned "
                           f"for {entry.name} {hub}; the blob is corrupt or tampered: delete it from the hub cache "
                           "and download again")
        base = Path(str(local)[: -len(hub)]) if str(local).endswith(hub) else local.parent
        root = base / entry.subfolder if entry.subfolder else base
    assert root is not None
    return root


def vocab_size(entry: ZooModel, root: Path) -> int:
    """The logits output's static last dim, else config.json's vocab_size (text_config's for
    multimodal configs), else 1000."""
    import onnx

    m = onnx.load(str(root / entry.contract.graphs.decoder), load_external_data=False)
    for o in m.graph.output:
        if o.name == entry.contract.logits and o.type.tensor_type.shape.dim:
            v = o.type.tensor_type.shape.dim[-1].dim_value
            if v:
                return int(v)
    cfg = root / "config.json"
    if cfg.exists():
        c = json.loads(cfg.read_text())
        v = c.get("vocab_size") or c.get("text_config", {}).get("vocab_size")
        if v:
            return int(v)
    return 1000


def hub_tokens(entry: ZooModel, vocab: int = 1000, decode: int = 4) -> Tokens:
    """A fixed teacher-forced sequence for a hub model (from the entry's name alone), long
    enough to cross a sliding window; ids below 3 (pad/bos/eos) and above 1000 avoided."""
    import hashlib

    kv = entry.contract.kv
    prompt = (kv.window or 0) + 8 if kv.cache == "sliding_window" else 16
    seed = int.from_bytes(hashlib.sha256(entry.name.encode()).digest()[:8], "little")
    ids = [int(x) for x in np.random.default_rng(seed).integers(3, min(vocab, 1000), size=prompt + decode)]
    return Tokens(batch=1, prompt=[ids[:prompt]], decode=[[t] for t in ids[prompt:]])


def _make_hub(entry_json: str, oracle: str, rng=None) -> Built:
    from .. import backends
    from .cases import built_for
    from .decode import ZooDriver, load_plan

    entry = ZooModel.model_validate_json(entry_json)
    root = fetch(entry)
    tokens = hub_tokens(entry, vocab_size(entry, root))
    b = backends.get(oracle)
    ok, why = b.available()
    if not ok:
        raise ZooError(f"oracle backend {oracle} is unavailable ({why}); choose another with --oracle")
    try:
        steps = load_plan(entry.contract, tokens, root)
        driver = ZooDriver(entry.contract, root, steps, [], oracle)
        session = driver.prepare(b.prepare)
        try:
            expected = [o[entry.contract.logits] for o in session.run_steps()]
        finally:
            session.close()
    except ZooError:
        raise
    except Exception as e:  # noqa: BLE001 - without an oracle nothing can be judged: say why
        raise ZooError(f"oracle backend {oracle} could not run {entry.name}: {type(e).__name__}: {e}") from None
    finally:
        b.close()
    built = built_for(entry.contract, tokens, root, expected, f"{oracle} (no eager oracle for a hub model)",
                      weights=False)
    built.driver.oracle_backend = oracle
    return built


def hub_case(entry: ZooModel, oracle: str) -> Case:
    from .cases import _features, form_mark, tolerance_for

    return Case(id=f"zoo/hub/{entry.name}", family="zoo",
                features=_features(None, entry.contract, model=entry.name, form=entry.form, precision=entry.precision,
                                   exporter=f"{entry.exporter.name} {entry.exporter.version}", repo=entry.repo,
                                   revision=entry.revision or f"unresolved: {entry.unresolved}", oracle=oracle),
                marks=("zoo", form_mark(entry.form)),
                tolerance=entry.tolerance or tolerance_for(entry.precision, []),
                make=partial(_make_hub, entry.model_dump_json(by_alias=True), oracle),
                description=f"{entry.repo} ({entry.form}, {entry.precision}) from the hub, judged against {oracle}")
