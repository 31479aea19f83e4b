"""Encrypted multiclass logistic regression (one sigmoid per class, quadratic-gradient ascent).

Config keys (all optional):
    iterations      int, default 3 (the most that fit n16384-deep; n32768 fits 5)
    learning_rate   float, default 4.0 (a multiplier on the quadratic-gradient step B̄⊙G)
    sigmoid         str, default "published" (any hetrain.circuits.approx.get_sigmoid spec)
    momentum        "none" (default) | "nesterov" (the published schedule, α₀ = 0.01)
    layout          "blocked" (default, "auto") | "volley-revolver" (the published packing)

Why these defaults: our plaintext twin on the seed workload (rows 0–127 train, 128–255 held out,
standardised features) gives 0.719 / 0.750 / 0.766 held-out accuracy after 1 / 2 / 3 iterations with
"none" ×4, but 0.719 / 0.719 / 0.750 with the published Nesterov start (η₀ ≈ 0.99 pulls the
look-ahead point back to ≈ 0 after the first step, so iteration 2 is almost wasted).

Levels (``plan`` traces them from ``_iteration`` itself, models/trace.py): W₀ = 0 makes the first
forward pass public (σ̃(0) = c₀), so iteration 1 costs only the
gradient product (1 level); every later one costs forward (1) + sigmoid (its depth, 2 for degree 3,
with the layout's mask folded into the coefficients) + gradient (1). All scalars (B̄, step sizes,
Nesterov factors) are folded: B̄ into the uploaded X̃ = X·diag(B̄), the look-ahead scale into the
polynomial, older gradients' factors into scalar multiplications of ciphertexts at higher levels,
and the final step size into ``out_scale``, applied by the client after decryption.

What is checked on the client (``client_encrypt``): the twin is run first and every sigmoid input
κ_t·z must lie inside the approximation's interval (IntervalError otherwise; protocol.fit names the
options that fit: a wider sigmoid, a lower learning_rate or fewer iterations. Scaling the features does
NOT help: B̄ scales as 1/s², so the step B̄⊙G and every κ_t·z are invariant to the input scale).
"""
from __future__ import annotations

import numpy as np

from hetrain.circuits import blocked_matmul, volley_revolver
from hetrain.circuits.tasks import run_tasks
from hetrain.circuits.approx import get_sigmoid
from hetrain.circuits.masked_poly import eval_poly_masked
from hetrain.circuits.packing import choose_packing
from hetrain.ckks import PlainVector, get_params
from hetrain.errors import DataError, HetrainUserError

from . import trace
from .base import check_training_arrays, Plan, Trainer, register
from .configs import MLRConfig
from .mlr_twin import Schedule, add_bias, quadratic_gradient_diag, twin

CIRCUITS = {"blocked": blocked_matmul, "volley-revolver": volley_revolver}
DEFAULTS = MLRConfig.defaults()  # the one source: models/configs.py


