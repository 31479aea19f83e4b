"""Polynomial approximations of activation functions on a bounded interval.

Outside its interval a polynomial diverges quickly, and under encryption nobody can see it
happen: the client checks on its plaintext twin that every input stays inside (``check_interval``),
and the interval is part of every approximation.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from hetrain.errors import DataError

from .poly import eval_poly, eval_poly_plain, poly_depth


@dataclasses.dataclass(frozen=True)
class PolyApprox:
    """A polynomial (coefficients in increasing degree) approximating ``name`` on ``interval``."""

    name: str
    coeffs: tuple[float, ...]
    interval: tuple[float, float]

    @property
    def degree(self) -> int:
        """Polynomial degree: ``len(coeffs) - 1``."""
        return len(self.coeffs) - 1

    @property
    def depth(self) -> int:
        """Levels its encrypted evaluation consumes: ``poly.poly_depth(degree)`` = ceil(log2(degree + 1))."""
        return poly_depth(self.degree)

    @property
    def bound(self) -> float:
        """max |x| over the interval: the unit variable is t = x / bound, in [-1, 1]."""
        return float(max(abs(v) for v in self.interval))

    def unit_coeffs(self) -> tuple[float, ...]:
        """Coefficients of t ↦ p(bound·t) (t = x / bound in [-1, 1]).

        Evaluating on t keeps every coefficient of order one: in x, the degree-k coefficient of a
        wide interval is ~bound^-k (1e-23 for degree 15 on [-32, 32]), below what a CKKS scale of
        2^40 can encode. Trainers fold 1/bound into their data, so t costs nothing.
        """
        b = self.bound
        return tuple(float(c * b**k) for k, c in enumerate(self.coeffs))

    def unit_cheb(self) -> tuple[float, ...]:
        """The same polynomial of t = x / bound in the Chebyshev basis (circuits.poly.eval_cheb):
        O(1) coefficients, so a high degree keeps CKKS precision (degree 15: 1e-7, not 1e-5)."""
        return tuple(float(v) for v in np.polynomial.chebyshev.poly2cheb(self.unit_coeffs()))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return eval_poly_plain(x, self.coeffs)

    def encrypted(self, engine, ct):
        """p(ct) on a ciphertext in the monomial basis (``poly.eval_poly``): ``depth`` levels consumed, the result
        at ``ct.level - depth``. Raises DepthExhausted when ``ct`` has fewer levels, ValueError for a constant.
        """
        return eval_poly(engine, ct, self.coeffs)

    def derivative(self) -> "PolyApprox":
        """p' as a PolyApprox on the same interval (coefficients from numpy.polynomial.polynomial.polyder)."""
        d = np.polynomial.polynomial.polyder(np.asarray(self.coeffs))
        return PolyApprox(f"d/dx {self.name}", tuple(float(x) for x in d), self.interval)

    def max_error(self, fn, n: int = 2001) -> float:
        """max |p(x) - fn(x)| over ``n`` evenly spaced points of the interval (``fn``: the NumPy function
        approximated)."""
        x = np.linspace(*self.interval, n)
        return float(np.max(np.abs(self(x) - fn(x))))


def sigmoid(x):
    """The logistic function 1 / (1 + e^-x), element-wise in float64 (same shape as ``x``): the exact twin."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


# The published degree-3 fit on [-8, 8] used with the quadratic gradient (Chiang, arXiv:2201.10838).
SIGMOID3_PUBLISHED = PolyApprox("sigmoid", (0.5, 0.10679534503216294, 0.0, -0.00038503259805075), (-8.0, 8.0))


MAX_DEGREE = 31


@functools.lru_cache(maxsize=256)  # PolyApprox is immutable; planners build the same fits many times
def fit_sigmoid(degree: int, bound: float, n: int = 4001) -> PolyApprox:
    """Least-squares fit of the sigmoid on [-bound, bound] (odd part only: σ(x) - 1/2 is odd).

    The fit is solved in the unit variable t = x / bound with a Chebyshev basis (well conditioned
    up to high degree; the least-squares solution does not depend on the basis), then converted
    to the power basis in x. Degree 1..31; depth ceil(log2(degree + 1)) (circuits/poly.py).
    Raises ValueError for a degree outside 1..MAX_DEGREE or a bound that is not a positive finite number.
    """
    if not (1 <= degree <= MAX_DEGREE) or not (bound > 0 and np.isfinite(bound)):
        raise ValueError(f"degree must be in 1..{MAX_DEGREE} and bound a positive number")
    t = np.linspace(-1.0, 1.0, n)
    odd = list(range(1, degree + 1, 2))
    cheb = np.polynomial.chebyshev
    A = np.stack([cheb.chebval(t, np.eye(k + 1)[k]) for k in odd], axis=1)
    sol, *_ = np.linalg.lstsq(A, sigmoid(bound * t) - 0.5, rcond=None)
    c = np.zeros(degree + 1)
    c[odd] = sol
    unit = cheb.cheb2poly(c)  # power basis in t
    coeffs = [0.5] + [0.0] * degree
    for k in odd:
        coeffs[k] = float(unit[k] / bound**k)
    return PolyApprox("sigmoid", tuple(coeffs), (-float(bound), float(bound)))


def get_sigmoid(spec: str) -> PolyApprox:
    """'published' (degree 3 on [-8, 8]) or 'deg<D>:<B>' such as 'deg5:12' (least squares on [-B, B]).
    Raises ValueError for any other spec.
    """
    if spec in ("published", "deg3:8-published"):
        return SIGMOID3_PUBLISHED
    try:
        d, b = spec.removeprefix("deg").split(":")
        return fit_sigmoid(int(d), float(b))
    except (ValueError, AttributeError):
        raise ValueError(f"unknown sigmoid approximation {spec!r}: use 'published' or 'deg<D>:<B>' (e.g. deg3:8)") from None


class IntervalError(DataError):
    """Plaintext values left a polynomial's interval: the encrypted run would compute garbage there.

    ``span`` (min, max) and ``interval`` (lo, hi) are plain floats. Callers that know the job's options
    append the options that would fit (hetrain.models.advice.interval_advice)."""

    def __init__(self, message: str, span: tuple[float, float] | None = None,
                 interval: tuple[float, float] | None = None) -> None:
        super().__init__(message)
        self.span, self.interval = span, interval


def check_interval(values: np.ndarray, approx: PolyApprox, what: str = "inputs") -> None:
    """Raise DataError if plaintext ``values`` are not finite, IntervalError if they leave the
    approximation's interval."""
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise DataError(f"{what} contain NaN or infinite values")
    lo, hi = approx.interval
    if v.size and (v.min() < lo or v.max() > hi):
        span = (float(v.min()), float(v.max()))
        raise IntervalError(f"{what} span [{span[0]:.3g}, {span[1]:.3g}], outside the {approx.name} approximation's "
                            f"interval [{lo:g}, {hi:g}]: the polynomial would return garbage there. What moves the "
                            f"span depends on the trainer (the sigmoid's interval, the learning rate, the number of "
                            f"iterations; for logistic regression NOT the input scale).",
                            span=span, interval=(float(lo), float(hi)))
