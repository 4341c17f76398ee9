"""`--zoo hub`: the real exports of zoo.yaml, from the Hugging Face cache at their pinned
revision, checksummed, judged against another backend (there is no eager oracle here).

Files come through `huggingface_hub.hf_hub_download` (its normal cache, resumable downloads,
HF_HUB_OFFLINE honoured); only the files an entry lists are fetched and nothing from the repo
is ever executed. A file without a sha256 in zoo.yaml gets one recorded in zoo.lock beside it
by its first download (printed, never silent); later downloads are verified against it.
"""

from __future__ import annotations

import functools
import json
import os
import stat
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


def inside_cache(local: Path, hub: str, entry: ZooModel) -> None:
    """`local` (snapshots/<rev>/<hub>) must be, once every link is followed, a regular file inside
    the repo's own cache folder (models--org--name/): a snapshot link that leaves it would have
    the run hash and trust (zoo.lock) a file the hub never sent. Checked before anything reads it."""
    snapshot = Path(str(local)[: -len(hub)]) if str(local).endswith(hub) else local.parent
    repo_dir = Path(os.path.realpath(snapshot.parent.parent))
    target = Path(os.path.realpath(local))
    if not target.is_relative_to(repo_dir):
        raise ZooError(f"{local}: a link that leaves the hub cache (it points to {target}, outside {repo_dir}); "
                       f"onnx-compat reads only files inside the cache: delete {local} and fetch it again with "
                       f"`hf download {entry.repo} {hub} --revision {entry.revision}`")
    if not stat.S_ISREG(os.stat(target).st_mode):
        raise ZooError(f"{local}: not a regular file ({target}); delete it and fetch it again with "
                       f"`hf download {entry.repo} {hub} --revision {entry.revision}`")


PROBE_TIMEOUT_S = 5.0


@functools.lru_cache(maxsize=None)
def hub_unreachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be reached (None when it answers at all, even with an HTTP error):
    asked once per process, so an offline run says so at once instead of every download
    retrying for minutes."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(endpoint.rstrip("/") + "/api/models", method="HEAD"),
                               timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        return f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
    return None


def need_network(entry: ZooModel) -> None:
    """Every listed file already in the cache: nothing to ask the hub. Otherwise, one line at
    once when the hub cannot serve them: HF_HUB_OFFLINE is set, or the endpoint does not answer;
    the line names the missing files and the command that fetches them."""
    import huggingface_hub.constants as hf
    from huggingface_hub import try_to_load_from_cache

    missing = [entry.hub_path(f.path) for f in entry.files
               if not isinstance(try_to_load_from_cache(entry.repo, entry.hub_path(f.path), revision=entry.revision), str)]
    if not missing:
        return
    what = f"{missing[0]}" + (f" and {len(missing) - 1} more file(s)" if len(missing) > 1 else "")
    cmd = f"hf download {entry.repo} {' '.join(missing)} --revision {entry.revision}"
    if hf.HF_HUB_OFFLINE:
        raise ZooError(f"{entry.repo}@{entry.revision[:12]}: {what} not in the hub cache and HF_HUB_OFFLINE is set; "
                       f"fetch online with `{cmd}`")
    why = hub_unreachable(hf.ENDPOINT)
    if why:
        raise ZooError(f"{entry.repo}@{entry.revision[:12]}: the hub ({hf.ENDPOINT}) cannot be reached ({why}) and "
                       f"{what} not in the hub cache; fetch where it is reachable with `{cmd}`")


def fetch_failures(records) -> list[str]:
    """One line per hub model whose cell is an error (offline, unreachable, unpinned, tampered):
    the reason and the fix, for the console, so it is not only in results.jsonl."""
    out: dict[str, str] = {}
    for r in records:
        cid = r.get("case_id", "")
        if cid.startswith("zoo/hub/") and r.get("status") == "error" and cid not in out:
            lines = (r.get("message") or "").strip().splitlines()
            out[cid] = f"{cid}: {lines[-1] if lines else 'error'}"
    return list(out.values())


def fetch(entry: ZooModel, log=None) -> Path:
    """Every file of the entry in the local cache, verified; returns the folder the contract's
    paths are relative to (the snapshot, plus the entry's subfolder)."""
    log = log if log is not None else sys.stderr  # looked up per call: pytest swaps sys.stderr
    if entry.unresolved or not entry.revision:
        raise ZooError(f"zoo.yaml: model {entry.name!r}: no pinned revision ({entry.unresolved}); "
                       "resolve the full commit online and set revision")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    need_network(entry)
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
        inside_cache(local, hub, entry)
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
