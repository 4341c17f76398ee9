"""What the page shows of each cell: a grade read at a glance (the zoo grid), a short labelled
number (the matrix), and the details loaded on demand (one compressed blob for the whole page).

Numbers carry their metric's name ("NMSE 4.1e-08", "top-1 0.92"), so a cell never shows a bare
number. The details keep what explains the cell; the full record stays in results.jsonl.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from typing import Any

#: zoo grade -> (short label, css class); the order is the legend's
GRADES = {
    "agree": ("tokens agree, logits within bound", "g-agree"),
    "drift": ("tokens agree, logits drift", "g-drift"),
    "differ": ("tokens differ", "g-differ"),
    "refused": ("refused", "g-refused"),
    "fails": ("fails or crashes", "g-fails"),
    "exporter": ("exporter's fault", "g-exporter"),
    "reading": ("a reading the text allows", "g-reading"),
    "absent": ("not run here", "g-absent"),
}
_SUMMARY_METRICS = ("max_abs", "max_rel", "nmse", "cosine", "need_atol", "need_rtol", "top1", "kl", "oracle",
                    "latency_ms", "worst_output", "matches_reading", "required_refusal", "located")


def sig(x: Any, digits: int = 2) -> str:
    """A number as the page prints it: `digits` significant digits."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return f"{x:.{digits}g}"


def round4(x: Any) -> Any:
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, dict):
        return {k: round4(v) for k, v in x.items()}
    if isinstance(x, list):
        return [round4(v) for v in x]
    return x


def zoo_grade(status: str, metrics: dict[str, Any]) -> tuple[str, str, str]:
    """(grade, the short numbers a cell shows, the full ones for its tooltip) for a zoo cell:
    tokens are top-1 agreement over the teacher-forced steps (shown only below 1), logits the
    cell's verdict against its tolerance (KL(oracle ‖ runtime), and NMSE where they drift)."""
    top1, kl, nmse = metrics.get("top1"), metrics.get("kl"), metrics.get("nmse")
    full = " · ".join(x for x in (f"top-1 {top1:.3g}" if isinstance(top1, (int, float)) else "",
                                  f"KL {sig(kl)}" if isinstance(kl, (int, float)) else "",
                                  f"NMSE {sig(nmse)}" if isinstance(nmse, (int, float)) else "") if x)
    short = []
    if isinstance(top1, (int, float)) and top1 < 1.0:
        short.append(f"top-1 {top1:.2f}")
    if isinstance(kl, (int, float)):
        short.append(f"KL {sig(kl, 1)}")
    if status == "mismatch" and isinstance(nmse, (int, float)) and not (isinstance(top1, (int, float)) and top1 < 1.0):
        short.append(f"NMSE {sig(nmse, 1)}")
    text = " · ".join(short)
    if status == "pass":
        if isinstance(top1, (int, float)) and top1 < 1.0:  # near-tied logits of a random twin: the verdict
            # judges the logits against their bound, so a disagreeing argmax is shown but not judged
            text = " · ".join([f"NMSE {sig(nmse, 1)}"] * isinstance(nmse, (int, float))
                              + [f"top-1 {top1:.2f} (not judged)"])
            full += " · the verdict judges the logits against their bound; top-1 is shown, not judged"
        return "agree", text, full
    if status == "mismatch":
        return ("drift" if isinstance(top1, (int, float)) and top1 >= 1.0 else "differ"), text, full
    grade = {"unsupported": "refused", "exporter": "exporter", "ambiguous": "reading",
             "error": "fails", "crash": "fails", "timeout": "fails"}.get(status, "absent")
    return grade, text if grade in ("exporter", "reading") else "", full


def matrix_label(status: str, metrics: dict[str, Any], tolerance: dict[str, Any] | None) -> str:
    """The number a matrix cell shows under its status, named: for wrong values the metric that
    is over its bound (NMSE, else max |Δ|; top-1 for a zoo model), for a perf run the latency."""
    m, tol = metrics or {}, tolerance or {}
    out = ""
    if status == "mismatch":
        if isinstance(m.get("top1"), (int, float)) and "steps" in m:
            out = f"top-1 {m['top1']:.2f}"
        elif isinstance(m.get("nmse"), (int, float)) and m["nmse"] > (tol.get("max_nmse") or float("inf")):
            out = f"NMSE {sig(m['nmse'])}"
        elif isinstance(m.get("max_abs"), (int, float)):
            out = f"|Δ| {sig(m['max_abs'])}"
    if isinstance(m.get("latency_ms"), (int, float)):
        out += ("; " if out else "") + f"{sig(m['latency_ms'], 3)} ms"
    return out


def details(rec: dict[str, Any], repro: str | None, draft: str | None) -> dict[str, Any]:
    """One cell's panel: passing cells keep their summary metrics (and per-step ones for the zoo
    chart); a failing cell keeps everything the run measured, numbers to 4 digits."""
    m = dict(rec.get("metrics") or {})
    if rec.get("status") == "pass":
        m = {k: m[k] for k in _SUMMARY_METRICS if k in m} | (
            {"steps": [{k: s.get(k) for k in ("max_abs", "nmse", "cosine", "top1", "kl") if k in s}
                       for s in m["steps"]]} if "steps" in m else {})
    d = {"metrics": round4(m), "message": rec.get("message"), "tolerance": (rec.get("tolerance") or {}).get("profile"),
         "repro": repro, "seconds": round4(rec.get("seconds")), "draft": draft}
    return {k: v for k, v in d.items() if v not in (None, "", {})}


def packed(obj: Any) -> str:
    """JSON, gzip-compressed, base64: the page inflates it with the browser's DecompressionStream
    (no network, works from file://). Base64 cannot hold '<', so no string can close the tag."""
    raw = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def packed_parts(parts) -> str:
    """`packed` for JSON text given in pieces (the details of 100 000 cells are compressed as
    they are made, never held whole)."""
    z = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip stream, as DecompressionStream("gzip") reads
    chunks = [z.compress(p.encode("utf-8")) for p in parts]
    chunks.append(z.flush())
    return base64.b64encode(b"".join(chunks)).decode("ascii")


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str)


def unpacked(text: str) -> Any:
    """The inverse of `packed` (tests read the page's data this way)."""
    return json.loads(gzip.decompress(base64.b64decode(text)).decode("utf-8"))
