"""Plaintext twin of the encrypted MLP trainer (``mlp-dvr``): the same arithmetic in NumPy.

Network: input -> h1 -> [h2 ...] -> c outputs, sigmoid (or its polynomial) everywhere, one-vs-rest
binary cross-entropy on every output, full-batch or mini-batch gradient descent (``batch_size``:
iteration t uses batch t mod B of consecutive rows), optional Nesterov momentum.
The encrypted trainer computes exactly these formulas, in this order (see models/mlp_dvr.py):

    A_l = Z_{l-1} W_lᵀ + b_l,   Z_l = σ_l(A_l),   Z_0 = X
    E   = (lr / n_b) · (σ_K(A_K) − Y)            BCE output error, step size folded in (n_b: rows of the batch)
    δ_K = E,   δ_l = (δ_{l+1} W_{l+1}) ⊙ σ_l'(A_l)
    G_l = δ_lᵀ Z_{l-1},   g_l = Σ_samples δ_l     (already scaled by lr / n)
    W ← V − G,   V ← (1 + μ_t) W − μ_t W_old     (gradient taken at the look-ahead V)

μ_t is Nesterov's schedule (α_0 = 1, α_{t+1} = (1 + √(1 + 4α_t²)) / 2, μ_t = (α_t − 1) / α_{t+1},
so μ_0 = 0); with momentum "none", V is W.

``loss`` other than "bce" exists only for the loss study (bench/loss_study.py): the squared
likelihood (maximise Σ L², L = |p − 1 + y| the likelihood of the label) and squared error both
multiply the output error by σ'(A_K), which the encrypted trainer does not implement.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from hetrain.circuits.approx import PolyApprox, check_interval, sigmoid

LOSSES = ("bce", "sle", "mse")


class ExactSigmoid:
    """The exact logistic function with the PolyApprox calling interface (for plaintext studies)."""

    name = "exact sigmoid"
    interval = (-math.inf, math.inf)

    def __call__(self, x):
        return sigmoid(x)

    def derivative(self):
        """σ'(x) = σ(x)·(1 − σ(x)) as a function of an array x (elementwise), as PolyApprox.derivative gives."""
        return lambda x: sigmoid(x) * (1.0 - sigmoid(x))


def layer_sizes(n_features: int, hidden: Sequence[int], n_classes: int) -> list[int]:
    """The network's widths [d, h1, ..., c] (K + 1 ints for K weight layers: W_l is sizes[l] × sizes[l-1])."""
    return [int(n_features), *[int(h) for h in hidden], int(n_classes)]


