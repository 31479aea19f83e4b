"""Mini-batch, multi-epoch logistic regression whose encrypted state is refreshed between steps.

The seed trainer (``mlr``) folds its whole schedule into one circuit from W₀ = 0, so it stops
where the modulus chain ends. This one keeps the weights W as ciphertexts (the blocked layout's
weight vectors, ``BlockedPacking.pack_weights``) and applies one step per mini-batch:

    z = X_b·Wᵀ (1 level) → q = M ⊙ (Y_b − σ̃(z)) (sigmoid depth, mask folded) → E = spread(q)
    → W ← W + Eᵀ·X̃_b  (1 level; X̃_b = lr · X_b · diag(B̄_b), so the update itself is free)

so a step costs 2 + depth(σ̃) levels (4 with the published degree-3 sigmoid). Between steps the
state must be brought back to a high level by the ``refresh`` hook of ``server_train``
(models/base.py): the client decrypts and re-encrypts it over the refresh channel (SEAL), or the
server bootstraps (a backend that can). At every epoch end the ``monitor`` hook lets the client
read its validation accuracy and answer continue/stop (early stopping); the ``checkpoint`` hook
stores the state after every step so a killed job resumes. The protocol wires the hooks
(hetrain.protocol.server / refresh); this module holds the arithmetic and the loop.

Config keys:
    epochs         int, default 10: passes over the training rows
    batch_size     int, default 128: rows per mini-batch (the last batch may be smaller; its
                   missing rows are zeros, which add exactly nothing to the gradient)
    learning_rate  float, default 4.0: multiplier on the quadratic-gradient step B̄_b ⊙ G
    sigmoid        str, default "published" (get_sigmoid spec), evaluated on t = z / bound
                   (1/bound is folded into the forward copy of X, so it costs nothing) in the
                   Chebyshev basis (circuits.poly.eval_cheb: same depth, O(1) coefficients)
    patience       int, default 3: stop after this many epochs in which neither the validation
                   accuracy nor the validation loss improved (0: never stop early)
    momentum       "none" (default) or β in [0, 1): heavy-ball momentum, D ← β·D + step,
                   W ← W + D (the state then holds D as well; β·D is taken at the top level,
                   off the critical path, so a step costs no extra level)
    weight_decay   float in [0, 1), default 0: W's non-bias weights shrink by this fraction per
                   step (an L2 penalty; the mask is public, the product sits at the top level)
    layout         "blocked" only ("auto" accepted).

The defaults above are the trainer's; ``hetrain fit`` and the estimators choose their values
per data set with the client's planner (models/mlr_minibatch_plan.py) before any key is made.

B̄_b is Chiang's fixed diagonal Hessian bound (mlr_twin.quadratic_gradient_diag; J. Chiang, "Privacy-Preserving Logistic Regression Training with A Faster Gradient Variant", arXiv:2201.10838)
computed by the client from batch b's own rows.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from hetrain.circuits import blocked_matmul
from hetrain.circuits.approx import check_interval, get_sigmoid
from hetrain.circuits.poly import eval_cheb
from hetrain.circuits.tasks import run_tasks
from hetrain.circuits.packing import BlockedPacking
from hetrain.ckks import PRESETS, PlainVector, get_params
from hetrain.errors import DataError, HetrainUserError

from . import trace
from .base import check_training_arrays, DepthPlanError, Plan, Trainer, register
from .configs import MiniBatchConfig
from .mlr_twin import add_bias, quadratic_gradient_diag

RETRACT = 0.9  # the client keeps every sigmoid input of the next step within 90% of the interval

DEFAULTS = MiniBatchConfig.defaults()  # the one source: models/configs.py


@dataclasses.dataclass
class Batch:
    """One mini-batch as the server holds it (ciphertexts) or the twin holds it (arrays)."""

    X: list        # forward copy of X_b (bias column included), blocked layout
    Xt: list       # lr · X_b · diag(B̄_b) in the gradient's permuted order
    Ym: list       # labels masked to the valid forward slots (so no level is spent masking)


@register
class MiniBatchMLR(Trainer):
    """The refreshed mini-batch trainer (see module docstring)."""

    name = "mlr-minibatch"
    summary = ("mini-batch logistic regression, one sigmoid per class, refreshed between chains; what --model mlr "
               "runs with refresh (planned, validated, early-stopped)")
    capabilities = frozenset({"refresh", "monitor", "checkpoint", "executor"})

    def __init__(self, **config) -> None:
        cfg = self.merge_config(DEFAULTS, config)
        for key in ("epochs", "batch_size", "patience"):
            cfg[key] = int(cfg[key])
        cfg["learning_rate"] = float(cfg["learning_rate"])
        if cfg["epochs"] < 1 or cfg["batch_size"] < 1 or cfg["patience"] < 0:
            raise HetrainUserError("epochs and batch_size must be >= 1, patience >= 0")
        if not np.isfinite(cfg["learning_rate"]) or cfg["learning_rate"] <= 0:
            raise HetrainUserError("learning_rate must be a positive number")
        if cfg["layout"] not in ("blocked", "auto"):
            raise HetrainUserError(f"{self.name} supports layout 'blocked' only, got {cfg['layout']!r}")
        self.beta = _momentum_beta(cfg["momentum"], self.name)
        cfg["weight_decay"] = float(cfg["weight_decay"])
        if not 0.0 <= cfg["weight_decay"] < 1.0:
            raise HetrainUserError(f"weight_decay must be in [0, 1), got {cfg['weight_decay']:g}")
        try:
            self.approx = get_sigmoid(cfg["sigmoid"])
        except ValueError as e:
            raise HetrainUserError(str(e)) from None
        self.config = cfg

    # ------------------------------------------------------------------ planning
    @property
    def levels_per_step(self) -> int:
        """Levels one step consumes, traced (models/trace.py) on the deepest preset with one feature and
        one class (a step's depth does not depend on the shapes); more than any preset has when it does
        not fit even there."""
        deepest = max(PRESETS.values(), key=lambda p: (p.levels, p.poly_modulus_degree))
        s = trace.step(self, (self.config["batch_size"], 1, 1), deepest, None, "depth")
        return s.consumed if s.fits else deepest.levels + 1

    def packing(self, d: int, c: int, slots: int) -> BlockedPacking:
        """The blocked packing of one mini-batch (batch_size rows × (d + 1) columns, bias included) for c
        classes in ciphertexts of ``slots`` slots (BlockedPacking.choose; raises LayoutError when the
        classes, rounded up to a power of two, need more than half the slots)."""
        return BlockedPacking.choose(self.config["batch_size"], d + 1, c, slots)

    def batches_of(self, n: int) -> list[np.ndarray]:
        """Row indices of each mini-batch of n rows, in order: ⌈n / batch_size⌉ arrays of batch_size
        indices (the last one may be shorter)."""
        b = self.config["batch_size"]
        return [np.arange(s, min(s + b, n)) for s in range(0, n, b)]

    def plan(self, n_samples: int, n_features: int, n_classes: int, params) -> Plan:
        """Traced (models/trace.py): steps from a fresh state until one does not fit the levels."""
        p = get_params(params)
        packing = self.packing(n_features, n_classes, p.slots)
        shape = (self.config["batch_size"], n_features, n_classes)
        run = trace.chain(self, shape, p, [0] * (p.levels + 1))
        fit = len(run)
        one = trace.step(self, shape, p, None, "depth")  # the step's own depth (the batch at the top)
        if not one.fits:
            one = trace.deep_step(self, shape, p, None, "depth")
        per = one.consumed
        steps = self.config["epochs"] * len(self.batches_of(n_samples))
        notes = [f"layout {packing.describe()}", f"{per} levels per step (traced), {fit} step(s) between refreshes",
                 f"{steps} steps = {self.config['epochs']} epochs x {len(self.batches_of(n_samples))} batches"]
        # All steps in one chain need steps x per levels; with a refresh one step must fit
        # (plan.check(params, refresh=True)).
        return Plan(levels_needed=steps * per, levels_available=p.levels, rotation_steps=sorted(one.rotation_steps),
                    iterations=steps, iterations_that_fit=fit,
                    levels_per_iteration=trace.per_iteration(per, per),
                    # per batch X and X̃ (groups x feature blocks each) and Ym (groups); the state W (and D)
                    n_input_ciphertexts=len(self.batches_of(n_samples)) * (2 * packing.n_groups * packing.n_fblocks
                                                                           + packing.n_groups)
                    + len(self.state_names) * packing.n_fblocks,
                    notes=notes, ops={k: v * steps for k, v in one.ops.items()},
                    chain_levels=[s.consumed for s in run[:steps]])

    # ------------------------------------------------------------------ tracing (models/trace.py)
    def trace_key(self):
        c = self.config
        return (c["sigmoid"], c["batch_size"], self.beta > 0, c["weight_decay"] > 0)

    def trace_flavor(self, t: int):
        """Every step is the same circuit: 0, on the batch at the levels the client encrypts it
        (``data_levels``); "depth" (``levels_per_step``): on a batch at the top."""
        return 0

    def trace_setup(self, engine, n: int, d: int, c: int):
        """One batch of zeros at the top (``trace_iteration`` lowers it where the client encrypts it)
        and the fresh state W (and D) at the top."""
        packing = self.packing(d, c, engine.slots)
        rows = min(n, self.config["batch_size"])
        Xb = np.zeros((rows, d + 1))
        batch = Batch([engine.encrypt(v) for v in packing.pack_forward_data(Xb)],
                      [engine.encrypt(v) for v in packing.pack_gradient_data(Xb)],
                      [engine.encrypt(v) for v in packing.pack_labels(np.zeros((rows, c)))])
        W = self.initial_weights(d, c, engine.slots)
        state = {name: [engine.encrypt(v) for v in W] for name in self.state_names}
        return (packing, batch), state

    def trace_iteration(self, engine, ctx, state, flavor):
        packing, batch = ctx
        if flavor != "depth":
            lx, lt = self.data_levels(engine.max_level)
            batch = Batch(*([engine.drop_to_level(ct, lv) for ct in cts]
                            for cts, lv in ((batch.X, lx), (batch.Xt, lt), (batch.Ym, lt))))
        return self.step(engine, packing, state, batch)

    # ------------------------------------------------------------------ client side (plaintext)
    def check_data(self, X, Y) -> tuple[np.ndarray, np.ndarray]:
        """X (n × d) and one-hot Y (n × c) as float64 arrays (base.check_training_arrays; raises DataError)."""
        return check_training_arrays(X, Y)

    def plain_batches(self, X, Y, slots: int) -> list[Batch]:
        """The vectors the client encrypts, per mini-batch (also the twin's input)."""
        X, Y = self.check_data(X, Y)
        packing = self.packing(X.shape[1], Y.shape[1], slots)
        fmasks = packing.forward_masks()
        out = []
        for rows in self.batches_of(X.shape[0]):
            Xb = add_bias(X[rows])
            Xt = self.config["learning_rate"] * Xb * quadratic_gradient_diag(Xb)
            labels = packing.pack_labels(Y[rows])
            out.append(Batch(packing.pack_forward_data(Xb / self.approx.bound), packing.pack_gradient_data(Xt),
                             [y * m for y, m in zip(labels, fmasks)]))
        return out

    def data_levels(self, max_level: int) -> tuple[int, int]:
        """Levels at which the client encrypts a batch: (X, X̃ and Ym).

        A refresh cycle runs ⌊L/per⌋ steps from the top, so the state never uses more than the
        top per·⌊L/per⌋ levels: X starts there, and X̃ and Ym where the cycle's first step first
        needs them (after the forward product and the sigmoid). Lower ciphertexts are smaller
        (≈2.3x less memory at n16384, where a cycle is one step) and cost the same refreshes.
        """
        per = self.levels_per_step
        top = per * (max_level // per)
        return top, max(top - 1 - self.approx.depth, 0)

    def encrypt_batches(self, engine, X, Y) -> list[Batch]:
        """Per batch, its ciphertexts at ``data_levels``, each list encrypted when iterated
        (LazyEncryption: the client never holds all of them; ``list()`` one to keep it)."""
        lx, lt = self.data_levels(engine.max_level)
        return [Batch(LazyEncryption(engine, b.X, lx), LazyEncryption(engine, b.Xt, lt), LazyEncryption(engine, b.Ym, lt))
                for b in self.plain_batches(X, Y, engine.slots)]

    def initial_weights(self, n_features: int, n_classes: int, slots: int) -> list[np.ndarray]:
        """W₀ = 0 (n_classes × (1 + n_features)) packed as the blocked layout's weight vectors, ``slots`` each."""
        return self.packing(n_features, n_classes, slots).pack_weights(np.zeros((n_classes, n_features + 1)))

    @property
    def state_names(self) -> tuple[str, ...]:
        """The encrypted state between steps: W, and the momentum D when β > 0."""
        return ("W", "D") if self.beta > 0 else ("W",)

    def decay_vectors(self, packing: BlockedPacking) -> list[np.ndarray]:
        """weight_decay on every real non-bias weight slot, 0 on the bias and unused slots (public)."""
        M = np.full((packing.c, packing.d), self.config["weight_decay"])
        M[:, 0] = 0.0
        return packing.pack_weights(M)

    def unpack(self, vectors, n_features: int, n_classes: int, slots: int) -> np.ndarray:
        """The weight matrix (n_classes × (1 + n_features), bias column first) from decrypted weight vectors."""
        return self.packing(n_features, n_classes, slots).unpack_weights(vectors)

    def check_weights(self, W: np.ndarray, X: np.ndarray) -> None:
        """Client-side guard: the next sigmoid inputs X·Wᵀ must lie in the approximation's interval."""
        check_interval(add_bias(X) @ W.T, self.approx, what="sigmoid inputs for the next step")

    # ------------------------------------------------------------------ Trainer contract (client)
    def client_encrypt(self, engine, X, Y, *, refresh: bool = False):
        """Inputs: W (initial weights, zeros) and per batch b: X{b}, Xt{b}, Ym{b}. (``refresh``: no
        plan check here; the protocol checks this trainer's plan itself.)"""
        X, Y = self.check_data(X, Y)
        d, c = X.shape[1], Y.shape[1]
        inputs = {name: [engine.encrypt(v) for v in self.initial_weights(d, c, engine.slots)]
                  for name in self.state_names}
        # encrypted as the bundle is written, one ciphertext in memory at a time: 1,600 MNIST rows
        # weigh ~4.5 GB of ciphertexts at n16384
        for b, batch in enumerate(self.encrypt_batches(engine, X, Y)):
            inputs.update({f"X{b}": batch.X, f"Xt{b}": batch.Xt, f"Ym{b}": batch.Ym})
        job = {"model": self.name, "config": dict(self.config), "d": d, "c": c,
               "n_batches": len(self.batches_of(X.shape[0]))}
        return inputs, job

    def client_decrypt(self, engine, outputs, job):
        return {"W": self.unpack([engine.decrypt(ct) for ct in outputs["W"]], job["d"], job["c"], engine.slots)}

    def twin(self, X, Y, steps: int | None = None, steps_per_refresh: int | None = None):
        """The plaintext twin after ``steps`` steps (default: every epoch, no early stop).

        ``steps_per_refresh``: with client refreshes every that many steps, the client's
        retraction (``retract``) is replayed at the same points; None: no retraction (bootstrap)."""
        X, Y = self.check_data(X, Y)
        total = self.config["epochs"] * len(self.batches_of(X.shape[0])) if steps is None else steps
        state = self.initial_state(X.shape[1], Y.shape[1])
        batches = [self.twin_batch(X, Y, rows) for rows in self.batches_of(X.shape[0])]
        for step in range(total):
            if steps_per_refresh and step and step % steps_per_refresh == 0:
                state = self.retract(state, X)
            state = self.twin_update(state, batches[step % len(batches)])
        return dict(state)

    def initial_state(self, d: int, c: int) -> dict:
        """The twin's starting state: W = 0 (c × (1 + d)), and the momentum D = 0 of the same shape when β > 0."""
        W = np.zeros((c, d + 1))
        return {"W": W, "D": np.zeros_like(W)} if self.beta > 0 else {"W": W}

    def retraction(self, W: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Per-class factors s_c = min(1, RETRACT·bound / max_i |x_i·w_c|) over the training rows X.

        The client applies them at every refresh (``retract``): a projection-like step that keeps
        every sigmoid input of the next step within RETRACT of the interval, so a run cannot leave
        it however the weights grow (max-norm regularisation, chosen by the interval)."""
        z = np.abs(add_bias(X) @ W.T).max(axis=0) if X.shape[0] else np.zeros(W.shape[0])
        limit = RETRACT * self.approx.bound
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.isfinite(z) & (z > limit), limit / z, np.where(np.isfinite(z), 1.0, 0.0))

    def retract(self, state: dict, X: np.ndarray) -> dict:
        """Scale each class's W (and its momentum D) by ``retraction(W, X)`` (weight matrices)."""
        s = self.retraction(state["W"], X)
        return {k: v * s[:, None] for k, v in state.items()}

    def weight_shapes(self, n_features, n_classes):
        return {"W": (int(n_classes), int(n_features) + 1)}

    def predict_scores(self, weights, X):
        return add_bias(np.asarray(X, dtype=np.float64)) @ np.asarray(weights["W"]).T

    # ------------------------------------------------------------------ server side: the loop
    def server_train(self, engine, inputs, job, progress=None, *, refresh=None, monitor=None, checkpoint=None,
                     executor=None):
        """Steps over mini-batches and epochs with the base.py hooks: ``refresh`` when the state's
        level is too low for the next step, ``monitor.evaluate`` at each epoch end (continue/stop;
        merged with the refresh when both are due), ``checkpoint`` after every step (resume),
        ``executor``: each step's per-group and per-feature-block tasks on its workers (``step``).

        Per-step timings end up in ``self.run_stats`` (the server adds them to its stats)."""
        nb, d, c = int(job["n_batches"]), int(job["d"]), int(job["c"])
        try:
            batches = [Batch(inputs[f"X{b}"], inputs[f"Xt{b}"], inputs[f"Ym{b}"]) for b in range(nb)]
            state = {name: list(inputs[name]) for name in self.state_names}
        except KeyError as exc:
            raise DataError(f"encrypted inputs lack {exc}") from None
        packing = self.packing(d, c, engine.slots)
        total = self.config["epochs"] * nb
        shape = (self.config["batch_size"], d, c)
        plan = self.plan(self.config["batch_size"] * nb, d, c, engine.params)
        per = plan.levels_per_later_iteration
        if plan.iterations_that_fit < 1:
            raise DepthPlanError(f"one step needs {per} levels, parameters {engine.params.name} have {engine.max_level}")
        if refresh is None and total > plan.iterations_that_fit:
            raise DepthPlanError(f"{total} steps need {total * per} levels without refresh; {engine.params.name} "
                                 f"fits {plan.iterations_that_fit}: use --refresh client or --refresh bootstrap")
        start = 0
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is not None:
            state, meta = saved
            start = int(meta["step"])
        step_s, refresh_s, before = [], [], []
        stopped, pending, step = False, 0.0, start
        for step in range(start, total):
            epoch, b = divmod(step, nb)
            if not trace.fits(self, shape, engine.params, state, 0):  # the next step needs a refresh first
                t0 = time.perf_counter()
                state = refresh(state, step=step)  # step: steps done (for the client's history)
                refresh_s.append(time.perf_counter() - t0)
                pending += refresh_s[-1]
            before.append(pending)
            pending = 0.0
            t0 = time.perf_counter()
            state = self.step(engine, packing, state, batches[b], executor)
            step_s.append(time.perf_counter() - t0)
            if checkpoint is not None:
                checkpoint.save(state, {"step": step + 1})
            if progress is not None:
                progress(step + 1, total, f"epoch {epoch + 1} batch {b + 1}/{nb}")
            if b == nb - 1 and monitor is not None and step + 1 < total:  # the last epoch: on download
                # the client re-encrypts in the same trip when the next step needs it anyway,
                # unless the server refreshes by itself (bootstrap)
                want = (refresh is not None and getattr(refresh, "via_client", True)
                        and not trace.fits(self, shape, engine.params, state, 0))
                t0 = time.perf_counter()
                fresh, stopped = monitor.evaluate(state, step + 1, epoch + 1, refresh=want)
                if fresh is not None:
                    state = fresh
                    refresh_s.append(time.perf_counter() - t0)
                    pending = refresh_s[-1]
                if stopped:
                    break
        done = start if start >= total else step + 1
        self.run_stats = {"steps": done, "resumed_from": start, "stopped_early": stopped, "step_s": step_s,
                          "refresh_s": refresh_s, "refresh_before_step_s": before, "levels_per_step": per}
        return state

    # ------------------------------------------------------------------ server side (encrypted)
    def step(self, engine, packing: BlockedPacking, state: dict, batch: Batch, executor=None) -> dict:
        """One encrypted step on one batch (see ``twin_update``): the new state, levels_per_step lower.

        Two rounds of independent tasks (circuits/tasks.py ``run_tasks``: on ``executor``'s workers,
        or here in order without one; the same operations on the same ciphertexts either way):
        per sample group g, its residual E[g] (``_residual_group``: forward, masked sigmoid, spread);
        then per feature block h, the new W[h] (and D[h]) (``_update_block``: gradient, decay,
        momentum, update). The decay product W ⊙ decay and β·D are taken at the state's (top)
        level, so they are done long before the gradient arrives and cost no level on the critical path."""
        W = state["W"]
        G, H = packing.n_groups, packing.n_fblocks
        fmasks = [PlainVector(m) for m in packing.forward_masks()]
        cheb = self.approx.unit_cheb()  # the twin's polynomial, in the basis that keeps CKKS precision
        E = run_tasks(engine, executor, _residual_group,
                      [(batch.X[g * H:(g + 1) * H], batch.Ym[g], fmasks[g]) for g in range(G)], (packing, W, cheb))
        decay = ([PlainVector(m) for m in self.decay_vectors(packing)] if self.config["weight_decay"] > 0
                 else [None] * H)
        D = state["D"] if self.beta > 0 else [None] * H
        new = run_tasks(engine, executor, _update_block,
                        [([batch.Xt[g * H + h] for g in range(G)], W[h], decay[h], D[h]) for h in range(H)],
                        (packing, E, self.beta))
        if self.beta > 0:
            return {"W": [w for w, _ in new], "D": [d for _, d in new]}
        return {"W": [w for w, _ in new]}

    # ------------------------------------------------------------------ plaintext twin
    def twin_batch(self, X: np.ndarray, Y: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """(X_b / bound, X̃_b, Y_b): what batch ``rows`` holds, as the client encrypts it."""
        Xb = add_bias(X[rows])
        return Xb / self.approx.bound, self.config["learning_rate"] * Xb * quadratic_gradient_diag(Xb), Y[rows]

    def twin_update(self, state: dict, batch: tuple[np.ndarray, ...], check: bool = True) -> dict:
        """The encrypted step in NumPy: t = (X_b/bound)·Wᵀ, step = (Y_b − σ̃(t))ᵀ·X̃_b − decay ⊙ W,
        D ← β·D + step, W ← W + D (β = 0: W ← W + step). Raises DataError when a sigmoid input
        leaves the approximation's interval (``check``)."""
        Xf, Xt, Yb = batch
        W = state["W"]
        t = Xf @ W.T
        if check:
            check_interval(t * self.approx.bound, self.approx, what="sigmoid inputs (twin)")
        step = (Yb - np.polynomial.polynomial.polyval(t, self.approx.unit_coeffs())).T @ Xt
        if self.config["weight_decay"] > 0:
            decay = np.full(W.shape[1], self.config["weight_decay"])
            decay[0] = 0.0
            step = step - decay * W
        if self.beta > 0:
            D = step + self.beta * state["D"]
            return {"W": W + D, "D": D}
        return {"W": W + step}

    def twin_step(self, W: np.ndarray, X: np.ndarray, Y: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """One step without momentum on the weight matrix (classes × (1 + features))."""
        return self.twin_update({"W": W, "D": np.zeros_like(W)}, self.twin_batch(X, Y, rows))["W"]


def _residual_group(engine, packing: BlockedPacking, W: list, cheb, Xg: list, ym, fmask):
    """E[g] of one sample group g (an executor task): spread(Ym[g] − fmask ⊙ σ̃(t)), t = the group's
    forward product X[g]·Wᵀ (blocked_matmul.forward_group), σ̃ in the Chebyshev basis (eval_cheb;
    the mask rides on its coefficients, and a worker encodes it itself)."""
    t = blocked_matmul.forward_group(engine, packing, W, Xg)
    return blocked_matmul.spread_group(engine, packing, engine.sub(ym, eval_cheb(engine, t, cheb, fmask)))


def _update_block(engine, packing: BlockedPacking, E: list, beta: float, Xth: list, w, decay, d):
    """(W[h], D[h]) after the step, for one feature block h (an executor task): the gradient block
    Eᵀ·X̃[:, h] (blocked_matmul.gradient_block), minus w ⊙ decay (``decay`` a PlainVector, None: no
    weight decay), D[h] ← step + β·D[h] (β > 0; else D[h] is None) and W[h] ← W[h] + D[h] (or + step)."""
    step = blocked_matmul.gradient_block(engine, packing, E, Xth)
    if decay is not None:
        step = engine.sub(step, engine.mul_plain(w, decay))
    if beta > 0:
        d = engine.add(step, engine.mul_scalar(d, beta))
        return engine.add(w, d), d
    return engine.add(w, step), None


class LazyEncryption:
    """A sequence of ciphertexts encrypted when iterated (plaintext vectors kept, ciphertexts not):
    what files.write_job streams to disk without holding the whole input in memory."""

    def __init__(self, engine, vectors, level: int) -> None:
        self.engine, self.vectors, self.level = engine, list(vectors), level

    def __len__(self) -> int:
        return len(self.vectors)

    def __iter__(self):
        for v in self.vectors:
            yield self.engine.encrypt(v, level=self.level)


def _momentum_beta(value, name: str) -> float:
    """'none' -> 0; a number in [0, 1) -> β (heavy-ball momentum)."""
    if value in ("none", None):
        return 0.0
    try:
        beta = float(value)
    except (TypeError, ValueError):
        beta = float("nan")
    if not 0.0 <= beta < 1.0:
        raise HetrainUserError(f"{name}: momentum must be 'none' or a number β in [0, 1) (heavy ball), got {value!r}")
    return beta