@register
class MLRTrainer(Trainer):
    """Full-batch encrypted multiclass logistic regression (``--model mlr --refresh none``): one sigmoid per
    class (one-vs-rest), quadratic-gradient ascent (Chiang, arXiv:2201.10838) with optional Nesterov momentum,
    the whole schedule in one modulus chain (no refresh). Packings: ``blocked`` (default) or the published
    ``volley-revolver`` (arXiv:2201.12577). Config keys and level costs: this module's docstring.

    Raises HetrainUserError for an unknown config key or a bad value (iterations < 1, learning_rate not
    positive and finite, unknown momentum, layout or sigmoid).
    """

    name = "mlr"
    summary = ("full-batch multiclass logistic regression with the quadratic-gradient preconditioner, blocked "
               "packing (--layout volley-revolver: the published one), in one modulus chain "
               "(--model mlr --refresh none --iterations N)")
    # one modulus chain, no refresh (``--refresh`` trains mlr with the mini-batch trainer, mlr_minibatch.py)
    capabilities = frozenset({"checkpoint", "executor"})

    def __init__(self, **config) -> None:
        cfg = self.merge_config(DEFAULTS, config)
        cfg["iterations"] = int(cfg["iterations"])
        cfg["learning_rate"] = float(cfg["learning_rate"])
        if cfg["layout"] == "auto":
            cfg["layout"] = "blocked"
        if cfg["iterations"] < 1:
            raise HetrainUserError("iterations must be >= 1")
        if not np.isfinite(cfg["learning_rate"]) or cfg["learning_rate"] <= 0:
            raise HetrainUserError("learning_rate must be a positive number")
        if cfg["momentum"] not in ("none", "nesterov"):
            raise HetrainUserError(f"momentum must be 'none' or 'nesterov', got {cfg['momentum']!r}")
        if cfg["layout"] not in CIRCUITS:
            raise HetrainUserError(f"unknown layout {cfg['layout']!r}; choose auto, {', '.join(CIRCUITS)}")
        try:
            self.approx = get_sigmoid(cfg["sigmoid"])
        except ValueError as e:
            raise HetrainUserError(str(e)) from None
        super().__init__(**cfg)

    # ------------------------------------------------------------------ planning
    def schedule(self, n_samples: int) -> Schedule:
        """The folded ascent schedule (mlr_twin.Schedule) for ``n_samples`` training rows under this config."""
        c = self.config
        return Schedule.build(c["iterations"], n_samples, c["learning_rate"], c["momentum"])

    def packing(self, n: int, d_with_bias: int, c: int, slots: int):
        """The configured packing (circuits/packing.py) of n samples × ``d_with_bias`` features (bias column
        included) × c classes into ciphertexts of ``slots`` slots. Raises LayoutError when the data does not
        fit it."""
        return choose_packing(self.config["layout"], n, d_with_bias, c, slots)

    def plan(self, n_samples: int, n_features: int, n_classes: int, params) -> Plan:
        """Traced (models/trace.py): the schedule's iterations run on zeros under ``params`` until one
        does not fit; iterations past that cost what the last traced one did (every later iteration
        is the same circuit on one more gradient)."""
        p = get_params(params)
        T = self.config["iterations"]
        shape = (n_samples, n_features, n_classes)
        packing = self.packing(n_samples, n_features + 1, n_classes, p.slots)
        run = trace.chain(self, shape, p, [self.trace_flavor(t) for t in range(T)])
        # how many iterations one chain holds, whatever T is: the same schedule, longer
        probe = run if len(run) < T else trace.chain(MLRTrainer(**{**self.config, "iterations": T + p.levels}),
                                                     shape, p, [(t, False) for t in range(T + p.levels)])
        fit = len(probe)
        per = [s.consumed for s in probe]
        if len(per) < 2:  # not even a second iteration fits: trace its cost on a deeper chain of the same ring
            two = MLRTrainer(**{**self.config, "iterations": max(T, 2)})
            per = [s.consumed for s in trace.chain(two, shape, trace.deeper(p),
                                                   [(0, False), (1, False)])]
        first, later = per[0], per[-1]
        needed = sum(s.consumed for s in run) if len(run) == T else first + (T - 1) * later
        steps = set().union(*(s.rotation_steps for s in run)) if run else set()
        n_in = (2 * len(packing.pack_forward_data(np.zeros((1, 1)))) + len(packing.pack_labels(np.zeros((1, 1)))))
        notes = [f"layout {packing.describe()}",
                 f"≈{packing.rotations_per_iteration()} rotations per iteration after the first",
                 f"{T} iteration(s) need {needed} levels (traced): {first} for the first (W0 = 0 makes the first "
                 f"forward public) + {later} per further iteration"]
        return Plan(levels_needed=needed, levels_available=p.levels,
                    rotation_steps=sorted(steps | set(packing.rotation_steps())) if run else
                    sorted(packing.rotation_steps()),
                    iterations=T, iterations_that_fit=fit,
                    levels_per_iteration=trace.per_iteration(first, later), n_input_ciphertexts=n_in, notes=notes,
                    ops=trace.add_ops(*(s.ops for s in run)) if len(run) == T else None,
                    chain_levels=[s.consumed for s in run])

    # ------------------------------------------------------------------ tracing (models/trace.py)
    def trace_key(self):
        c = self.config
        return (c["iterations"], c["learning_rate"], c["sigmoid"], c["momentum"], c["layout"])

    def trace_flavor(self, t: int):
        """Iteration t (its schedule coefficients), and whether it is the last (it also combines W)."""
        return (t, t == self.config["iterations"] - 1)

    def trace_setup(self, engine, n: int, d: int, c: int):
        """Zeros packed as ``client_encrypt`` packs them (X one level below the top); the state: Y."""
        packing = self.packing(n, d + 1, c, engine.slots)
        top = engine.max_level
        Xb = np.zeros((n, d + 1))
        ctx = self._context(engine, packing, n,
                            [engine.encrypt(v, level=max(top - 1, 0)) for v in packing.pack_forward_data(Xb)],
                            [engine.encrypt(v, level=top) for v in packing.pack_gradient_data(Xb)])
        return ctx, {"Y": [engine.encrypt(v, level=top) for v in packing.pack_labels(np.zeros((n, c)))]}

    def trace_iteration(self, engine, ctx, state, flavor):
        t, last = flavor
        return self._iteration(engine, ctx, state, t, last)

    # ------------------------------------------------------------------ client
    def _check_data(self, X, Y):
        return check_training_arrays(X, Y)

    def client_check(self, X, Y):
        """The twin's interval check (IntervalError: a sigmoid input leaves the approximation's interval)."""
        self.twin(X, Y)

    def client_encrypt(self, engine, X, Y, *, refresh: bool = False):
        """``refresh`` is accepted for the contract but cannot apply: this trainer never refreshes
        (its schedule is one circuit), so the whole plan must fit one chain."""
        X, Y = self._check_data(X, Y)
        n, d = X.shape
        c = Y.shape[1]
        plan = self.plan(n, d, c, engine.params)
        plan.check(engine.params, refresh=False)
        self.twin(X, Y)  # raises DataError if a sigmoid input would leave the approximation's interval
        Xb = add_bias(X)
        Xt = Xb * quadratic_gradient_diag(Xb)
        packing = self.packing(n, d + 1, c, engine.slots)
        # the lowest level the schedule allows, plus one when the preset has it: levels it would not use
        # only make every ciphertext, product and rotation larger (a level-l ciphertext has l+1 primes),
        # and the one spare level is what scoring queries against the encrypted model needs (inference
        # case (a), protocol/inference.py)
        top = min(engine.max_level, plan.levels_needed + 1)
        # X is first used against the first gradient (level top-1): encrypt it there, it is smaller
        inputs = {
            "X": [engine.encrypt(v, level=max(top - 1, 0)) for v in packing.pack_forward_data(Xb)],
            "Xt": [engine.encrypt(v, level=top) for v in packing.pack_gradient_data(Xt)],
            "Y": [engine.encrypt(v, level=top) for v in packing.pack_labels(Y)],
        }
        job = {"model": self.name, "config": dict(self.config), "n_samples": n, "n_features": d,
               "n_classes": c, "params": engine.params.to_dict(), "layout": packing.describe()}
        return inputs, job

    def client_decrypt(self, engine, outputs, job):
        n, d, c = job["n_samples"], job["n_features"], job["n_classes"]
        packing = self.packing(n, d + 1, c, engine.slots)
        U = packing.unpack_weights([engine.decrypt(ct) for ct in outputs["W"]])
        return {"W": self.schedule(n).out_scale * U}

    # ------------------------------------------------------------------ server
    def server_train(self, engine, inputs, job, progress=None, *, checkpoint=None, executor=None):
        """The whole schedule on ciphertexts. ``checkpoint`` (base.py): after every iteration the
        gradients so far (H_0..H_t, all that the later look-ahead combinations read) are saved, and a
        saved state is resumed after its last iteration with the same arithmetic. ``executor``
        (base.py): the products' per-group and per-block tasks run on its workers (blocked layout)."""
        n, d, c = job["n_samples"], job["n_features"], job["n_classes"]
        plan = self.plan(n, d, c, engine.params)
        plan.check(engine.params)
        packing = self.packing(n, d + 1, c, engine.slots)
        ctx = self._context(engine, packing, n, inputs["X"], inputs["Xt"], executor)
        T = ctx["sched"].iterations
        report = progress or (lambda done, total, msg: None)
        state, start = {"Y": inputs["Y"]}, 0
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is not None:
            held, meta = saved
            start = int(meta["iteration"])
            if not 1 <= start <= T or any(f"H{j}" not in held for j in range(start)):
                raise DataError(f"the checkpoint does not hold {start} iteration(s) of this job's {T}")
            state.update({f"H{j}": list(held[f"H{j}"]) for j in range(start)})
        for t in range(start, T):
            report(t, T, "iteration 1 (gradient at W = 0)" if t == 0 else f"iteration {t + 1}")
            state = self._iteration(engine, ctx, state, t, t == T - 1)
            _save(checkpoint, [state[f"H{j}"] for j in range(t + 1)])
        if start >= T:  # resumed after the last iteration: only the output combination is left
            state["W"] = _combine(engine, [state[f"H{j}"] for j in range(T)], ctx["sched"].out)
        report(T, T, "done")
        self.run_stats = {"iterations": T, "resumed_from": start}
        return {"W": state["W"]}

    def _context(self, engine, packing, n: int, X: list, Xt: list, executor=None) -> dict:
        """What every iteration reads: the packing, circuits, schedule, data and masks."""
        return {"packing": packing, "circ": CIRCUITS[self.config["layout"]], "sched": self.schedule(n), "X": X,
                "Xt": Xt, "fmasks": [PlainVector(m) for m in packing.forward_masks()], "executor": executor}

    def _iteration(self, engine, ctx: dict, state: dict, t: int, last: bool) -> dict:
        """Iteration t of the schedule: the gradient H_t (state ``H0``..``H{t-1}``, labels ``Y``, and from
        the second iteration the masked labels ``Ym``, computed once); ``last``: also the output W."""
        packing, circ, sched, X, Xt = ctx["packing"], ctx["circ"], ctx["sched"], ctx["X"], ctx["Xt"]
        fmasks, executor = ctx["fmasks"], ctx["executor"]
        state = dict(state)
        H = [state[f"H{j}"] for j in range(t)]
        if t == 0:
            c0 = self.approx.coeffs[0]
            E = [engine.add(y, PlainVector(-c0 * m)) for y, m in zip(state["Y"], packing.label_masks())]
        else:
            if "Ym" not in state:  # on the workers too (an executor then resends them as the bytes it received)
                state["Ym"] = run_tasks(engine, executor, _masked, list(zip(state["Y"], fmasks)))
            Ym = state["Ym"]
            U = _combine(engine, H, sched.u[t - 1])
            coeffs = sched.sigmoid_coeffs(self.approx, t)
            if circ is blocked_matmul:  # forward, sigmoid and spread of each sample group: one task
                H_g = packing.n_fblocks
                E = run_tasks(engine, executor, _residual_group, [(X[g * H_g:(g + 1) * H_g], Ym[g], fmasks[g])
                                                                  for g in range(packing.n_groups)],
                              (packing, U, coeffs))
            else:
                z = circ.forward(engine, packing, X, U, executor)
                q = [engine.sub(y, eval_poly_masked(engine, zg, coeffs, m)) for y, zg, m in zip(Ym, z, fmasks)]
                E = circ.spread(engine, packing, q, executor)
        state[f"H{t}"] = circ.gradient(engine, packing, E, Xt, executor)
        if last:
            state["W"] = _combine(engine, H + [state[f"H{t}"]], sched.out)
        return state

    # ------------------------------------------------------------------ plaintext
    def twin(self, X, Y):
        X, Y = self._check_data(X, Y)
        return twin(X, Y, self.approx, self.schedule(X.shape[0]))

    def weight_shapes(self, n_features, n_classes):
        return {"W": (int(n_classes), int(n_features) + 1)}

    def predict_scores(self, weights, X):
        W = np.asarray(weights["W"])
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] + 1 != W.shape[1]:
            raise DataError(f"model expects {W.shape[1] - 1} features, got data of shape {X.shape}")
        return add_bias(X) @ W.T


