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

from .poly import _trim, eval_poly


def eval_poly_masked(engine, ct, coeffs: Sequence[float], mask):
    """Σ_k coeffs[k]·mask·ct^k (mask: a PlainVector of 0/1 or any weights)."""
    return eval_poly(engine, ct, coeffs, mask=mask)


def eval_poly_masked_plain(x: np.ndarray, coeffs: Sequence[float], mask: np.ndarray) -> np.ndarray:
    """NumPy twin of ``eval_poly_masked``.
    mask · p(x) element-wise in float64 (x and mask broadcast together, e.g. both ``slots`` long).
    """
    return np.asarray(mask) * np.polynomial.polynomial.polyval(x, np.asarray(_trim(coeffs)))
