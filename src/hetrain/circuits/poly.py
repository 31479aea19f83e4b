"""Polynomial evaluation on ciphertexts with minimal depth, and its NumPy twin.

``eval_poly(engine, ct, coeffs)`` computes Σ c_k x^k with depth ceil(log2(degree + 1)): powers
x^(2^j) come from repeated squaring, and each coefficient is folded into the lower factor of a
product (c·x^k = (c·x^(k-2^j))·x^(2^j)), so the scalar multiplication costs no extra level. With a plaintext ``mask`` the coefficients
become coef·mask plaintexts, so mask ⊙ p(x) costs no level more than p(x) (see masked_poly.py).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def poly_depth(degree: int) -> int:
    """Levels consumed by ``eval_poly`` for a polynomial of this degree (0 for a constant)."""
    return 0 if degree <= 0 else math.ceil(math.log2(degree + 1))


def _trim(coeffs: Sequence[float]) -> list[float]:
    c = [float(x) for x in coeffs]
    while len(c) > 1 and c[-1] == 0.0:
        c.pop()
    return c


def _checked(ct, coeffs: Sequence[float], mask) -> tuple[list[float], np.ndarray | None]:
    """(trimmed coefficients, mask values or None) for eval_poly / eval_cheb; ValueError for a
    constant, DepthExhausted when the ciphertext has fewer levels than the degree's depth."""
    from hetrain.ckks import DepthExhausted, PlainVector

    m = None if mask is None else (mask.values if isinstance(mask, PlainVector) else np.asarray(mask, dtype=np.float64))
    c = _trim(coeffs)
    deg = len(c) - 1
    if deg == 0:
        raise ValueError("a constant polynomial needs no ciphertext")
    if ct.level < poly_depth(deg):
        raise DepthExhausted(f"a degree-{deg} polynomial needs {poly_depth(deg)} levels, ciphertext has {ct.level}")
    return c, m


def eval_poly(engine, ct, coeffs: Sequence[float], mask=None):
    """Σ coeffs[k]·ct^k on a ciphertext (coeffs in increasing degree). Depth: ``poly_depth(deg)``.

    Evaluates in the monomial (power) basis 1, x, x², ...: each term c_k·x^k is a product of
    powers x^(2^j) and carries its own CKKS error (ε per rescale, relative to the values), amplified
    by |c_k| and by |x|^k. On an interval [-R, R] with R > 1 and large alternating coefficients
    (high-degree fits), the terms nearly cancel and the absolute error grows like Σ|c_k|·R^k·ε
    rather than the value's size: keep degrees low or the inputs scaled to |x| ≲ 1 there, or use
    ``eval_cheb`` (Chebyshev basis, bounded terms on [-1, 1]) for such fits. NumPy twin:
    ``eval_poly_plain``.

    ``mask`` (array or PlainVector, optional): return mask ⊙ p(ct) at the same depth.
    Raises ValueError for a constant polynomial, DepthExhausted when ``ct.level`` < the depth.
    """
    from hetrain.ckks import PlainVector

    c, m = _checked(ct, coeffs, mask)
    powers = {1: ct}  # x^(2^j)

    def pow2(k: int):
        if k not in powers:
            powers[k] = engine.square(pow2(k // 2))
        return powers[k]

    def scaled_power(coef: float, k: int):
        # coef·x^k at depth ceil(log2(k+1)); the coefficient (and mask) sits in the lowest factor
        if k == 1:
            return engine.mul_scalar(ct, coef) if m is None else engine.mul_plain(ct, PlainVector(coef * m))
        hi = 1 << (k.bit_length() - 1)  # largest power of two <= k
        if hi == k:
            return engine.mul(scaled_power(coef, k // 2), pow2(k // 2))
        return engine.mul(scaled_power(coef, k - hi), pow2(hi))

    terms = [scaled_power(ck, k) for k, ck in enumerate(c) if k >= 1 and ck != 0.0]
    out = engine.add_many(terms)
    if c[0] != 0.0:
        out = engine.add(out, c[0] if m is None else PlainVector(c[0] * m))
    return out


def eval_cheb(engine, ct, cheb: Sequence[float], mask=None):
    """Σ cheb[k]·T_k(ct) in the Chebyshev basis, for inputs in [-1, 1]. Depth: ``poly_depth(deg)``.

    The same polynomial as ``eval_poly`` with ``np.polynomial.chebyshev.cheb2poly(cheb)``, but far
    more precise for high degrees: Chebyshev coefficients of a smooth function are O(1) and every
    |T_k| ≤ 1 on [-1, 1], where power-basis coefficients alternate in sign and grow like 2^deg
    (degree 15 on [-16, 16]: max |coefficient| 1833, CKKS error 1e-5 instead of ~1e-7 here).

    T_j comes from T_{a+b} = 2·T_a·T_b − T_{a−b} with a the largest power of two below j (depth
    ceil(log2 j)); a coefficient is folded into the lowest factor, as in ``eval_poly``:
    c·T_j = (2c·T_b)·T_a − c·T_{a−b}, so c·T_j costs the depth of x^j with its coefficient.
    ``mask`` (array or PlainVector): mask ⊙ p(ct) at the same depth (the mask rides on the
    coefficients). Source of the recurrence: any numerical analysis text (e.g. Mason & Handscomb,
    Chebyshev Polynomials, 2003); its use in CKKS: Lee et al., "High-precision bootstrapping of
    RNS-CKKS", 2020.
    """
    from hetrain.ckks import PlainVector

    c, m = _checked(ct, cheb, mask)
    T = {1: ct}

    def split(j: int) -> tuple[int, int]:
        a = 1 << ((j - 1).bit_length() - 1)  # the largest power of two below j
        return a, j - a

    def cheb_t(j: int):
        if j not in T:
            a, b = split(j)
            prod = engine.mul(cheb_t(a), cheb_t(b))
            twice = engine.add(prod, prod)
            T[j] = engine.sub(twice, 1.0) if a == b else engine.sub(twice, cheb_t(a - b))
        return T[j]

    scaled = {}

    def constant(coef: float):
        return coef if m is None else PlainVector(coef * m)

    def scaled_t(coef: float, j: int):
        """coef·T_j with coef in the lowest factor."""
        key = (coef, j)
        if key not in scaled:
            if j == 1:
                scaled[key] = engine.mul_scalar(ct, coef) if m is None else engine.mul_plain(ct, PlainVector(coef * m))
            else:
                a, b = split(j)
                prod = engine.mul(scaled_t(2.0 * coef, b), cheb_t(a))
                scaled[key] = engine.sub(prod, constant(coef)) if a == b else engine.sub(prod, scaled_t(coef, a - b))
        return scaled[key]

    terms = [scaled_t(ck, k) for k, ck in enumerate(c) if k >= 1 and ck != 0.0]
    out = engine.add_many(terms)
    if c[0] != 0.0:
        out = engine.add(out, constant(c[0]))
    return out


def eval_poly_plain(x: np.ndarray, coeffs: Sequence[float]) -> np.ndarray:
    """NumPy twin of ``eval_poly`` (same polynomial, float64)."""
    return np.polynomial.polynomial.polyval(x, np.asarray(_trim(coeffs)))
