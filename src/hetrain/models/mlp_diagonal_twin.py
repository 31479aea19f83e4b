"""Plaintext twin of the "mlp-diagonal" trainer: the same arithmetic in NumPy, matrix form.

Both run in the *scaled* parametrisation that lets the encrypted trainer fold every learning rate
and the output slope into the data (so they cost no level):

    g1 = η1/n, g2 = η2/n, output approximation σ_o(z) = o0 + c·z (degree 1)
    x̂ = √g1·[x, 1]                      V1 = W1/√g1         z1 = V1 x̂ = W1 [x, 1]
    â = √(c·g2)·[σ_h(z1), hb]           V2 = √(c/g2)·W2     V2 â = c·W2 [σ_h(z1), hb]
    δ2 = o0 + V2 â − y  (= σ_o(z2) − y, the BCE error)
    δ1 = (V2ᵀ δ2)[:H] ⊙ √(g2/c)·σ_h'(z1)
    V2 ← V2 − Σ_s δ2 âᵀ   (⇔ W2 ← W2 − g2 Σ δ2 [σ_h, hb]ᵀ),   V1 ← V1 − Σ_s δ1 x̂ᵀ   (⇔ W1 ← W1 − g1 Σ δ1 [x,1]ᵀ)

Iteration 1 starts from W2 = 0, so δ1 = 0 there: only W2 moves (the encrypted trainer skips the
hidden-layer update, which is why it saves levels).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hetrain.circuits.approx import PolyApprox


@dataclasses.dataclass(frozen=True)
class Scales:
    """The public scale factors of the scaled parametrisation (module docstring), all unitless floats:
    x = √g1 (on the inputs), a = √(c·g2) (on the hidden activations), w2 = √(c/g2) (V2 = w2·W2),
    dsig = √(g2/c) (folded into σ_h'), and the output approximation's o0 and slope c."""

    x: float        # √g1
    a: float        # √(c·g2)
    w2: float       # √(c/g2)   (V2 = w2·W2)
    dsig: float     # √(g2/c)   (folded into σ_h')
    o0: float
    c: float

    @classmethod
    def of(cls, lr_hidden: float, lr_output: float, n: int, out: PolyApprox) -> "Scales":
        """The scales for learning rates η1 = ``lr_hidden``, η2 = ``lr_output`` on n rows (g = η/n) and the
        degree-1 output approximation ``out`` (o0 = its constant, c = its slope; c and η2 are expected positive:
        a negative c·η2 gives NaN scales)."""
        o0, c = float(out.coeffs[0]), float(out.coeffs[1])
        g1, g2 = lr_hidden / n, lr_output / n
        return cls(np.sqrt(g1), np.sqrt(c * g2), np.sqrt(c / g2), np.sqrt(g2 / c), o0, c)


def init_hidden(hidden: int, n_in: int, gain: float) -> np.ndarray:
    """Data-independent W1 (hidden × (n_in + 1), last column = bias 0): signed Walsh–Hadamard rows.

    Distinct rows break the symmetry between hidden units; a fixed pattern makes runs reproducible.
    """
    size = 1
    while size < n_in:
        size *= 2
    h = np.array([[1.0]])
    while h.shape[0] < size:
        h = np.block([[h, h], [h, -h]])
    W = np.zeros((hidden, n_in + 1))
    for i in range(hidden):
        sign = 1.0 if (i // size) % 2 == 0 else -1.0
        W[i, :n_in] = sign * gain * h[i % size, :n_in] / np.sqrt(n_in)
    return W


def twin_train(X: np.ndarray, Y: np.ndarray, W1: np.ndarray, iterations: int, hidden_sig: PolyApprox,
               out_sig: PolyApprox, lr_hidden: float, lr_output: float, hidden_bias: float,
               history: list | None = None) -> dict[str, np.ndarray]:
    """Full-batch gradient descent; returns W1 (H×(d+1)) and W2 (c×(H+1)) in the usual scale."""
    n, d = X.shape
    H = W1.shape[0]
    s = Scales.of(lr_hidden, lr_output, n, out_sig)
    xh = s.x * np.hstack([X, np.ones((n, 1))])
    V1 = W1 / s.x
    V2 = np.zeros((Y.shape[1], H + 1))
    for it in range(iterations):
        # iteration 1 has V2 = 0, hence δ1 = 0: only V2 moves
        V1, V2, z1 = scaled_step(V1, V2, xh, Y, s, hidden_sig, hidden_bias, hidden_update=it > 0)
        if history is not None:
            history.append({"W1": V1 * s.x, "W2": V2 / s.w2, "max_abs_z1": float(np.abs(z1).max())})
    return {"W1": V1 * s.x, "W2": V2 / s.w2}


def scaled_step(V1: np.ndarray, V2: np.ndarray, xh: np.ndarray, Y: np.ndarray, s: Scales, hidden_sig: PolyApprox,
                hidden_bias: float, hidden_update: bool = True):
    """One full-batch step in the scaled parametrisation (module docstring): (V1', V2', z1)."""
    n, H = xh.shape[0], V1.shape[0]
    z1 = xh @ V1.T
    a = s.a * np.hstack([hidden_sig(z1), np.full((n, 1), hidden_bias)])
    d2 = s.o0 + a @ V2.T - Y
    if hidden_update:
        dcoef = np.array(hidden_sig.derivative().coeffs, dtype=np.float64)
        d1 = (d2 @ V2[:, :H]) * (s.dsig * np.polynomial.polynomial.polyval(z1, dcoef))
        V1 = V1 - d1.T @ xh
    return V1, V2 - d2.T @ a, z1


def predict_scores(W1: np.ndarray, W2: np.ndarray, X: np.ndarray, hidden_sig: PolyApprox,
                   out_sig: PolyApprox, hidden_bias: float) -> np.ndarray:
    """σ_o(W2·[σ_h(W1·[x,1]), hb]) per class (the same approximations as training)."""
    n = X.shape[0]
    z1 = np.hstack([X, np.ones((n, 1))]) @ W1.T
    a = np.hstack([hidden_sig(z1), np.full((n, 1), hidden_bias)])
    return out_sig(a @ W2.T)