def _masked(engine, y, mask):
    return engine.mul_plain(y, mask)


def _residual_group(engine, packing, U: list, coeffs, Xg: list, y, mask):
    """E of one sample group (blocked layout): spread(y·mask − mask·σ̃(z)), z = forward of the group.
    The same operations as forward, the masked sigmoid and spread one after the other; one task of
    the executor (it reads no plaintext encoding cached on ``mask``: eval_poly encodes coef·mask)."""
    z = blocked_matmul.forward_group(engine, packing, U, Xg)
    return blocked_matmul.spread_group(engine, packing, engine.sub(y, eval_poly_masked(engine, z, coeffs, mask)))


def _save(checkpoint, H: list[list]) -> None:
    """The state after len(H) iterations: every gradient so far (none is dropped by later iterations)."""
    if checkpoint is not None:
        checkpoint.save({f"H{j}": h for j, h in enumerate(H)}, {"iteration": len(H)})


def _combine(engine, H: list[list], coeffs) -> list:
    """Σ_j coeffs[j]·H_j per ciphertext; the last coefficient is 1 (newest gradient, no level spent)."""
    out = list(H[-1])
    for hj, cj in zip(H[:-1], coeffs[:-1]):
        if cj == 0.0:
            continue
        for idx, ct in enumerate(hj):
            out[idx] = engine.add(out[idx], ct if cj == 1.0 else engine.mul_scalar(ct, cj))
    return out

