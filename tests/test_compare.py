import numpy as np
import pytest

from harness.compare import judge_step, judge_steps, tensor_metrics
from harness.tolerances import PROFILES, Tolerance

TOL = Tolerance("t", atol=1e-6, rtol=1e-4, max_nmse=1e-8, reason="test")


def test_identical_arrays_have_zero_error():
    """An exact copy (the judge skips its divisions then) has every error 0, at atol 0 too, and
    -0.0 against 0.0 is exact."""
    a = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    a[:3] = 0.0
    copy = a.copy()
    copy[0] = -0.0
    for tol in (TOL, Tolerance("zero", atol=0.0, rtol=0.0, max_nmse=0.0, reason="test")):
        m = tensor_metrics(copy, a, tol)
        assert m["max_abs"] == m["max_rel"] == m["nmse"] == m["need_atol"] == m["need_rtol"] == m["bad"] == 0
        assert m["cosine"] == pytest.approx(1.0)
        assert judge_step({"y": copy}, {"y": a}, {}, tol).passed


def test_metrics_match_their_definitions():
    b = np.array([1.0, -2.0, 4.0, 0.5])
    a = b + np.array([0.1, 0.0, -0.2, 0.05])
    m = tensor_metrics(a, b, TOL)
    assert m["max_abs"] == pytest.approx(0.2)
    assert m["max_rel"] == pytest.approx(0.1)  # 0.1/1 and 0.05/0.5
    assert m["nmse"] == pytest.approx((0.01 + 0.04 + 0.0025) / (1 + 4 + 16 + 0.25))
    assert m["cosine"] == pytest.approx(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))


def test_need_atol_is_exactly_the_bound_that_passes():
    rng = np.random.default_rng(1)
    b = rng.standard_normal(50)
    a = b + rng.standard_normal(50) * 1e-3
    m = tensor_metrics(a, b, TOL)
    just = Tolerance("x", atol=m["need_atol"] * (1 + 1e-9), rtol=TOL.rtol, max_nmse=1, reason="")
    short = Tolerance("y", atol=m["need_atol"] * (1 - 1e-6), rtol=TOL.rtol, max_nmse=1, reason="")
    assert tensor_metrics(a, b, just)["bad"] == 0
    assert tensor_metrics(a, b, short)["bad"] > 0


def test_nan_where_oracle_is_finite_is_a_mismatch_even_if_rest_agrees():
    b = np.ones(10, np.float32)
    a = b.copy()
    a[3] = np.nan
    j = judge_step({"y": a}, {"y": b}, {}, PROFILES["fp16-attention"])
    assert not j.passed and "NaN/Inf" in j.message


def test_matching_infinities_agree_and_finite_for_minus_inf_does_not():
    b = np.array([1.0, -np.inf, np.nan])
    assert judge_step({"y": b.copy()}, {"y": b}, {}, TOL).passed
    a = np.array([1.0, -3.4e38, np.nan])
    j = judge_step({"y": a}, {"y": b}, {}, TOL)
    assert not j.passed and "oracle is NaN" in j.message


def test_mask_excludes_unspecified_elements():
    b = np.zeros((2, 3))
    a = b.copy()
    a[1] = 99.0
    mask = np.array([[True] * 3, [False] * 3])
    assert judge_step({"y": a}, {"y": b}, {"y": mask}, TOL).passed
    assert not judge_step({"y": a}, {"y": b}, {}, TOL).passed


def test_shape_mismatch_and_missing_output_are_reported():
    j = judge_step({"y": np.zeros((2, 2))}, {"y": np.zeros((3,)), "z": np.zeros(1)}, {}, TOL)
    assert not j.passed
    assert "shape" in j.message and "'z' missing" in j.message


def test_nmse_bound_alone_can_fail_a_cell():
    b = np.full(1000, 1.0)
    a = b + 5e-5  # inside atol+rtol*|b| = 1.01e-4, but NMSE 2.5e-9 ... within 1e-8
    assert judge_step({"y": a}, {"y": b}, {}, TOL).passed
    strict = Tolerance("s", atol=1.0, rtol=1.0, max_nmse=1e-10, reason="")
    j = judge_step({"y": a}, {"y": b}, {}, strict)
    assert not j.passed and "NMSE" in j.message


