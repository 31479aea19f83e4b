"""Network 4 → H → c on narrow inputs (Iris) with diagonal-packed weights and a cheap transpose.

Layout and circuits: hetrain.circuits.diagonal. Arithmetic (learning rates and the output slope are
folded into the data, so they cost no level): hetrain.models.mlp_diagonal_twin.

Levels per iteration (``plan`` traces them from ``_iteration`` itself, models/trace.py; ℓ1, ℓ2: levels of
the W1 and W2 diagonals; d = depth of the hidden sigmoid):
    z1 = Σ D1_t ⊙ x̂_t                      ℓ1 − 1
    â = σ_h(z1) (odd part + masked constant)  ℓ1 − 1 − d
    z2 = Σ D2_t ⊙ rot(â, t), δ2 = z2 + o0 − y  m2 = min(ℓ2, ℓ1 − 1 − d) − 1   (output σ is linear: no level)
    W2 gradient Σ_s δ2 ⊙ rot(â, t)            ℓ2' = m2 − 1
    u = W2ᵀ δ2 (same diagonals)               m2 − 1
    δ1 = u ⊙ σ_h'(z1)                          d1 = min(m2 − 1, ℓ1 − 1 − d') − 1
    W1 gradient Σ_t rot(δ1, −o_t) ⊙ x̃_t     ℓ1' = d1 − 1  (one relinearisation for all diagonals)
Iteration 1 starts from W2 = 0 (δ1 = 0): only W2 is updated, from δ2 = o0 − y sent by the client.
Default (degree-7 hidden sigmoid): 8 levels per full iteration, so n16384-deep (9 levels) holds the
first step plus one full iteration, n32768 three iterations; longer training refreshes the weights
(``server_train(refresh=...)``) before every full iteration that would not fit.

Defaults for ``--model mlp`` on narrow inputs: ``plan_defaults`` (bottom of this module) keeps the
sigmoid and H = 4 and chooses the learning-rate pair and the iterations on the plaintext twin, so that
every hidden pre-activation stays within 90 % of the interval (Iris: 17 iterations, 0.967; wine: 35, 0.972).

Config keys: iterations (default: as many as fit), learning_rate (output layer η2, default 16),
hidden_learning_rate (η1, default 8), sigmoid (hidden, default "deg7:24"),
output_sigmoid (degree-1 approximation "deg1:<B>", default "deg1:16"), hidden ([H], default [4]),
layout ("diagonal"), momentum ("none"; Nesterov would cost one level per iteration: not offered),
init_gain (W1 initialisation scale, default 2.5), hidden_bias (value of the hidden bias unit, 0.5),
transpose ("packed" | "repacked": the naive re-packing of Wᵀ, for comparison).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from hetrain.ckks import CKKSParams, Engine, PlainVector, get_params
from hetrain.circuits import diagonal as dg
from hetrain.circuits.approx import PolyApprox, check_interval, get_sigmoid
from hetrain.circuits.errors import LayoutError
from hetrain.circuits.poly import eval_poly
from hetrain.errors import DataError, HetrainUserError

from . import inner_boot, trace
from .base import DepthPlanError, Plan, Progress, Trainer, check_training_arrays, register
from .configs import DiagonalMLPConfig
from .mlp_diagonal_twin import Scales, init_hidden, predict_scores, twin_train

Refresh = Callable[[dict], dict]

# Chosen by a search on the plaintext twin (bench/iris.py prints its accuracy per iteration): with full-batch
# gradient descent the hidden pre-activations grow to |z1| ≈ 23 before Iris is separated, so the hidden
# sigmoid needs a wide interval (degree 7 on [-24, 24]; degree 3 is only sigmoid-like up to |z| ≈ 10 and
# every in-interval degree-3 configuration we tried stayed below 0.90 for 25 iterations). Test accuracy
# 0.90 at 15 iterations, 0.97 from 17 (needs refresh: one full iteration per n16384-deep chain).
DEFAULTS = DiagonalMLPConfig.defaults()  # the one source: models/configs.py

_KEYS = set(DEFAULTS)


@register
class DiagonalMLPTrainer(Trainer):
    """One hidden layer, diagonal-packed weights, samples batched in slots (see module docstring)."""

    name = "mlp-diagonal"
    summary = ("network with one hidden layer, diagonal-packed weights with a cheap transpose (narrow inputs such "
               "as Iris); --model mlp --layout diagonal")
    capabilities = frozenset({"refresh", "checkpoint"})
    bootstraps_inside = True  # models/inner_boot.py

    def __init__(self, **config) -> None:
        unknown = set(config) - _KEYS
        if unknown:
            raise HetrainUserError(f"mlp-diagonal: unknown config keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        super().__init__(**config)
        self.hidden_sig: PolyApprox = get_sigmoid(config.get("sigmoid", DEFAULTS["sigmoid"]))
        self.out_sig: PolyApprox = get_sigmoid(config.get("output_sigmoid", DEFAULTS["output_sigmoid"]))
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
        self.lr2 = float(config.get("learning_rate", DEFAULTS["learning_rate"]))
        self.lr1 = float(config.get("hidden_learning_rate", DEFAULTS["hidden_learning_rate"]))
        if not (self.lr1 > 0 and self.lr2 > 0):
            raise HetrainUserError("mlp-diagonal: learning rates must be > 0")
        self.gain = float(config.get("init_gain", DEFAULTS["init_gain"]))
        self.hb = float(config.get("hidden_bias", 0.5))
        self.iterations = config.get("iterations")

    # ------------------------------------------------------------------ planning
    def _bound(self) -> float:
        return float(max(abs(v) for v in self.hidden_sig.interval))

    def _geometry(self, n: int, d: int, c: int, slots: int):
        layout = dg.SampleLayout(n, slots)
        b1, b2 = dg.BandDiagonals(self.H, d + 1), dg.BandDiagonals(c, self.H + 1)
        # one window spacing for both gradients when it fits: their chained pack/unpack rotations then
        # share one pair of Galois keys (±spacing)
        g = max(dg.PackPlan.min_spacing(b1), dg.PackPlan.min_spacing(b2, self.H + 1))
        try:
            p1 = dg.PackPlan.for_band(b1, layout.block, spacing=g)
        except LayoutError:
            p1 = dg.PackPlan.for_band(b1, layout.block)
        p2 = dg.PackPlan.for_band(b2, layout.block, live_cols=self.H + 1)
        return layout, b1, b2, p1, p2

    def plan(self, n_samples: int, n_features: int, n_classes: int, params: CKKSParams, *,
             bootstrap_level: int | None = None) -> Plan:
        """Traced (models/trace.py): the W2-only first step, then full iterations, on zeros from a fresh
        state until one does not fit; what more iterations would need, on a deeper chain of the same ring.
        With ``bootstrap_level`` (default ``params.levels`` when a full iteration does not fit a refreshed
        state) also the run of a bootstrapping job, bootstraps inside iterations included (``Plan.bootstraps``,
        models/inner_boot.py). Raises DepthPlanError when not even the first step fits, or when a full
        iteration fits neither a refreshed state nor with bootstraps inside it."""
        params = get_params(params)
        layout, b1, b2, _, _ = self._geometry(n_samples, n_features, n_classes, params.slots)
        shape = (n_samples, n_features, n_classes)
        run = trace.chain(self, shape, params, [self.trace_flavor(t) for t in range(params.levels + 1)])
        fit = len(run)
        iters = fit if self.iterations is None else int(self.iterations)
        deep = trace.deeper(params)
        first = trace.deep_step(self, shape, params, None, self.trace_flavor(0))
        if iters < 1:
            raise DepthPlanError(f"mlp-diagonal: not even one iteration fits in {params.name} ({params.levels} levels; "
                                 f"the first needs {first.consumed}). Use n16384-deep or larger.")
        # one full iteration from a refreshed state (both weights at the top): the levels it needs
        full = trace.deep_step(self, shape, params, self._refreshed(shape, deep), self.trace_flavor(1))
        if fit >= iters:
            need = sum(s.consumed for s in run[:iters])
        else:  # the whole run in one chain (how far it is from fitting): on the deeper chain, then per iteration
            longer = trace.chain(self, shape, deep, [self.trace_flavor(t) for t in range(min(iters, 64))])
            need = sum(s.consumed for s in longer) + (iters - len(longer)) * longer[-1].consumed
        refreshed_fits = not (iters > fit and full.consumed > params.levels)
        boot_level = bootstrap_level if bootstrap_level is not None else (None if refreshed_fits else params.levels)
        bootstraps, boot_ops, booted_steps = None, None, set()
        if boot_level is not None:
            bootstraps, boot_ops, booted_steps = trace.planned_bootstraps(
                self, shape, params, [self.trace_flavor(t) for t in range(iters)], int(boot_level))
        if not refreshed_fits and bootstraps is None:
            raise DepthPlanError(f"mlp-diagonal: {iters} iterations need refreshes, but one full iteration needs "
                                 f"{full.consumed} levels and {params.name} offers {params.levels}: use n16384-deep or "
                                 "larger")
        steps = sorted(first.rotation_steps | full.rotation_steps | booted_steps)
        return Plan(need, params.levels, steps, iters, fit, trace.per_iteration(first.consumed, full.consumed),
                    3 * len(b1.offsets) + 1,  # x, xw, w1, delta0
                    [f"batch {layout.batch} samples x {layout.block} slots; W1 {len(b1.offsets)} diagonals, "
                     f"W2 {len(b2.offsets)} diagonals; {full.consumed} levels per full iteration, the first costs "
                     f"{first.consumed} (traced)"],
                    # refreshes add no operation: iterations past the chain cost a full one's
                    ops=trace.add_ops(*(s.ops for s in run[:iters]), *([full.ops] * max(0, iters - fit))),
                    chain_levels=[s.consumed for s in run[:iters]], refreshed_iteration_fits=refreshed_fits,
                    bootstraps=bootstraps, bootstrap_ops=boot_ops)

    # ------------------------------------------------------------------ tracing (models/trace.py)
    def trace_key(self):
        return (self.H, self.hidden_sig.coeffs, self.out_sig.coeffs, self.transpose, self.lr1, self.lr2, self.hb)

    def trace_flavor(self, t: int):
        """The first step (W2 = 0: only W2 is updated) or a full iteration."""
        return "first" if t == 0 else "full"

    def trace_setup(self, engine: Engine, n: int, d: int, c: int):
        """Zeros packed as ``client_encrypt`` packs them, all at the top; the fresh state: W1's diagonals."""
        layout, b1, b2, p1, p2 = self._geometry(n, d, c, engine.slots)
        zeros = [engine.encrypt(0.0) for _ in b1.offsets]
        s = Scales.of(self.lr1, self.lr2, n, self.out_sig)
        ctx = self._context(engine, (layout, b1, b2, p1, p2), {"a": s.a, "dsig": s.dsig}, zeros,
                            [engine.encrypt(0.0) for _ in b1.offsets], engine.encrypt(0.0),
                            params=engine.params if engine.can_bootstrap else None)
        return ctx, {"w1": zeros}

    def trace_iteration(self, engine: Engine, ctx, state, flavor):
        D1 = dict(zip(ctx["b1"].offsets, state["w1"]))
        D2 = None if flavor == "first" else dict(zip(ctx["b2"].offsets, state["w2"]))
        D1, D2 = self._iteration(engine, ctx, D1, D2)
        return {"w1": list(D1.values()), "w2": list(D2.values())}

    def _refreshed(self, shape, params) -> tuple:
        """The levels of a refreshed state (W1 and W2 diagonals at the top) for ``trace.step``."""
        _, b1, b2, _, _ = self._geometry(*shape, params.slots)
        return (("w1", (params.levels,) * len(b1.offsets)), ("w2", (params.levels,) * len(b2.offsets)))

    def _state(self, D1: dict, D2: dict | None) -> dict:
        return {"w1": list(D1.values())} if D2 is None else {"w1": list(D1.values()), "w2": list(D2.values())}

    # ------------------------------------------------------------------ client
    def _check_inputs(self, X, Y):
        X, Y = check_training_arrays(X, Y, trainer=self.name)
        W1 = init_hidden(self.H, X.shape[1], self.gain)
        check_interval(np.hstack([X, np.ones((len(X), 1))]) @ W1.T, self.hidden_sig, "initial hidden pre-activations")
        return X, Y, W1

    def client_check(self, X, Y):
        """The initial hidden pre-activations stay inside the hidden sigmoid's interval (IntervalError)."""
        self._check_inputs(X, Y)

    def client_encrypt(self, engine: Engine, X: np.ndarray, Y: np.ndarray, *, refresh: bool = False):
        X, Y, W1 = self._check_inputs(X, Y)
        n, d = X.shape
        c = Y.shape[1]
        layout, b1, b2, p1, p2 = self._geometry(n, d, c, engine.slots)
        boots = refresh == "bootstrap" and engine.can_bootstrap  # the server may also bootstrap inside iterations
        plan = self.plan(n, d, c, engine.params, bootstrap_level=engine.bootstrap_level if boots else None)
        plan.check(engine.params, refresh=refresh)
        s = Scales.of(self.lr1, self.lr2, n, self.out_sig)
        xh = s.x * np.hstack([X, np.ones((n, 1))])
        xrot = b1.rotated_inputs(xh)
        v1 = b1.diagonals(W1 / s.x)
        inputs = {
            # forward inputs divided by the sigmoid's bound: z1/B stays in [-1, 1], so the polynomial runs on
            # coefficients c_k·B^k of order 0.1-1 (raw degree-7 coefficients ~1e-10 lose all precision at scale 2^35)
            "x": [engine.encrypt(layout.place(xrot[t] / self._bound())) for t in b1.offsets],
            # the same inputs already moved to their gradient window (see diagonal.pack_sum_windowed)
            "xw": [engine.encrypt(np.roll(layout.place(xrot[t]), p1.off(t))) for t in b1.offsets],
            "w1": [engine.encrypt(layout.replicate(v1[t])) for t in b1.offsets],
            "delta0": [engine.encrypt(layout.place(s.o0 - Y))],
        }
        job = {"model": self.name, "config": dict(self.config), "n": n, "d": d, "c": c,
               "iterations": plan.iterations, "scales": {"a": s.a, "dsig": s.dsig, "o0": s.o0}}
        return inputs, job

    def client_decrypt(self, engine: Engine, outputs, job) -> dict[str, np.ndarray]:
        return self._weights([engine.decrypt(ct) for ct in outputs["w1"]],
                             [engine.decrypt(ct) for ct in outputs["w2"]], job, engine.slots)

    def state_weights(self, vectors, job):
        """W1, W2 of a decrypted refreshed state (names w1_<offset>, w2_<offset>: server_train)."""
        slots = len(next(iter(vectors.values()))[0])
        _, b1, b2, _, _ = self._geometry(job["n"], job["d"], job["c"], slots)
        return self._weights([vectors[f"w1_{t}"][0] for t in b1.offsets], [vectors[f"w2_{t}"][0] for t in b2.offsets],
                             job, slots)

    def twin_after(self, X, Y, iterations):
        return self.twin(X, Y, iterations=iterations)

    def _weights(self, w1: list, w2: list, job, slots: int) -> dict[str, np.ndarray]:
        """Decrypted diagonals (in the order of the packing's offsets) -> W1, W2 in the twin's units."""
        n, d, c = job["n"], job["d"], job["c"]
        _, b1, b2, _, _ = self._geometry(n, d, c, slots)
        s = Scales.of(self.lr1, self.lr2, n, self.out_sig)
        v1 = {t: np.asarray(v)[: self.H] for t, v in zip(b1.offsets, w1)}
        v2 = {t: np.asarray(v)[:c] for t, v in zip(b2.offsets, w2)}
        return {"W1": b1.matrix(v1) * s.x, "W2": b2.matrix(v2) / s.w2}

    # ------------------------------------------------------------------ server
    def server_train(self, engine: Engine, inputs, job, progress: Progress | None = None, *,
                     refresh: Refresh | None = None, checkpoint=None):
        """Train on ciphertexts. ``refresh(dict_of_cts, iteration) -> dict_of_cts`` (optional) is called when the
        weights have too few levels left for the next iteration (client-aided re-encryption or
        bootstrapping); without it the job must fit in one modulus chain. ``checkpoint`` (base.py):
        the weight diagonals (at their levels) and the iteration count after every iteration; a saved
        state resumes after its iteration."""
        n, d, c, iters = job["n"], job["d"], job["c"], int(job["iterations"])
        geometry = self._geometry(n, d, c, engine.slots)
        b1, b2 = geometry[1], geometry[2]
        shape = (n, d, c)
        if refresh is None and len(trace.chain(self, shape, engine.params,
                                               [self.trace_flavor(t) for t in range(iters)])) < iters:
            raise DepthPlanError(f"{iters} iterations do not fit in {engine.params.name} without a refresh")
        # refresh "bootstrap" (no round trip) on an engine that bootstraps: also inside iterations (inner_boot.py)
        boot = inner_boot.inside(refresh, engine)
        ctx = self._context(engine, geometry, job["scales"], inputs["x"], inputs["xw"], inputs["delta0"][0],
                            params=engine.params if boot else None)
        inner = 0
        D1 = dict(zip(b1.offsets, inputs["w1"]))
        D2, start = None, 0
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is not None:
            state, meta = saved
            start = int(meta.get("iteration", 0))
            if not (1 <= start <= iters and len(state.get("w1", [])) == len(b1.offsets)
                    and len(state.get("w2", [])) == len(b2.offsets)):
                raise DataError("the checkpoint does not hold this job's weights")
            D1, D2 = dict(zip(b1.offsets, state["w1"])), dict(zip(b2.offsets, state["w2"]))
        for it in range(start, iters):
            flavor = self.trace_flavor(it)
            if boot:  # traced: bootstrap the weights first, or inside the iteration only (fewer bootstraps)
                first = inner_boot.refresh_first(self, shape, engine, trace.levels_of(self._state(D1, D2)), flavor, it)
            else:
                first = refresh is not None and not trace.fits(self, shape, engine.params, self._state(D1, D2), flavor)
            if first:
                held = {f"w1_{t}": D1[t] for t in D1}
                if D2 is not None:
                    held.update({f"w2_{t}": D2[t] for t in D2})
                fresh = refresh(held, it)
                D1 = {t: fresh[f"w1_{t}"] for t in D1}
                D2 = None if D2 is None else {t: fresh[f"w2_{t}"] for t in D2}
                if not boot and not trace.fits(self, shape, engine.params, self._state(D1, D2), flavor):
                    raise DepthPlanError("refreshed weights still have too few levels for one full iteration")
            (D1, D2), done = inner_boot.counted(engine, refresh, lambda: self._iteration(engine, ctx, D1, D2))
            inner += done
            if checkpoint is not None:
                checkpoint.save({"w1": [D1[t] for t in b1.offsets], "w2": [D2[t] for t in b2.offsets]},
                                {"iteration": it + 1})
            if progress:
                progress(it + 1, iters, f"iteration {it + 1}/{iters}")
        self.run_stats = {"iterations": iters, "resumed_from": start, "bootstraps_in_iterations": inner}
        return {"w1": [D1[t] for t in b1.offsets], "w2": [D2[t] for t in b2.offsets]}

    def _context(self, engine: Engine, geometry: tuple, sc: dict, x: list, xw: list, delta0, params=None) -> dict:
        """What every iteration reads: the packing, the data, and the polynomials with the job's
        public scales folded in (sc: "a", "dsig"); with ``params`` (the job bootstraps inside iterations,
        models/inner_boot.py) the levels each bootstrap point needs (``_level_needs``)."""
        layout, b1, b2, p1, p2 = geometry
        powers = lambda c: np.array(c) * self._bound() ** np.arange(len(c))  # polynomial in z1/B  # noqa: E731
        sig = powers(self.hidden_sig.coeffs) * sc["a"]
        const = PlainVector(layout.replicate_real(np.r_[np.full(self.H, sig[0]), sc["a"] * self.hb]))
        ctx = {"layout": layout, "b1": b1, "b2": b2, "p1": p1, "p2": p2,
               "X": dict(zip(b1.offsets, x)), "XW": dict(zip(b1.offsets, xw)), "delta0": delta0,
               "odd": [0.0] + list(sig[1:]), "dsig": list(powers(self.hidden_sig.derivative().coeffs) * sc["dsig"]),
               "const": const, "masks": dg.transpose_masks(b2, layout) if self.transpose == "repacked" else None}
        ctx["needs"] = None if params is None else self._level_needs(ctx, params)
        return ctx

    def _level_needs(self, ctx: dict, params) -> dict:
        """Levels each in-iteration bootstrap point must hold, traced from the iteration's own functions on
        zeros (models/inner_boot.consumed, cached): "z1" the hidden pre-activation (σ_h, its rotations into
        W2's product and the W2 gradient, σ_h' into δ1), "delta2" the output error (Wᵀ·δ2 ⊙ σ_h' and the W2
        gradient), "delta1" the hidden error (the W1 gradient)."""
        b1, b2, p1, layout = ctx["b1"], ctx["b2"], ctx["p1"], ctx["layout"]
        base = (type(self).__qualname__, self.trace_key(), layout.batch, layout.block, tuple(b1.offsets), tuple(b2.offsets))

        def z1_probe(eng, top):
            z1 = top()
            ra = dg.rotations_of(eng, _hidden(eng, z1, ctx), b2.offsets)
            tops = {t: top() for t in b2.offsets}
            return [dg.matvec(eng, tops, ra), eng.mul(top(), ra[b2.offsets[0]]),
                    eng.mul(top(), eval_poly(eng, z1, ctx["dsig"]))]

        def delta2_probe(eng, top):
            delta2 = top()
            return [_backward(eng, {t: top() for t in b2.offsets}, delta2, top(), ctx["masks"]),
                    eng.mul(delta2, top())]

        def delta1_probe(eng, top):
            return [dg.pack_sum_windowed(eng, top(), {t: top() for t in b1.offsets}, p1, layout)]

        return {"z1": inner_boot.consumed(base + ("z1",), params, z1_probe),
                "delta2": inner_boot.consumed(base + ("delta2",), params, delta2_probe),
                "delta1": inner_boot.consumed(base + ("delta1",), params, delta1_probe)}

    def _iteration(self, engine: Engine, ctx: dict, D1: dict, D2: dict | None) -> tuple[dict, dict]:
        """One iteration on the weight diagonals (module docstring): with D2 None the W2-only first step."""
        b1, b2, p1, p2, layout, masks = ctx["b1"], ctx["b2"], ctx["p1"], ctx["p2"], ctx["layout"], ctx["masks"]
        delta0, needs = ctx["delta0"], ctx.get("needs")
        ensure = inner_boot.ensure_levels if needs is not None else (lambda eng, ct, need, what: ct)
        z1 = dg.matvec(engine, D1, ctx["X"])
        z1 = ensure(engine, z1, needs and needs["z1"], "the hidden pre-activation z1")
        ra = dg.rotations_of(engine, _hidden(engine, z1, ctx), b2.offsets)
        if D2 is None:
            delta2 = delta0
        else:
            delta2 = engine.add(dg.matvec(engine, D2, ra), delta0)
            delta2 = ensure(engine, delta2, needs and needs["delta2"], "the output error δ2")
            delta1 = _backward(engine, D2, delta2, eval_poly(engine, z1, ctx["dsig"]), masks)
            delta1 = ensure(engine, delta1, needs and needs["delta1"], "the hidden error δ1")
            q1 = dg.pack_sum_windowed(engine, delta1, ctx["XW"], p1, layout)
            upd1 = dg.unpack_all(engine, q1, p1)
            D1 = {t: engine.sub(D1[t], upd1[t]) for t in b1.offsets}
        q2 = dg.pack_sum(engine, {t: engine.mul(delta2, ra[t]) for t in b2.offsets}, p2, layout)
        upd = dg.unpack_all(engine, q2, p2)
        D2 = {t: -upd[t] for t in b2.offsets} if D2 is None else {t: engine.sub(D2[t], upd[t]) for t in b2.offsets}
        return D1, D2

    # ------------------------------------------------------------------ inference on the encrypted model
    # Case (a) of protocol/inference.py: new rows scored with the weights ``server_train`` returned,
    # still encrypted. The queries are packed exactly as the training rows ("x" of client_encrypt:
    # the job's scale √g1, the band's rotated inputs over the sigmoid's bound) in sample layouts of
    # the training's geometry (batch = next_pow2(n) rows per ciphertext, the same block), so the
    # weight diagonals, replicated over every block, are used as they are; the forward is the
    # training's own: z1 = dg.matvec, â = σ_h(z1) + bias unit, z2 = dg.matvec(D2, rot(â)) = c·W2·â.
    def query_packing(self, job: dict, slots: int) -> dict:
        """What a query bundle for this job's encrypted model must hold (query_check.py checks it):
        the training's rows per ciphertext, the shapes, and the forward's rotation steps."""
        layout, b1, b2, _, _ = self._geometry(job["n"], job["d"], job["c"], slots)
        return {"layout": "diagonal", "batch": layout.batch, "d": int(job["d"]), "H": self.H, "c": int(job["c"]),
                "per_group": len(b1.offsets), "steps": [s for s in dg.chain_steps(b2.offsets) if s]}

    def pack_queries(self, job: dict, X: np.ndarray, slots: int) -> list[np.ndarray]:
        """Preprocessed query rows (n × d) -> per group of ``batch`` rows, one slot vector per W1 diagonal."""
        layout, b1, _, _, _ = self._geometry(job["n"], job["d"], job["c"], slots)
        ql = dg.SampleLayout(layout.batch, slots)
        sx = float(job["scales"].get("x", Scales.of(self.lr1, self.lr2, job["n"], self.out_sig).x))
        out = []
        for start in range(0, X.shape[0], ql.batch):
            rows = np.zeros((ql.batch, X.shape[1]))
            part = X[start:start + ql.batch]
            rows[:len(part)] = part
            xrot = b1.rotated_inputs(sx * np.hstack([rows, np.ones((ql.batch, 1))]))
            out += [ql.place(xrot[t] / self._bound()) for t in b1.offsets]
        return out

    def forward_levels(self) -> int:
        """Levels W1 needs for the forward (z1, σ_h, z2); W2 needs one."""
        return self.hidden_sig.depth + 2

    def encrypted_scores(self, engine: Engine, X: list, weights: dict, job: dict) -> list:
        """The training's forward on query ciphertexts ``X`` (pack_queries' vectors, encrypted) with
        the encrypted weights {"w1": [...], "w2": [...]}: one ciphertext of c·(linear scores) per group."""
        layout, b1, b2, _, _ = self._geometry(job["n"], job["d"], job["c"], engine.slots)
        ql = dg.SampleLayout(layout.batch, engine.slots)
        D1 = dict(zip(b1.offsets, weights["w1"]))
        D2 = dict(zip(b2.offsets, weights["w2"]))
        odd, const = self._hidden_forward(job["scales"], ql)
        m = len(b1.offsets)
        out = []
        for g in range(len(X) // m):
            z1 = dg.matvec(engine, D1, dict(zip(b1.offsets, X[g * m:(g + 1) * m])))
            a = engine.add(eval_poly(engine, z1, odd), const)
            out.append(dg.matvec(engine, D2, dg.rotations_of(engine, a, b2.offsets)))
        return out

    def read_scores(self, vectors: list, job: dict, n: int) -> np.ndarray:
        """Decrypted ``encrypted_scores`` -> n × c linear scores W2·[σ_h(W1·[x, 1]), hb]."""
        layout = self._geometry(job["n"], job["d"], job["c"], len(vectors[0]))[0]
        ql = dg.SampleLayout(layout.batch, len(vectors[0]))
        slope = float(job["scales"].get("c", self.out_sig.coeffs[1]))
        return np.concatenate([ql.read(v, job["c"]) for v in vectors])[:n] / slope

    def linear_scores(self, weights: dict, X: np.ndarray) -> np.ndarray:
        """Plaintext twin of ``read_scores``: W2·[σ_h(W1·[x, 1]), hb] on preprocessed rows."""
        z1 = np.hstack([X, np.ones((len(X), 1))]) @ np.asarray(weights["W1"]).T
        return np.hstack([self.hidden_sig(z1), np.full((len(X), 1), self.hb)]) @ np.asarray(weights["W2"]).T

    def _hidden_forward(self, sc: dict, layout) -> tuple[list, PlainVector]:
        """The hidden sigmoid's odd part in z1/B, scaled by â's √(c·g2), and the masked constant
        (σ_h's constant term on the hidden units, √(c·g2)·hb on the bias unit): server_train's."""
        sig = np.array(self.hidden_sig.coeffs) * self._bound() ** np.arange(len(self.hidden_sig.coeffs)) * sc["a"]
        const = PlainVector(layout.replicate_real(np.r_[np.full(self.H, sig[0]), sc["a"] * self.hb]))
        return [0.0] + list(sig[1:]), const

    # ------------------------------------------------------------------ plaintext
    def twin(self, X: np.ndarray, Y: np.ndarray, iterations: int | None = None, history: list | None = None):
        X, Y, W1 = self._check_inputs(X, Y)
        it = iterations if iterations is not None else (self.iterations or 1)
        return twin_train(X, Y, W1, int(it), self.hidden_sig, self.out_sig, self.lr1, self.lr2, self.hb, history)

    def weight_shapes(self, n_features, n_classes):
        # W1: hidden x (features + bias); W2: classes x (hidden + the hidden bias unit)
        return {"W1": (self.H, int(n_features) + 1), "W2": (int(n_classes), self.H + 1)}

    def predict_scores(self, weights, X: np.ndarray) -> np.ndarray:
        return predict_scores(weights["W1"], weights["W2"], np.asarray(X, dtype=np.float64), self.hidden_sig,
                              self.out_sig, self.hb)


# ---------------------------------------------------------------------- defaults chosen on the client
# The sigmoid (degree 7 on [-24, 24]) and the hidden size 4 stay as studied for Iris (DEFAULTS above);
# ``plan_defaults`` picks the learning-rate pair and the number of iterations on the plaintext twin.
LEARNING_RATE_PAIRS = [(16.0, 8.0), (8.0, 4.0), (32.0, 16.0)]   # (output η2, hidden η1)
HOLD_OUT_MIN_ROWS = 400      # fewer rows: rank candidates on the training loss (mlp_defaults.choose)
MAX_DEFAULT_ITERATIONS = 40   # one refresh round trip per full iteration at n16384-deep (~2-4 s each on SEAL)


def _trace(cfg: dict, X, Y, Xv, Yv, T: int):
    from . import mlp_defaults

    tr = DiagonalMLPTrainer(**{**cfg, "iterations": T})
    hist: list = []
    tr.twin(X, Y, iterations=T, history=hist)
    out = mlp_defaults.Trace([], [], [])
    worst = 0.0
    for h in hist:
        z = h["max_abs_z1"]
        worst = max(worst, z / tr._bound() if np.isfinite(z) else np.inf)
        s = tr.predict_scores(h, Xv)
        out.val_acc.append(float(np.mean(s.argmax(1) == Yv.argmax(1))))
        out.val_loss.append(mlp_defaults.bce(s, Yv))
        out.reach.append(worst)
    return out


def _hidden(eng, z1, ctx: dict):
    """The hidden activations â = σ_h(z1) (odd part) + the masked constant and bias unit."""
    return eng.add(eval_poly(eng, z1, ctx["odd"]), ctx["const"])


def _backward(eng, D2: dict, delta2, dsig, masks):
    """δ1 = (W2ᵀ·δ2) ⊙ σ_h'(z1) on W2's diagonals (or their naive re-pack with ``masks``)."""
    u = dg.matvec_transpose(eng, D2, delta2) if masks is None else dg.matvec_transpose_repacked(eng, D2, delta2, masks)
    return eng.mul(u, dsig)


def plan_defaults(X, Y, config: dict | None = None, *, refresh: bool = True, params=None) -> tuple[dict, dict]:
    """The complete mlp-diagonal config for this data: the user's keys kept; learning rates and
    iterations chosen on the plaintext twin (models/mlp_defaults.py) so that every hidden
    pre-activation of the planned run stays inside 90 % of the sigmoid's interval. Returns (config, report)."""
    from hetrain.ckks import get_params

    from . import mlp_defaults

    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    given = dict(config or {})
    base = {k: v for k, v in given.items() if k != "iterations"}
    pairs = [(given.get("learning_rate", DEFAULTS["learning_rate"]),
              given.get("hidden_learning_rate", DEFAULTS["hidden_learning_rate"]))] \
        if ("learning_rate" in given or "hidden_learning_rate" in given) else LEARNING_RATE_PAIRS
    cands = [{**base, "learning_rate": a, "hidden_learning_rate": b} for a, b in pairs]
    if refresh:
        T_max = MAX_DEFAULT_ITERATIONS
    else:
        p = get_params(params or "n16384-deep")
        T_max = max(1, DiagonalMLPTrainer(**cands[0]).plan(X.shape[0], X.shape[1], Y.shape[1], p).iterations_that_fit)
    fixed = int(given["iterations"]) if given.get("iterations") is not None else None

    def final_reach(cand, T):
        return _trace(cand, X, Y, X[:1], Y[:1], T).reach

    # the job as the trainer alone runs it (the user's options, DEFAULTS for the rest, iterations: given or
    # as many as one chain holds): kept when no candidate fits the margin but it stays inside the interval
    own = {k: v for k, v in given.items() if k != "iterations"}
    try:
        p_own = get_params(params or "n16384-deep")
        fallback = (own, fixed or DiagonalMLPTrainer(**own).plan(X.shape[0], X.shape[1], Y.shape[1],
                                                                  p_own).iterations_that_fit)
    except HetrainUserError:  # not even one iteration fits: the pipeline's depth check says so
        fallback = None
    if fallback is not None and fallback[1] < 1:
        fallback = None
    cfg, report = mlp_defaults.choose(cands, _trace, final_reach, X, Y, T_max, fixed, hold_out=len(X) >= HOLD_OUT_MIN_ROWS,
                                      fallback=fallback)
    report["max_iterations"] = T_max
    return cfg, report
