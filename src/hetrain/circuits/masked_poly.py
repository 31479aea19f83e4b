"""Polynomial evaluation with a plaintext mask folded into the coefficients (no extra level).

``eval_poly_masked(engine, ct, coeffs, mask)`` returns mask ⊙ p(ct): every term's coefficient
multiplication becomes a plaintext multiplication by coef·mask, which costs the level the scalar
multiplication cost anyway. Where the mask is 0 every term is 0, whatever garbage ct holds there.
Depth: ``poly_depth(degree)``, as for ``eval_poly``. Under CKKS a masked slot is not exactly 0:
a term (coef·0·x)·x^(k-1) leaves the rescale noise (~1e-7) times x^(k-1), so garbage g leaks as
≈1e-7·g^(deg-1); keep the garbage of the size of the valid inputs (a partial sum is).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .poly import _trim, poly_depth


def eval_poly_masked(engine, ct, coeffs: Sequence[float], mask):
    """Σ_k coeffs[k]·mask·ct^k (mask: a PlainVector of 0/1 or any weights)."""
    from hetrain.ckks import DepthExhausted, PlainVector

    c = _trim(coeffs)
    deg = len(c) - 1
    if deg == 0:
        raise ValueError("a constant polynomial needs no ciphertext")
    if ct.level < poly_depth(deg):
        raise DepthExhausted(f"a degree-{deg} polynomial needs {poly_depth(deg)} levels, ciphertext has {ct.level}")
    m = mask.values if isinstance(mask, PlainVector) else np.asarray(mask, dtype=np.float64)
    powers = {1: ct}

    def pow2(k: int):
        if k not in powers:
            powers[k] = engine.square(pow2(k // 2))
        return powers[k]

    def scaled_power(coef: float, k: int):
        # coef·mask·x^k at depth ceil(log2(k+1)); the plaintext sits in the lowest factor
        if k == 1:
            return engine.mul_plain(ct, PlainVector(coef * m))
        hi = 1 << (k.bit_length() - 1)
        if hi == k:
            return engine.mul(scaled_power(coef, k // 2), pow2(k // 2))
        return engine.mul(scaled_power(coef, k - hi), pow2(hi))

    terms = [scaled_power(ck, k) for k, ck in enumerate(c) if k >= 1 and ck != 0.0]
    out = engine.add_many(terms)
    if c[0] != 0.0:
        out = engine.add(out, PlainVector(c[0] * m))
    return out


def eval_poly_masked_plain(x: np.ndarray, coeffs: Sequence[float], mask: np.ndarray) -> np.ndarray:
    """NumPy twin of ``eval_poly_masked``."""
    return np.asarray(mask) * np.polynomial.polynomial.polyval(x, np.asarray(_trim(coeffs)))