def test_multistep_reports_first_bad_step():
    e = [{"y": np.ones(3)}, {"y": np.ones(3)}, {"y": np.ones(3)}]
    a = [{"y": np.ones(3)}, {"y": np.ones(3) * 2}, {"y": np.ones(3)}]
    j = judge_steps(a, e, [{}, {}, {}], TOL)
    assert not j.passed and j.metrics["first_bad_step"] == 1 and j.message.startswith("step 1:")


def test_top1_counts_rows_whose_argmax_agrees():
    b = np.array([[0.0, 1.0, 0.5], [2.0, 0.0, 1.0]])
    a = np.array([[0.0, 1.0, 1.2], [2.0, 0.0, 1.0]])  # row 0 flips its choice
    assert tensor_metrics(a, b, TOL)["top1"] == 0.5
    assert "top1" not in tensor_metrics(a[0], b[0], TOL)  # a single row of 1-D output: no rows to count


def _by_definition(a, b, tol, mask=None):
    """The element rule and the metrics written plainly, one numpy call per quantity."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    d = np.abs(a - b)
    return {"bad": int(np.sum(d > tol.atol + tol.rtol * np.abs(b))), "max_abs": float(d.max()),
            "need_atol": float(max(0.0, np.max(d - tol.rtol * np.abs(b)))),
            "need_rtol": float(max(0.0, np.max((d - tol.atol) / np.maximum(np.abs(b), 1e-30))))}


def test_an_oracle_judged_again_gives_each_actual_its_own_metrics():
    """The oracle side is prepared once and reused (cell overhead): a second actual, another
    mask on the same oracle, or another profile must each get the numbers of a fresh judge."""
    rng = np.random.default_rng(7)
    b = rng.standard_normal((3, 4, 8))
    mask = rng.random(b.shape) < 0.5
    loose = Tolerance("loose", atol=1e-2, rtol=1e-1, max_nmse=1.0, reason="test")
    for noise in (1e-7, 1e-3, 1e-1, 0.0, 3.0):
        a = b + rng.standard_normal(b.shape) * noise
        for tol, m in [(TOL, None), (TOL, mask), (loose, None), (loose, mask)]:
            got = tensor_metrics(a, b, tol, m)
            want = _by_definition(a, b, tol, m)
            assert got["bad"] == want["bad"], (noise, tol.name, m is None)
            for k in ("max_abs", "need_atol", "need_rtol"):
                assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-300), (k, noise, tol.name)
            assert ("top1" in got) == (m is None)


def test_an_oracle_tensor_is_read_only_once_judged():
    """A write into an oracle after judging would leave its prepared numbers stale: it fails."""
    b = np.ones((2, 8))
    tensor_metrics(b + 1e-3, b, TOL)
    with pytest.raises(ValueError, match="read-only"):
        b[0, 0] = 2.0


def test_an_element_exactly_on_the_bound_passes_and_one_ulp_past_fails():
    """|Δ| ≤ atol + rtol·|b| is inclusive, with or without the shortcuts for clearly small Δ."""
    tol = Tolerance("edge", atol=0.25, rtol=0.5, max_nmse=1.0, reason="test")
    b = np.array([1.0, 2.0, -4.0, 0.0])
    bound = tol.atol + tol.rtol * np.abs(b)
    away = np.where(b < 0, -1.0, 1.0)  # Δ away from zero: a − b is then exact (Sterbenz)
    assert tensor_metrics(b + away * bound, b, tol)["bad"] == 0
    assert tensor_metrics(np.nextafter(b + away * bound, away * np.inf), b.copy(), tol)["bad"] == 4
    small = tensor_metrics(b + 0.2, b.copy(), tol)  # every |Δ| under atol: nothing to count, no rtol needed
    assert small["bad"] == 0 and small["need_rtol"] == 0.0 and small["need_atol"] == pytest.approx(0.2)


def _top1_by_definition(a, b):
    rows = b.shape[-1]
    return float(np.mean(np.argmax(a.reshape(-1, rows), 1) == np.argmax(b.reshape(-1, rows), 1)))


@pytest.mark.parametrize("seed", range(6))
def test_top1_is_the_count_of_agreeing_rows_at_every_size_of_error(seed):
    """top1 skips the argmax where no element moved by half the smallest top-two gap of a row:
    errors just under and just over that bound, oracles with a tied row, and flips by a single
    element must all give the plain count."""
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((4, 6, 16))
    if seed % 2:
        b[1, 2, 3] = b[1, 2].max()  # a row tying for first: no bound applies
    two = np.sort(b.reshape(-1, 16), axis=1)[:, -2:]
    half_gap = float(np.min(two[:, 1] - two[:, 0])) / 2
    for scale in (0.0, 1e-9, 0.5 * half_gap, 0.999 * half_gap, 1.001 * half_gap, 2 * half_gap, 10 * half_gap, 1.0):
        a = b + rng.uniform(-scale, scale, b.shape)
        assert tensor_metrics(a, b, TOL)["top1"] == _top1_by_definition(a, b), scale
    if seed % 2:
        return
    # one element pushed just past its row's leader (ties aside): exactly one row changes its choice
    r = int(np.argmin(two[:, 1] - two[:, 0]))
    a = b.copy().reshape(-1, 16)
    row = a[r]
    second = int(np.argsort(row)[-2])
    row[second] = np.nextafter(row.max(), np.inf)
    a = a.reshape(b.shape)
    assert tensor_metrics(a, b, TOL)["top1"] == _top1_by_definition(a, b) == 1 - 1 / 24
    # the leader and the runner-up each moved by just over half their gap, towards each other
    a = b.copy().reshape(-1, 16)
    lead = int(np.argmax(a[r]))
    a[r, lead] -= 0.51 * (two[r, 1] - two[r, 0])
    a[r, second] += 0.51 * (two[r, 1] - two[r, 0])
    a = a.reshape(b.shape)
    assert tensor_metrics(a, b, TOL)["top1"] == _top1_by_definition(a, b) == 1 - 1 / 24


def test_an_exact_copy_of_an_oracle_with_tied_rows_keeps_every_choice():
    """Quantised oracles tie within a row (no margin applies): an exact copy, -0.0 for 0.0
    included, still agrees on every row, and a copy with one tie broken the other way does not."""
    b = np.array([[0.0, 2.0, 2.0, 1.0], [3.0, 3.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    a = b.copy()
    a[2] = -0.0
    assert tensor_metrics(a, b, TOL)["top1"] == _top1_by_definition(a, b) == 1.0
    a[0, 2] = np.nextafter(2.0, 3.0)
    assert tensor_metrics(a, b, TOL)["top1"] == _top1_by_definition(a, b) == 2 / 3


def test_an_output_with_the_oracles_bytes_is_judged_as_the_arithmetic_would_and_a_lossy_cast_is_not():
    """An output whose bytes are the oracle's values in its own dtype (a KV cache, a quantised
    gather) skips the arithmetic: it must get exactly the metrics the arithmetic gives (an oracle
    passed as a list is never kept, so it goes the long way). An output that only equals the
    oracle after a lossy cast (float64 0.1 as float32, 300 wrapped into int8) is no copy."""
    from harness.compare import _oracle

    steps = Tolerance("q", atol=0.0, rtol=0.0, max_nmse=0.0, reason="test", int_atol=1.0)
    b32 = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    q = np.arange(-8, 8, dtype=np.int8).reshape(2, 8)
    for b, act, tol in [(b32.astype(np.float64), b32.copy(), TOL), (q.astype(np.int32), q.copy(), steps),
                        (b32.astype(np.float64), b32.astype(np.float64), TOL)]:
        kept = tensor_metrics(act, b, tol)
        assert _oracle(b, None).bytes_as(act.dtype) == act.tobytes()  # the copy path was open
        assert list(kept.items()) == list(tensor_metrics(act, b.tolist(), tol).items())
        assert kept["max_abs"] == kept["bad"] == 0
    b = np.array([[0.1, 0.2], [0.3, 0.4]])
    lossy = tensor_metrics(b.astype(np.float32), b, TOL)
    assert lossy["max_abs"] == np.abs(b.astype(np.float32) - b).max() > 0
    wrapped = tensor_metrics(np.array([44, 1], np.int8), np.array([300, 1], np.int16), steps)
    assert (wrapped["max_abs"], wrapped["bad"]) == (256, 1)


def test_an_empty_output_with_rows_is_judged_without_a_top1():
    """A (0, n) output has no rows to count: it passes against an empty oracle (it divided by
    zero before)."""
    e = np.zeros((0, 5), np.float32)
    m = tensor_metrics(e.copy(), e, TOL)
    assert m["bad"] == 0 and "top1" not in m
    assert judge_step({"y": e.copy()}, {"y": e}, {}, TOL).passed


def _signaling_nan(dtype) -> np.ndarray:
    """[sNaN, 1.0] in `dtype`: a NaN whose quiet bit is clear, as a kernel may leave it; casting it
    or multiplying with it raises the invalid flag, where a quiet NaN does not."""
    bits = {np.float16: (np.uint16, 0x7C01, 0x3C00), np.float32: (np.uint32, 0x7F800001, 0x3F800000),
            np.float64: (np.uint64, 0x7FF0000000000001, 0x3FF0000000000000)}[dtype]
    return np.array(bits[1:], dtype=bits[0]).view(dtype)


def test_no_output_makes_numpy_warn_and_nonfinite_ones_are_judged():
    """The judge says what NaN/Inf it found; numpy must say nothing, whatever a backend returns:
    signaling NaNs (which raise `invalid` in a cast or a dot product, caught on a real run),
    squares that overflow, the largest finite values. Under np.errstate(raise) and warnings as
    errors, every one is judged and only the matching Inf agrees."""
    import warnings

    big = np.array([1e150, -1e150, 3e-300, 0.0, 1.0])
    cases = [(big * 0.999, big), (np.zeros(5), big), (big, np.zeros(5)), (np.full(5, 1e-30), np.zeros(5))]
    nonfinite = [(np.array([np.nan, 1.0]), np.array([1.0, 1.0])), (np.array([np.inf, 1.0]), np.array([np.inf, 1.0])),
                 (np.array([1e200, 1.0]), np.array([-1e200, 1.0])), (np.array([1.0, 2.0]), np.array([np.nan, 2.0])),
                 (np.array([9e153, 1.0]), np.array([-9e153, 1.0])),  # finite squares, Σ(a − b)² overflows
                 (np.array([np.nan, np.inf, 1.0], np.float32), np.array([1.0, 1.0, 1.0]))]
    nonfinite += [(_signaling_nan(t), np.array([1.0, 1.0])) for t in (np.float16, np.float32, np.float64)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for errs in ({}, {"over": "raise", "invalid": "raise", "divide": "raise"}):
            with np.errstate(**errs):
                for a, b in cases:
                    assert tensor_metrics(a, b, TOL)["nonfinite_mismatch"] == 0
                passed = [judge_step({"y": a}, {"y": b}, {}, TOL).passed for a, b in nonfinite]
                assert passed == [False, True, False, False, False, False, False, False, False]
                assert all(tensor_metrics(a, b, TOL)["backend_nonfinite"] == 1 for a, b in nonfinite[-3:])


def test_worst_and_the_worst_output_are_min_max_by_their_definition():
    """worst() and aggregate() run as plain loops (cheaper cold than comprehensions): each summary
    metric must still be min() (cosine, top-1) or max() (the rest) over the dicts that carry it,
    NaN and ties included, and the worst output the first with the most bad elements, then NMSE."""
    from harness.compare import METRICS, aggregate, worst

    rng = np.random.default_rng(3)
    choices = [0.0, 1.0, 0.5, float("nan"), -0.0, 2.0]
    for _ in range(300):
        dicts = []
        for _ in range(int(rng.integers(1, 5))):
            m = {k: choices[int(rng.integers(len(choices)))] for k in METRICS if rng.random() < 0.7}
            m["bad"] = int(rng.integers(0, 3))
            dicts.append(m)
        want = {}
        for k, higher_is_better in METRICS.items():
            vals = [m[k] for m in dicts if k in m]
            if vals:
                want[k] = min(vals) if higher_is_better else max(vals)
        got = worst(dicts)
        assert list(got) == list(want)
        assert all(got[k] is want[k] for k in want)  # the very object min()/max() pick, NaN included
        per = {f"o{i}": m for i, m in enumerate(dicts)}
        assert aggregate(per)["worst_output"] == max(per, key=lambda n: (per[n].get("bad", 0), per[n].get("nmse", 0.0)))
