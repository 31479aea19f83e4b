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


def eval_poly(engine, ct, coeffs: Sequence[float], mask=None):
    """Σ coeffs[k]·ct^k on a ciphertext (coeffs in increasing degree). Depth: ``poly_depth(deg)``.

    ``mask`` (array or PlainVector, optional): return mask ⊙ p(ct) at the same depth.
    """
    from hetrain.ckks import PlainVector

    m = None if mask is None else (mask.values if isinstance(mask, PlainVector) else np.asarray(mask, dtype=np.float64))
    c = _trim(coeffs)
    deg = len(c) - 1
    if deg == 0:
        raise ValueError("a constant polynomial needs no ciphertext")
    if ct.level < poly_depth(deg):
        from hetrain.ckks import DepthExhausted
        raise DepthExhausted(f"a degree-{deg} polynomial needs {poly_depth(deg)} levels, ciphertext has {ct.level}")
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


def eval_poly_plain(x: np.ndarray, coeffs: Sequence[float]) -> np.ndarray:
    """NumPy twin of ``eval_poly`` (same polynomial, float64)."""
    return np.polynomial.polynomial.polyval(x, np.asarray(_trim(coeffs)))
