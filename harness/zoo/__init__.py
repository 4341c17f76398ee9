"""The zoo: real LLM exports pinned on the hub, their shipped twins, and the decode loop that
runs both through any backend (contract: docs/zoo.md).

`zoo_cases(mode)` gives the cases of one mode: "twins" (zoo/twins/*/manifest.json), "hub"
(zoo.yaml entries, downloaded at their pinned revision) or "none".
"""

from __future__ import annotations

from .schema import Contract, Manifest, ZooError, ZooFile, ZooModel
from .twins import load_manifest, load_zoo

MODES = ("twins", "hub", "none")


def zoo_cases(mode: str = "twins") -> list:
    if mode not in MODES:
        raise ZooError(f"--zoo {mode!r}: use one of {', '.join(MODES)}")
    if mode == "none":
        return []
    from .cases import hub_cases, twin_cases

    return twin_cases() if mode == "twins" else hub_cases()


__all__ = ["Contract", "Manifest", "ZooError", "ZooFile", "ZooModel", "load_manifest", "load_zoo", "zoo_cases", "MODES"]
