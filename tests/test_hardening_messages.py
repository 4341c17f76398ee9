"""tract's refusals lead with their reason (issue 10, item 7): anyhow prints the context
first (`Building node  (GroupQueryAttention)`) and the reason last, under `Caused by:`."""

from harness.backends.tract_backend import clean_message
from harness.registry import load_cases, select


def test_innermost_cause_first_and_chain_kept():
    raw = ("Building node  (GroupQueryAttention)\n\nCaused by:\n"
           "    GroupQueryAttention: softcap is unsupported\n\nStack backtrace:\n   0: anyhow::x\n")
    assert clean_message(raw).splitlines() == ["GroupQueryAttention: softcap is unsupported",
                                               "  while: Building node  (GroupQueryAttention)"]


def test_numbered_chain_reads_inner_to_outer_and_joins_wrapped_lines():
    raw = ('Error: Translating node #4 "output" RotaryEmbedding ToTypedTranslator\nCaused by:\n'
           "    0: in output_facts invocation for output: Reshape\n"
           "    1: Incompatible reshape for shape [2, 5]\n       and Reshape(2, [4,16], [64])\n")
    assert clean_message(raw).splitlines() == [
        "Incompatible reshape for shape [2, 5] and Reshape(2, [4,16], [64])",
        "  while: in output_facts invocation for output: Reshape",
        '  while: Translating node #4 "output" RotaryEmbedding ToTypedTranslator']


def test_message_without_chain_is_unchanged():
    assert clean_message("Unknown DatumType Uint4") == "Unknown DatumType Uint4"


def test_real_tract_refusal_leads_with_its_reason():
    from harness import backends
    from harness.runner import run_cell

    case = select(load_cases("quick"), "decode-softcap1.5-b1-gemma3-h4kv1-d256-s1-past0-fp32")[0]
    b = backends.get("tract")
    if not b.available()[0]:
        import pytest

        pytest.skip("tract is not installed")
    try:
        rec = run_cell(case, b)
    finally:
        b.close()
    assert rec["status"] == "unsupported", rec
    first = rec["message"].splitlines()[0]
    assert "softcap" in first and not first.startswith("Building node"), rec["message"]
