"""Polynomial evaluation and sigmoid approximations.

Tolerance under SEAL: inputs in [-8, 8] and coefficients of these fits keep every intermediate
power below 8^4; errors measured at scale 2^40 are ~1e-6 (degree 3) to ~1e-4 (degree 5, where
x^5 reaches 3e4 and the relative precision ~1e-9 is what remains), so 1e-3 catches any wrong
coefficient or depth bookkeeping (those give O(0.1) errors) with margin.
"""
from __future__ import annotations

import numpy as np
import pytest

from hetrain import ckks
from hetrain.circuits.approx import SIGMOID3_PUBLISHED, check_interval, fit_sigmoid, get_sigmoid, sigmoid
from hetrain.circuits.poly import eval_poly, eval_poly_plain, poly_depth
from hetrain.errors import DataError


@pytest.fixture(scope="module", params=["seal", "sim"])
def eng(request):
    return ckks.create_engine(request.param, "n16384")


@pytest.mark.parametrize("coeffs", [SIGMOID3_PUBLISHED.coeffs, fit_sigmoid(5, 12).coeffs, (1.0, -2.0, 0.5), (0, 0, 0, 0, 1e-3)])
def test_eval_poly_matches_numpy_at_minimal_depth(eng, rng, coeffs):
    x = rng.uniform(-8, 8, eng.slots)
    ct = eng.encrypt(x)
    out = eval_poly(eng, ct, coeffs)
    deg = len(np.trim_zeros(np.asarray(coeffs, dtype=float), "b")) - 1
    assert eng.max_level - out.level == poly_depth(deg) == int(np.ceil(np.log2(deg + 1)))
    np.testing.assert_allclose(eng.decrypt(out), eval_poly_plain(x, coeffs), atol=1e-3 if eng.secure else 1e-9)


def test_masked_evaluation_costs_no_extra_level(eng, rng):
    x = rng.uniform(-8, 8, eng.slots)
    mask = (np.arange(eng.slots) % 3 == 0).astype(float)
    out = eval_poly(eng, eng.encrypt(x), SIGMOID3_PUBLISHED.coeffs, mask=ckks.PlainVector(mask))
    assert eng.max_level - out.level == 2
    np.testing.assert_allclose(eng.decrypt(out), mask * SIGMOID3_PUBLISHED(x), atol=1e-3 if eng.secure else 1e-12)


def test_eval_poly_refuses_when_depth_is_missing(eng, rng):
    ct = eng.encrypt(rng.uniform(-1, 1, 8), level=1)
    with pytest.raises(ckks.DepthExhausted, match="needs 2 levels"):
        eval_poly(eng, ct, SIGMOID3_PUBLISHED.coeffs)
    with pytest.raises(ValueError):
        eval_poly(eng, ct, [3.0])


def test_sigmoid_fits_and_specs():
    assert get_sigmoid("published") is SIGMOID3_PUBLISHED
    s = get_sigmoid("deg5:12")
    assert s.degree == 5 and s.interval == (-12.0, 12.0) and s.depth == 3
    assert s(np.zeros(1))[0] == 0.5  # odd fit around 1/2
    assert fit_sigmoid(3, 8).max_error(sigmoid) < SIGMOID3_PUBLISHED.max_error(sigmoid)  # least squares on a fine grid
    assert fit_sigmoid(7, 8).max_error(sigmoid) < fit_sigmoid(3, 8).max_error(sigmoid)
    with pytest.raises(ValueError, match="unknown sigmoid"):
        get_sigmoid("tanh")


def test_check_interval_rejects_values_outside_and_nan():
    check_interval(np.array([-7.9, 7.9]), SIGMOID3_PUBLISHED)
    with pytest.raises(DataError, match="outside"):
        check_interval(np.array([0.0, 8.5]), SIGMOID3_PUBLISHED)
    with pytest.raises(DataError, match="NaN"):
        check_interval(np.array([np.nan]), SIGMOID3_PUBLISHED)


@pytest.mark.parametrize("backend", ["sim", "seal"])
@pytest.mark.parametrize("spec", ["deg15:16", "deg15:48", "deg7:16", "deg3:8", "deg1:4"])
def test_chebyshev_evaluation_is_the_same_polynomial_at_minimal_depth_and_precise(backend, spec):
    """eval_cheb(unit_cheb) = eval_poly(unit_coeffs) at the same depth; under SEAL degree 15 keeps
    ~1e-7 where the power basis (coefficients up to 5e3) loses two digits."""
    from hetrain import ckks
    from hetrain.circuits.approx import get_sigmoid
    from hetrain.circuits.poly import eval_cheb, poly_depth

    eng = ckks.create_engine(backend, "n16384")
    a = get_sigmoid(spec)
    x = np.random.default_rng(1).uniform(-1, 1, eng.slots)
    mask = (np.arange(eng.slots) % 3 == 0).astype(float)
    ct = eng.encrypt(x, level=eng.max_level - 1)
    ref = np.polynomial.polynomial.polyval(x, a.unit_coeffs())
    out = eval_cheb(eng, ct, a.unit_cheb())
    masked = eval_cheb(eng, ct, a.unit_cheb(), mask=mask)
    assert ct.level - out.level == poly_depth(a.degree) == ct.level - masked.level
    tol = 1e-6 if eng.secure else 1e-11
    assert np.max(np.abs(eng.decrypt(out) - ref)) < tol
    assert np.max(np.abs(eng.decrypt(masked) - mask * ref)) < tol
    if eng.secure and a.degree == 15:
        power = eval_poly(eng, ct, a.unit_coeffs())
        assert np.max(np.abs(eng.decrypt(power) - ref)) > 10 * np.max(np.abs(eng.decrypt(out) - ref))
