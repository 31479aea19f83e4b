"""Multiclass logistic regression in plaintext: the schedule, the preconditioner and the twin.

Everything the encrypted trainer folds into its circuit is computed here once and shared by both:

* ``quadratic_gradient_diag``: the client's fixed diagonal preconditioner B̄ (Chiang's quadratic
  gradient: J. Chiang, "Privacy-Preserving Logistic Regression Training with A Faster Gradient Variant", arXiv:2201.10838);
* ``Schedule``: Nesterov (or plain) gradient ascent rewritten as linear combinations of the raw
  gradients H_j = (Y − σ(z_j))ᵀ·X̃ (X̃ = X·diag(B̄)), so that every scalar of the method lands either
  in the sigmoid polynomial's coefficients (the forward scale κ_t), in scalar multiples of
  ciphertexts that sit at higher levels than the newest gradient (off the critical path), or in
  one public factor the client applies after decryption (``out_scale``);
* ``twin``: the same arithmetic in NumPy, in the same order, with the same polynomial.

W₀ = 0, so the first forward pass is known to everyone (z₀ = 0, σ(0) = c₀) and costs no levels.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from hetrain.circuits.approx import PolyApprox, check_interval

EPS_BBAR = 1e-10  # ε in B̄ (published value)


def add_bias(X: np.ndarray) -> np.ndarray:
    """Prepend the column of 1s (the bias is weight column 0)."""
    X = np.asarray(X, dtype=np.float64)
    return np.concatenate([np.ones((X.shape[0], 1)), X], axis=1)


def quadratic_gradient_diag(Xb: np.ndarray) -> np.ndarray:
    """B̄_l = 1 / (ε + ¼ Σ_i |x_il| · Σ_k |x_ik|): Chiang's fixed diagonal bound of the Hessian."""
    A = np.abs(Xb)
    return 1.0 / (EPS_BBAR + 0.25 * (A * A.sum(axis=1, keepdims=True)).sum(axis=0))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Ascent schedule as combinations of the raw gradients H_0..H_{T-1}.

    For iteration t ≥ 1 the forward operand is U_t = Σ_j u[t][j]·H_j with u[t][t-1] = 1 (the newest
    gradient is used as is: no level spent on it) and the true look-ahead weights are κ_t·U_t;
    κ_t is folded into the sigmoid's coefficients. The model is out_scale · Σ_j out[j]·H_j with
    out[T-1] = 1; the client applies out_scale after decryption.
    """

    iterations: int
    u: tuple[tuple[float, ...], ...]  # u[t] for t = 1..T-1 (index t-1), length t
    kappa: tuple[float, ...]  # κ_t for t = 1..T-1
    out: tuple[float, ...]
    out_scale: float

    @classmethod
    def build(cls, iterations: int, n_samples: int, learning_rate: float, momentum: str) -> "Schedule":
        """The schedule of ``iterations`` steps over ``n_samples`` rows: step_t = learning_rate·(1 + 1/(n·(t+1)))
        on the quadratic gradient (Chiang, arXiv:2201.10838), with Nesterov's look-ahead (α₀ = 0.01, the
        published start) when ``momentum`` is "nesterov", plain ascent for "none". Same recursion as
        :func:`reference_ascent`, written over the raw gradients. Raises ValueError for iterations < 1 or
        another momentum."""
        if iterations < 1:
            raise ValueError("iterations must be >= 1")
        if momentum not in ("nesterov", "none"):
            raise ValueError(f"momentum must be 'nesterov' or 'none', got {momentum!r}")
        T = iterations
        # Weights as coefficient vectors over the raw gradients G̃_0..G̃_{T-1} (W_0 = V_0 = 0).
        W = [np.zeros(T)]
        V = [np.zeros(T)]
        alpha = 0.01  # published Nesterov start α₀
        for t in range(T):
            step = learning_rate * (1.0 + 1.0 / (n_samples * (t + 1)))  # (1 + γ_t), γ_t = 1/(n·t), t from 1
            w_next = V[t].copy()
            w_next[t] += step  # W_{t+1} = V_t + step_t · G̃(V_t)
            if momentum == "nesterov":
                alpha_next = (1.0 + math.sqrt(1.0 + 4.0 * alpha * alpha)) / 2.0
                eta = (1.0 - alpha) / alpha_next
                alpha = alpha_next
                v_next = (1.0 - eta) * w_next + eta * W[t]
            else:
                v_next = w_next
            W.append(w_next)
            V.append(v_next)
        u, kappa = [], []
        for t in range(1, T):
            k = V[t][t - 1]
            kappa.append(float(k))
            u.append(tuple(float(x) for x in V[t][:t] / k))
        out_scale = float(W[T][T - 1])
        out = tuple(float(x) for x in W[T] / out_scale)
        return cls(T, tuple(u), tuple(kappa), out, out_scale)

    def sigmoid_coeffs(self, approx: PolyApprox, t: int) -> list[float]:
        """Coefficients of z' ↦ σ̃(κ_t·z') (the forward scale folded into the polynomial)."""
        k = self.kappa[t - 1]
        return [c * k**p for p, c in enumerate(approx.coeffs)]


def twin(X: np.ndarray, Y: np.ndarray, approx: PolyApprox, schedule: Schedule,
         check: bool = True) -> dict[str, np.ndarray]:
    """Plaintext training with the encrypted trainer's arithmetic. X has NO bias column yet.

    Returns ``W`` (classes × (1 + features), bias first), ``B`` (B̄) and ``z_max`` (max |σ input|).
    With ``check``, every sigmoid input is checked against the approximation's interval
    (DataError), since outside it the polynomial returns garbage under encryption, unseen.
    """
    Xb = add_bias(X)
    Y = np.asarray(Y, dtype=np.float64)
    B = quadratic_gradient_diag(Xb)
    Xt = Xb * B
    c0 = approx.coeffs[0]
    H = [(Y - c0).T @ Xt]  # iteration 0: z = 0, σ̃(0) = c₀
    z_max = 0.0
    for t in range(1, schedule.iterations):
        U = sum(c * h for c, h in zip(schedule.u[t - 1], H))
        z = Xb @ U.T  # z' ; the true input is κ_t·z'
        zk = schedule.kappa[t - 1] * z
        z_max = max(z_max, float(np.max(np.abs(zk))))
        if check:
            check_interval(zk, approx, what=f"sigmoid inputs at iteration {t + 1}")
        sig = np.polynomial.polynomial.polyval(z, schedule.sigmoid_coeffs(approx, t))
        H.append((Y - sig).T @ Xt)
    W = schedule.out_scale * sum(c * h for c, h in zip(schedule.out, H))
    return {"W": W, "B": B, "z_max": np.array(z_max)}


def reference_ascent(X: np.ndarray, Y: np.ndarray, approx: PolyApprox, iterations: int,
                     learning_rate: float, momentum: str) -> np.ndarray:
    """The textbook W/V recursion (no folding), to show the folded schedule computes the same thing."""
    Xb = add_bias(X)
    n = Xb.shape[0]
    B = quadratic_gradient_diag(Xb)
    W = np.zeros((Y.shape[1], Xb.shape[1]))
    V = W.copy()
    alpha = 0.01
    for t in range(iterations):
        G = (Y - approx(Xb @ V.T)).T @ Xb
        tmp = V + learning_rate * (1.0 + 1.0 / (n * (t + 1))) * B * G
        if momentum == "nesterov":
            alpha_next = (1.0 + math.sqrt(1.0 + 4.0 * alpha * alpha)) / 2.0
            eta = (1.0 - alpha) / alpha_next
            alpha = alpha_next
            V = (1.0 - eta) * tmp + eta * W
        else:
            V = tmp
        W = tmp
    return W
