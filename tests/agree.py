"""Test helper: encrypted scores against their plaintext twin."""
from __future__ import annotations

import numpy as np


def assert_agree(enc: np.ndarray, plain: np.ndarray, tol: float) -> None:
    """max |enc − plain| ≤ tol, and predictions equal except where plain's top-2 gap is ≤ 2·tol."""
    assert enc.shape == plain.shape
    assert np.max(np.abs(enc - plain)) <= tol
    differ = np.flatnonzero(enc.argmax(1) != plain.argmax(1))
    top2 = np.sort(plain, axis=1)[:, -2:]
    assert np.all(top2[differ, 1] - top2[differ, 0] <= 2 * tol), "a prediction differs beyond CKKS error"
