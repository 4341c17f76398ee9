"""Op cases extracted from the shipped twins' exports (harness/extract.py): every distinct
configuration of an attention, quantisation, rotary or norm node in a twin's graphs, with the
export's shapes, constants and recorded integer inputs, and random float activations; judged
against the reference on the same bytes. Ids extracted/<twin>/<op>-<n>, so a real export's
exact GQA configuration is a row even where no grid hit it. Twins come and go with zoo/twins/,
so these ids are not pinned (tests/pin_cases.py)."""

from __future__ import annotations

from functools import partial

from harness.case import Case
from harness.families import Family

FAMILY = Family(marks={"extracted": "op cases extracted from the shipped twins' exports (onnx-compat extract)"})


def _broken(why: str, rng=None):
    from harness.extract import ExtractError

    raise ExtractError(why)


def cases(grid: str):
    """The same distinct configurations in both grids: extraction already keeps only those."""
    from harness.extract import to_cases, twin_configs
    from harness.zoo.twins import manifest_dirs

    out: list[Case] = []
    for d in manifest_dirs():
        try:
            out += to_cases(twin_configs(d), d)
        except Exception as e:  # noqa: BLE001 - one twin that cannot be extracted is its own error cell
            out.append(Case(id=f"extracted/{d.name}/unextractable", family="extracted", features={"model": d.name},
                            marks=("extracted",), tolerance="fp32-pointwise",
                            make=partial(_broken, f"{d.name}: could not extract its op cases: "
                                                  f"{type(e).__name__}: {str(e)[:300]}"),
                            description=f"twin {d.name}: extraction failed"))
    return out
