"""Mini-batch, multi-epoch logistic regression whose encrypted state is refreshed between steps.

The seed trainer (``mlr``) folds its whole schedule into one circuit from W₀ = 0, so it stops
where the modulus chain ends. This one keeps the weights W as ciphertexts (the blocked layout's
weight vectors, ``BlockedPacking.pack_weights``) and applies one step per mini-batch:

    z = X_b·Wᵀ (1 level) → q = M ⊙ (Y_b − σ̃(z)) (sigmoid depth, mask folded) → E = spread(q)
    → W ← W + Eᵀ·X̃_b  (1 level; X̃_b = lr · X_b · diag(B̄_b), so the update itself is free)

so a step costs 2 + depth(σ̃) levels (4 with the published degree-3 sigmoid). Between steps the
state must be brought back to a high level: ``refresh="client"`` (the client decrypts and
re-encrypts it, SEAL) or ``refresh="bootstrap"`` (a backend that bootstraps). The loop that
decides when lives in ``hetrain.protocol.refresh``; this module is only arithmetic.

Config keys:
    epochs         int, default 10: passes over the training rows
    batch_size     int, default 128: rows per mini-batch (the last batch may be smaller; its
                   missing rows are zeros, which add exactly nothing to the gradient)
    learning_rate  float, default 4.0: multiplier on the quadratic-gradient step B̄_b ⊙ G
    sigmoid        str, default "published" (get_sigmoid spec)
    patience       int, default 3: stop after this many epochs without a better validation
                   accuracy (0: never stop early)
    layout         "blocked" only ("auto" accepted); momentum "none" only (a Nesterov look-ahead
                   needs the previous W too, doubling the refreshed state; not implemented).

B̄_b is Chiang's fixed Hessian bound (DESIGN §1a) computed by the client from batch b's own rows.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hetrain.circuits import blocked_matmul
from hetrain.circuits.approx import check_interval, get_sigmoid
from hetrain.circuits.masked_poly import eval_poly_masked
from hetrain.circuits.packing import BlockedPacking
from hetrain.ckks import PlainVector, get_params
from hetrain.errors import DataError, HetrainUserError

from .base import Plan
from .mlr_twin import add_bias, quadratic_gradient_diag

DEFAULTS = {"epochs": 10, "batch_size": 128, "learning_rate": 4.0, "sigmoid": "published", "patience": 3,
            "layout": "blocked", "momentum": "none"}


@dataclasses.dataclass
class Batch:
    """One mini-batch as the server holds it (ciphertexts) or the twin holds it (arrays)."""

    X: list        # forward copy of X_b (bias column included), blocked layout
    Xt: list       # lr · X_b · diag(B̄_b) in the gradient's permuted order
    Ym: list       # labels masked to the valid forward slots (so no level is spent masking)


class MiniBatchMLR:
    """Arithmetic of the refreshed mini-batch trainer (see module docstring)."""

    name = "mlr-minibatch"

    def __init__(self, **config) -> None:
        unknown = set(config) - set(DEFAULTS)
        if unknown:
            raise HetrainUserError(f"unknown {self.name} option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        cfg = {**DEFAULTS, **config}
        for key in ("epochs", "batch_size", "patience"):
            cfg[key] = int(cfg[key])
        cfg["learning_rate"] = float(cfg["learning_rate"])
        if cfg["epochs"] < 1 or cfg["batch_size"] < 1 or cfg["patience"] < 0:
            raise HetrainUserError("epochs and batch_size must be >= 1, patience >= 0")
        if not np.isfinite(cfg["learning_rate"]) or cfg["learning_rate"] <= 0:
            raise HetrainUserError("learning_rate must be a positive number")
        if cfg["layout"] not in ("blocked", "auto"):
            raise HetrainUserError(f"{self.name} supports layout 'blocked' only, got {cfg['layout']!r}")
        if cfg["momentum"] != "none":
            raise HetrainUserError(f"{self.name} supports momentum 'none' only, got {cfg['momentum']!r}")
        try:
            self.approx = get_sigmoid(cfg["sigmoid"])
        except ValueError as e:
            raise HetrainUserError(str(e)) from None
        self.config = cfg

    # ------------------------------------------------------------------ planning
    @property
    def levels_per_step(self) -> int:
        return 2 + self.approx.depth

    def packing(self, d: int, c: int, slots: int) -> BlockedPacking:
        return BlockedPacking.choose(self.config["batch_size"], d + 1, c, slots)

    def batches_of(self, n: int) -> list[np.ndarray]:
        b = self.config["batch_size"]
        return [np.arange(s, min(s + b, n)) for s in range(0, n, b)]

    def plan(self, n_samples: int, n_features: int, n_classes: int, params) -> Plan:
        p = get_params(params)
        pk = self.packing(n_features, n_classes, p.slots)
        per = self.levels_per_step
        steps = self.config["epochs"] * len(self.batches_of(n_samples))
        fit = p.levels // per
        notes = [f"layout {pk.describe()}", f"{per} levels per step, {fit} step(s) between refreshes",
                 f"{steps} steps = {self.config['epochs']} epochs x {len(self.batches_of(n_samples))} batches"]
        # One step must fit between refreshes; more steps than that need --refresh client|bootstrap.
        return Plan(levels_needed=per, levels_available=p.levels, rotation_steps=sorted(pk.rotation_steps()),
                    iterations=steps, iterations_that_fit=fit,
                    levels_per_iteration={"forward": 1, "sigmoid": self.approx.depth, "gradient": 1, "update": 0},
                    n_input_ciphertexts=len(self.batches_of(n_samples)) * 2 * pk.n_groups * pk.n_fblocks,
                    notes=notes)

    # ------------------------------------------------------------------ client side (plaintext)
    def check_data(self, X, Y) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0] or X.shape[0] == 0:
            raise DataError(f"X must be n × d and Y n × c with the same n ≥ 1, got {X.shape} and {Y.shape}")
        if not np.all(np.isfinite(X)):
            raise DataError("X contains NaN or infinite values")
        if not np.all((Y == 0) | (Y == 1)):
            raise DataError("Y must be one-hot in {0, 1}")
        return X, Y

    def plain_batches(self, X, Y, slots: int) -> list[Batch]:
        """The vectors the client encrypts, per mini-batch (also the twin's input)."""
        X, Y = self.check_data(X, Y)
        pk = self.packing(X.shape[1], Y.shape[1], slots)
        fmasks = pk.forward_masks()
        out = []
        for rows in self.batches_of(X.shape[0]):
            Xb = add_bias(X[rows])
            Xt = self.config["learning_rate"] * Xb * quadratic_gradient_diag(Xb)
            labels = pk.pack_labels(Y[rows])
            out.append(Batch(pk.pack_forward_data(Xb), pk.pack_gradient_data(Xt),
                             [y * m for y, m in zip(labels, fmasks)]))
        return out

    def encrypt_batches(self, engine, X, Y) -> list[Batch]:
        # X̃ is first used by the gradient, depth(σ̃)+1 levels below the top: encrypting it there
        # makes it smaller and cheaper to multiply (it is aligned down further when needed).
        lx = max(engine.max_level - 1 - self.approx.depth, 0)
        return [Batch([engine.encrypt(v) for v in b.X], [engine.encrypt(v, level=lx) for v in b.Xt],
                      [engine.encrypt(v) for v in b.Ym]) for b in self.plain_batches(X, Y, engine.slots)]

    def initial_weights(self, n_features: int, n_classes: int, slots: int) -> list[np.ndarray]:
        return self.packing(n_features, n_classes, slots).pack_weights(np.zeros((n_classes, n_features + 1)))

    def unpack(self, vectors, n_features: int, n_classes: int, slots: int) -> np.ndarray:
        return self.packing(n_features, n_classes, slots).unpack_weights(vectors)

    def check_weights(self, W: np.ndarray, X: np.ndarray) -> None:
        """Client-side guard: the next sigmoid inputs X·Wᵀ must lie in the approximation's interval."""
        check_interval(add_bias(X) @ W.T, self.approx, what="sigmoid inputs for the next step")

    # ------------------------------------------------------------------ server side (encrypted)
    def step(self, engine, pk: BlockedPacking, W: list, batch: Batch) -> list:
        """One encrypted gradient step on one batch: returns the new W (levels_per_step lower)."""
        fmasks = [PlainVector(m) for m in pk.forward_masks()]
        z = blocked_matmul.forward(engine, pk, batch.X, W)
        q = [engine.sub(y, eval_poly_masked(engine, zg, self.approx.coeffs, m)) for y, zg, m in zip(batch.Ym, z, fmasks)]
        G = blocked_matmul.gradient(engine, pk, blocked_matmul.spread(engine, pk, q), batch.Xt)
        return [engine.add(w, g) for w, g in zip(W, G)]

    # ------------------------------------------------------------------ plaintext twin
    def twin_step(self, W: np.ndarray, X: np.ndarray, Y: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The same step in NumPy on the weight matrix (classes × (1 + features))."""
        Xb = add_bias(X[rows])
        Xt = self.config["learning_rate"] * Xb * quadratic_gradient_diag(Xb)
        z = Xb @ W.T
        check_interval(z, self.approx, what="sigmoid inputs (twin)")
        return W + (Y[rows] - self.approx(z)).T @ Xt
