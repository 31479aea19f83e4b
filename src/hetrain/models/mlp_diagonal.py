"""Network 4 → H → c on narrow inputs (Iris) with diagonal-packed weights and a cheap transpose.

Layout and circuits: hetrain.circuits.diagonal. Arithmetic (learning rates and the output slope are
folded into the data, so they cost no level): hetrain.models.mlp_diagonal_twin.

Levels per iteration (ℓ1, ℓ2: levels of the W1 and W2 diagonals; d = depth of the hidden sigmoid):
    z1 = Σ D1_t ⊙ x̂_t                      ℓ1 − 1
    â = σ_h(z1) (odd part + masked constant)  ℓ1 − 1 − d
    z2 = Σ D2_t ⊙ rot(â, t), δ2 = z2 + o0 − y  m2 = min(ℓ2, ℓ1 − 1 − d) − 1   (output σ is linear: no level)
    W2 gradient Σ_s δ2 ⊙ rot(â, t)            ℓ2' = m2 − 1
    u = W2ᵀ δ2 (same diagonals)               m2 − 1
    W1 gradient Σ_s u ⊙ (σ_h'(z1) ⊙ x̂_t)      ℓ1' = min(m2 − 1, ℓ1 − 2 − d') − 1
Iteration 1 starts from W2 = 0 (δ1 = 0): only W2 is updated, from δ2 = o0 − y sent by the client.
With the degree-3 sigmoid that is 6 levels per full iteration: 2 iterations at n16384 /
n16384-deep, 4 at n32768.

Config keys: iterations (default: as many as fit), learning_rate (output layer η2, default 16),
hidden_learning_rate (η1, default 2), sigmoid (hidden, default "deg3:8"),
output_sigmoid (degree-1 approximation "deg1:<B>", default "deg1:8"), hidden ([H], default [4]),
layout ("diagonal"), momentum ("none"; Nesterov would cost one level per iteration: not offered),
init_gain (W1 initialisation scale, default 2.0), hidden_bias (value of the hidden bias unit, 0.5),
transpose ("packed" | "repacked": the naive re-packing of Wᵀ, for comparison).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from hetrain.ckks import CKKSParams, Ciphertext, Engine, PlainVector
from hetrain.circuits import diagonal as dg
from hetrain.circuits.approx import PolyApprox, check_interval, get_sigmoid
from hetrain.circuits.poly import eval_poly, poly_depth
from hetrain.errors import DataError, HetrainUserError

from .base import DepthPlanError, Plan, Progress, Trainer, register
from .mlp_diagonal_twin import Scales, init_hidden, predict_scores, twin_train

Refresh = Callable[[dict], dict]

_KEYS = {"iterations", "learning_rate", "hidden_learning_rate", "sigmoid", "output_sigmoid", "hidden", "layout",
         "momentum", "init_gain", "hidden_bias", "transpose"}


def level_schedule(top: int, iterations: int, d_sig: int, d_dsig: int, repacked: bool = False):
    """Levels (ℓ1, ℓ2) after each iteration starting from ``top``; stops early (shorter list) when one does not fit."""
    l1, l2, out = top, None, []
    for it in range(iterations):
        a = l1 - 1 - d_sig
        if it == 0:
            if a < 1:
                break
            l2 = a - 1
        else:
            m2 = min(l2, a) - 1
            u = m2 - 1 - (1 if repacked else 0)
            f = l1 - 2 - d_dsig
            if m2 < 1 or u < 1 or f < 1:
                break
            l1, l2 = min(u, f) - 1, m2 - 1
        out.append((l1, l2))
    return out


@register
class DiagonalMLPTrainer(Trainer):
    """One hidden layer, diagonal-packed weights, samples batched in slots (see module docstring)."""

    name = "mlp-diagonal"

    def __init__(self, **config) -> None:
        unknown = set(config) - _KEYS
        if unknown:
            raise HetrainUserError(f"mlp-diagonal: unknown config keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        super().__init__(**config)
        self.hidden_sig: PolyApprox = get_sigmoid(config.get("sigmoid", "deg3:8"))
        self.out_sig: PolyApprox = get_sigmoid(config.get("output_sigmoid", "deg1:8"))
        if self.out_sig.degree != 1:
            raise HetrainUserError("mlp-diagonal: output_sigmoid must be degree 1 ('deg1:<bound>'): the output slope "
                                   "is folded into the data so that the output layer costs no level")
        hidden = config.get("hidden", [4])
        if len(hidden) != 1:
            raise HetrainUserError("mlp-diagonal: exactly one hidden layer is supported (hidden=[H])")
        self.H = int(hidden[0])
        if self.H < 1:
            raise HetrainUserError("mlp-diagonal: hidden size must be >= 1")
        if config.get("momentum", "none") != "none":
            raise HetrainUserError("mlp-diagonal: momentum must be 'none' (Nesterov costs one level per iteration, "
                                   "which the modulus chain cannot spare)")
        if config.get("layout", "diagonal") not in ("diagonal", "auto"):
            raise HetrainUserError("mlp-diagonal: layout must be 'diagonal'")
        self.transpose = config.get("transpose", "packed")
        if self.transpose not in ("packed", "repacked"):
            raise HetrainUserError("mlp-diagonal: transpose must be 'packed' or 'repacked'")
        self.lr2 = float(config.get("learning_rate", 16.0))
        self.lr1 = float(config.get("hidden_learning_rate", 2.0))
        if not (self.lr1 > 0 and self.lr2 > 0):
            raise HetrainUserError("mlp-diagonal: learning rates must be > 0")
        self.gain = float(config.get("init_gain", 2.0))
        self.hb = float(config.get("hidden_bias", 0.5))
        self.iterations = config.get("iterations")

    # ------------------------------------------------------------------ planning
    def _depths(self):
        return self.hidden_sig.depth, poly_depth(self.hidden_sig.derivative().degree)

    def _geometry(self, n: int, d: int, c: int, slots: int):
        layout = dg.SampleLayout(n, slots)
        b1, b2 = dg.BandDiagonals(self.H, d + 1), dg.BandDiagonals(c, self.H + 1)
        p1 = dg.PackPlan.for_band(b1, layout.block)
        p2 = dg.PackPlan.for_band(b2, layout.block, live_cols=self.H + 1)
        return layout, b1, b2, p1, p2

    def plan(self, n_samples: int, n_features: int, n_classes: int, params: CKKSParams) -> Plan:
        layout, b1, b2, p1, p2 = self._geometry(n_samples, n_features, n_classes, params.slots)
        ds, dd = self._depths()
        rep = self.transpose == "repacked"
        fit = len(level_schedule(params.levels, 10_000, ds, dd, rep))
        iters = fit if self.iterations is None else int(self.iterations)
        if iters < 1:
            raise DepthPlanError(f"mlp-diagonal: not even one iteration fits in {params.name} ({params.levels} levels; "
                                 f"the first needs {ds + 3}). Use n16384 or larger.")
        need = next(L for L in range(1, 400) if len(level_schedule(L, iters, ds, dd, rep)) == iters)
        steps = set(b2.offsets) | {-t for t in b2.offsets} | set(p1.steps()) | set(p2.steps())
        steps |= set(layout.allreduce_steps())
        steps.discard(0)
        parts = {"hidden forward": 1 + ds, "output forward": 1, "backward (Wᵀδ)": 1 + rep,
                 "hidden gradient": 1, "output gradient": 1}
        return Plan(need, params.levels, sorted(steps), iters, fit, parts, len(b1.offsets) + 1,
                    [f"batch {layout.batch} samples x {layout.block} slots; W1 {len(b1.offsets)} diagonals, "
                     f"W2 {len(b2.offsets)} diagonals; 6 levels per full iteration, the first costs {ds + 3}"])

    # ------------------------------------------------------------------ client
    def _check_inputs(self, X, Y):
        X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0] or X.shape[0] == 0:
            raise DataError(f"expected X (n, d) and one-hot Y (n, c) with the same n, got {X.shape} and {Y.shape}")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
            raise DataError("X or Y contain NaN or infinite values")
        if not np.all((Y == 0) | (Y == 1)):
            raise DataError("Y must be one-hot in {0, 1}")
        W1 = init_hidden(self.H, X.shape[1], self.gain)
        check_interval(np.hstack([X, np.ones((len(X), 1))]) @ W1.T, self.hidden_sig, "initial hidden pre-activations")
        return X, Y, W1

    def client_encrypt(self, engine: Engine, X: np.ndarray, Y: np.ndarray):
        X, Y, W1 = self._check_inputs(X, Y)
        n, d = X.shape
        c = Y.shape[1]
        layout, b1, b2, p1, p2 = self._geometry(n, d, c, engine.slots)
        plan = self.plan(n, d, c, engine.params)
        plan.check(engine.params)
        s = Scales.of(self.lr1, self.lr2, n, self.out_sig)
        xh = s.x * np.hstack([X, np.ones((n, 1))])
        xrot = b1.rotated_inputs(xh)
        v1 = b1.diagonals(W1 / s.x)
        inputs = {
            "x": [engine.encrypt(layout.place(xrot[t])) for t in b1.offsets],
            "w1": [engine.encrypt(layout.replicate(v1[t])) for t in b1.offsets],
            "delta0": [engine.encrypt(layout.place(s.o0 - Y))],
        }
        job = {"model": self.name, "config": dict(self.config), "n": n, "d": d, "c": c,
               "iterations": plan.iterations, "scales": {"a": s.a, "dsig": s.dsig, "o0": s.o0}}
        return inputs, job

    def client_decrypt(self, engine: Engine, outputs, job) -> dict[str, np.ndarray]:
        n, d, c = job["n"], job["d"], job["c"]
        layout, b1, b2, _, _ = self._geometry(n, d, c, engine.slots)
        s = Scales.of(self.lr1, self.lr2, n, self.out_sig)
        v1 = {t: engine.decrypt(ct)[: self.H] for t, ct in zip(b1.offsets, outputs["w1"])}
        v2 = {t: engine.decrypt(ct)[:c] for t, ct in zip(b2.offsets, outputs["w2"])}
        return {"W1": b1.matrix(v1) * s.x, "W2": b2.matrix(v2) / s.w2}

    # ------------------------------------------------------------------ server
    def server_train(self, engine: Engine, inputs, job, progress: Progress | None = None,
                     refresh: Refresh | None = None):
        """Train on ciphertexts. ``refresh(dict_of_cts) -> dict_of_cts`` (optional) is called when the
        weights have too few levels left for the next iteration (client-aided re-encryption or
        bootstrapping); without it the job must fit in one modulus chain."""
        n, d, c, iters = job["n"], job["d"], job["c"], int(job["iterations"])
        layout, b1, b2, p1, p2 = self._geometry(n, d, c, engine.slots)
        sc = job["scales"]
        ds, dd = self._depths()
        if refresh is None and len(level_schedule(engine.max_level, iters, ds, dd, self.transpose == "repacked")) < iters:
            raise DepthPlanError(f"{iters} iterations do not fit in {engine.params.name} without a refresh")
        X = dict(zip(b1.offsets, inputs["x"]))
        D1 = dict(zip(b1.offsets, inputs["w1"]))
        delta0 = inputs["delta0"][0]
        sig = np.array(self.hidden_sig.coeffs) * sc["a"]
        odd = [0.0] + list(sig[1:])
        dsig = list(np.array(self.hidden_sig.derivative().coeffs) * sc["dsig"])
        const = PlainVector(layout.replicate_real(np.r_[np.full(self.H, sig[0]), sc["a"] * self.hb]))
        masks = dg.transpose_masks(b2, layout) if self.transpose == "repacked" else None
        D2 = None
        for it in range(iters):
            if it > 0 and refresh is not None:
                lv = min(min(x.level for x in D1.values()), min(x.level for x in D2.values()))
                if len(level_schedule(lv, 2, ds, dd, masks is not None)) < 2:  # next full iteration needs it
                    fresh = refresh({**{f"w1_{t}": D1[t] for t in D1}, **{f"w2_{t}": D2[t] for t in D2}})
                    D1 = {t: fresh[f"w1_{t}"] for t in D1}
                    D2 = {t: fresh[f"w2_{t}"] for t in D2}
            z1 = dg.matvec(engine, D1, X)
            a = engine.add(eval_poly(engine, z1, odd), const)
            ra = dg.rotations_of(engine, a, b2.offsets)
            if D2 is None:
                delta2 = delta0
            else:
                delta2 = engine.add(dg.matvec(engine, D2, ra), delta0)
                if masks is None:
                    u = dg.matvec_transpose(engine, D2, delta2)
                else:
                    u = dg.matvec_transpose_repacked(engine, D2, delta2, masks)
                sp = eval_poly(engine, z1, dsig)
                prods = {t: engine.mul(u, engine.mul(sp, X[t])) for t in b1.offsets}
                q1 = dg.pack_sum(engine, prods, p1, layout)
                D1 = {t: engine.sub(D1[t], dg.unpack(engine, q1, t, p1)) for t in b1.offsets}
            q2 = dg.pack_sum(engine, {t: engine.mul(delta2, ra[t]) for t in b2.offsets}, p2, layout)
            upd = {t: dg.unpack(engine, q2, t, p2) for t in b2.offsets}
            D2 = {t: -upd[t] for t in b2.offsets} if D2 is None else {t: engine.sub(D2[t], upd[t]) for t in b2.offsets}
            if progress:
                progress(it + 1, iters, f"iteration {it + 1}/{iters}")
        return {"w1": [D1[t] for t in b1.offsets], "w2": [D2[t] for t in b2.offsets]}

    # ------------------------------------------------------------------ plaintext
    def twin(self, X: np.ndarray, Y: np.ndarray, iterations: int | None = None, history: list | None = None):
        X, Y, W1 = self._check_inputs(X, Y)
        it = iterations if iterations is not None else (self.iterations or 1)
        return twin_train(X, Y, W1, int(it), self.hidden_sig, self.out_sig, self.lr1, self.lr2, self.hb, history)

    def predict_scores(self, weights, X: np.ndarray) -> np.ndarray:
        return predict_scores(weights["W1"], weights["W2"], np.asarray(X, dtype=np.float64), self.hidden_sig,
                              self.out_sig, self.hb)