def init_weights(sizes: Sequence[int], seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Deterministic Glorot-uniform weights W1..WK (out x in) and zero biases b1..bK."""
    rng = np.random.default_rng(seed)
    w = {}
    for l in range(1, len(sizes)):
        fan_in, fan_out = sizes[l - 1], sizes[l]
        lim = scale * math.sqrt(6.0 / (fan_in + fan_out))
        w[f"W{l}"] = rng.uniform(-lim, lim, size=(fan_out, fan_in))
        w[f"b{l}"] = np.zeros(fan_out)
    return w


def nesterov_mu(iterations: int) -> list[float]:
    """μ_t for t = 0..iterations-1 (μ_0 = 0)."""
    a, out = 1.0, []
    for _ in range(iterations):
        a_next = (1.0 + math.sqrt(1.0 + 4.0 * a * a)) / 2.0
        out.append((a - 1.0) / a_next)
        a = a_next
    return out


def forward(weights: dict, X: np.ndarray, acts: Sequence, check: bool = False) -> tuple[list, list]:
    """Pre-activations A_1..A_K and activations Z_0..Z_K. ``check`` raises DataError if an A_l
    leaves its polynomial's interval (then the encrypted run would compute garbage)."""
    K = len(acts)
    Z, A = [np.asarray(X, dtype=np.float64)], []
    for l in range(1, K + 1):
        a = Z[-1] @ weights[f"W{l}"].T + weights[f"b{l}"]
        if check and isinstance(acts[l - 1], PolyApprox):
            check_interval(a, acts[l - 1], f"pre-activations of layer {l}")
        A.append(a)
        Z.append(acts[l - 1](a))
    return A, Z


def gradients(weights: dict, X: np.ndarray, Y: np.ndarray, acts: Sequence, step: float,
              loss: str = "bce", check: bool = False) -> tuple[dict, dict]:
    """Gradient step (already multiplied by ``step`` = lr / n) and diagnostics (loss, grad norms)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    K = len(acts)
    A, Z = forward(weights, X, acts, check)
    p = Z[-1]
    if loss == "bce":
        e = p - Y
    elif loss == "sle":  # loss = −Σ L², L = p + y − 1
        e = -2.0 * (p + Y - 1.0) * acts[-1].derivative()(A[-1])
    else:  # mse: Σ (p − y)²
        e = 2.0 * (p - Y) * acts[-1].derivative()(A[-1])
    delta = step * e
    grads, norms = {}, {}
    for l in range(K, 0, -1):
        grads[f"W{l}"] = delta.T @ Z[l - 1]
        grads[f"b{l}"] = delta.sum(axis=0)
        norms[f"W{l}"] = float(np.linalg.norm(grads[f"W{l}"]) / step) if step else 0.0
        if l > 1:
            delta = (delta @ weights[f"W{l}"]) * acts[l - 2].derivative()(A[l - 2])
    pc = np.clip(sigmoid_safe(p), 1e-12, 1 - 1e-12)
    info = {"bce": float(-np.mean(np.sum(Y * np.log(pc) + (1 - Y) * np.log(1 - pc), axis=1))),
            "grad_norm": norms, "scores": p}
    return grads, info


def sigmoid_safe(p: np.ndarray) -> np.ndarray:
    """``p`` with NaN replaced by 0.5 (σ(0)); ±inf become the largest finite floats (numpy.nan_to_num)."""
    return np.nan_to_num(p, nan=0.5)


def train(X: np.ndarray, Y: np.ndarray, hidden: Sequence[int], acts: Sequence, *, iterations: int,
          learning_rate: float, momentum: str = "nesterov", seed: int = 0, init_scale: float = 1.0,
          loss: str = "bce", check: bool = False, weights: dict | None = None,
          callback: Callable[[int, dict, dict], None] | None = None,
          batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Gradient descent; returns W (the weights).

    ``batch_size``: None (full batch) or the rows of one mini-batch: iteration t trains on the rows
    of batch t mod B, batches being consecutive slices of ``batch_size`` rows (the last may be
    shorter), with step ``learning_rate / rows in that batch``. ``callback(t, weights, info)`` is
    called after each iteration (loss study curves).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n = X.shape[0]
    sizes = layer_sizes(X.shape[1], hidden, Y.shape[1])
    if len(acts) != len(sizes) - 1:
        raise ValueError(f"need {len(sizes) - 1} activations, got {len(acts)}")
    W = {k: v.copy() for k, v in (weights or init_weights(sizes, seed, init_scale)).items()}
    V = {k: v.copy() for k, v in W.items()}
    mus = nesterov_mu(iterations) if momentum == "nesterov" else [0.0] * iterations
    for t in range(iterations):
        rows = batch_rows(n, batch_size, t)
        grads, info = gradients(V, X[rows], Y[rows], acts, learning_rate / len(X[rows]), loss, check)
        W_new = {k: V[k] - grads[k] for k in V}
        mu = mus[t]
        V = {k: (1.0 + mu) * W_new[k] - mu * W[k] for k in W} if mu else {k: v.copy() for k, v in W_new.items()}
        W = W_new
        if callback is not None:
            callback(t, W, info)
    return W


def batch_rows(n: int, batch_size: int | None, t: int) -> slice:
    """The rows iteration t trains on: all (full batch) or batch t mod ceil(n / batch_size)."""
    if not batch_size or batch_size >= n:
        return slice(0, n)
    b = t % -(-n // batch_size)
    return slice(b * batch_size, min(n, (b + 1) * batch_size))


def predict_scores(weights: dict, X: np.ndarray, acts: Sequence) -> np.ndarray:
    """Output scores; polynomial activations get inputs clipped to their interval (plaintext, client side)."""
    Z = np.asarray(X, dtype=np.float64)
    for l, act in enumerate(acts, start=1):
        a = Z @ weights[f"W{l}"].T + weights[f"b{l}"]
        lo, hi = act.interval
        Z = act(np.clip(a, lo, hi))
    return Z
