"""The client's planner for mini-batch logistic regression: hyperparameters chosen before any key.

The client holds the plaintext data, and the plaintext twin (MiniBatchMLR.twin_update) runs the
encrypted arithmetic exactly. So before keys are made, the planner runs the twin for each
candidate of a small fixed grid — sigmoid approximation (degree and interval), step size, weight
decay; heavy-ball momentum β = 0.9 — with the same early stopping the encrypted run uses
(early_stopping.py), on the same batches, and keeps the candidate with the best validation
accuracy (ties: lower validation loss, then fewer levels per step, then fewer steps) among those
whose every sigmoid input, over the whole planned run, stays within ``MARGIN`` of the interval.
The encrypted run is then given exactly the planned number of epochs, so it cannot leave the
interval late (CKKS noise moves the inputs by ~1e-5, the margin is 10%).

Options the user fixed (``fixed``) are not searched. What the server learns of the choice is the
job's config: one of at most ``len(grid)`` candidates, i.e. at most log2(24) < 5 bits about the
data, chosen on the client's plaintext — never a value decrypted during training.

    plan = plan_minibatch(X, Y, X_val, y_val, fixed={}, max_epochs=100)
    plan.config   # {"sigmoid": "deg7:16", "learning_rate": 1.0, ...} for MiniBatchMLR
    plan.lines()  # what `hetrain fit` prints before keygen
"""
from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np

from hetrain.circuits.approx import sigmoid as true_sigmoid
from hetrain.errors import HetrainUserError

from .early_stopping import EarlyStopping, validation_metrics
from .minibatch import MiniBatchMLR

# depth 3 and 4: 5 and 6 levels per step, one step per refresh at n16384 (7 levels)
SIGMOIDS = ("deg7:16", "deg15:16", "deg15:24", "deg15:32")
LEARNING_RATES = (1.0, 4.0, 16.0)
L2_C = (np.inf, 1.0, 0.1)   # inverse L2 strength, as scikit-learn's C
MOMENTA = (0.5, 0.9)
MARGIN = 0.9          # without retraction: every planned sigmoid input within 90% of the interval's bound
DEFAULT_MAX_EPOCHS = 100
DEFAULT_TIME_BUDGET_S = 480.0  # planned training time under SEAL on 2 cores (estimate_step_seconds)
DEFAULT_PATIENCE = 5
DEFAULT_BATCH_SIZE = 128


@dataclasses.dataclass
class Candidate:
    config: dict
    fits: bool                 # every sigmoid input of the run within MARGIN of the interval
    peak: float                # max |sigmoid input| / bound over the run
    val_accuracy: float
    val_loss: float
    best_epoch: int
    epochs: int                # epochs the run lasts (early stopping included)
    steps: int


@dataclasses.dataclass
class MiniBatchPlan:
    config: dict               # MiniBatchMLR config for the encrypted run (epochs = planned epochs)
    chosen: Candidate
    candidates: list[Candidate]
    n_batches: int
    levels_per_step: int
    searched: list[str]        # the options the planner chose (the others were fixed by the user)
    seconds: float
    step_seconds: float        # estimated per step under SEAL (estimate_step_seconds)

    def lines(self) -> list[str]:
        """The plan as printed before keygen."""
        c, t = self.chosen, MiniBatchMLR(**self.config)
        a = t.approx
        err = a.max_error(true_sigmoid)
        lines = [f"plan: sigmoid {self.config['sigmoid']} (degree {a.degree}, interval [{a.interval[0]:g}, "
                 f"{a.interval[1]:g}], max error {err:.3f}, depth {a.depth}), learning rate "
                 f"{self.config['learning_rate']:g}, momentum {self.config['momentum']}, weight decay "
                 f"{self.config['weight_decay']:g}, batch size {self.config['batch_size']}",
                 f"plan: {self.levels_per_step} levels per step; {c.epochs} epoch(s) x {self.n_batches} batch(es) = "
                 f"{c.steps} steps, about {c.steps * self.step_seconds / 60:.0f} min under SEAL on 2 cores; sigmoid "
                 f"inputs reach {100 * c.peak:.0f}% of the interval in the plaintext rehearsal; expected validation "
                 f"accuracy {c.val_accuracy:.4f} (best at epoch {c.best_epoch})"]
        if self.searched:
            ok = sum(x.fits for x in self.candidates)
            lines.append(f"plan: chose {', '.join(self.searched)} among {len(self.candidates)} candidates "
                         f"({ok} stay inside their interval) by rehearsing them on the plaintext in "
                         f"{self.seconds:.1f} s")
        return lines


def rehearse(trainer: MiniBatchMLR, X: np.ndarray, Y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
             max_epochs: int, stop_above: float = np.inf, steps_per_refresh: int | None = 1) -> Candidate:
    """Run the twin with early stopping (and the client's retraction every ``steps_per_refresh``
    steps; None: never, as under bootstrapping); stop (fits=False) once |t| exceeds ``stop_above``."""
    batches = [trainer.twin_batch(X, Y, rows) for rows in trainer.batches_of(X.shape[0])]
    state = trainer.initial_state(X.shape[1], Y.shape[1])
    stopper = EarlyStopping(trainer.config["patience"])
    peak, steps, epoch = 0.0, 0, 0
    for epoch in range(1, max_epochs + 1):
        for batch in batches:
            if steps_per_refresh and steps and steps % steps_per_refresh == 0:
                state = trainer.retract(state, X)
            t = batch[0] @ state["W"].T
            peak = max(peak, float(np.max(np.abs(t))) if t.size else 0.0)
            if not peak <= stop_above:  # NaN too
                return Candidate(dict(trainer.config), False, peak, -1.0, np.inf, 0, epoch, steps)
            state = trainer.twin_update(state, batch, check=False)
            steps += 1
        m = validation_metrics(state["W"], X_val, y_val)
        _, stop = stopper.update(m["val_accuracy"], m["val_loss"], epoch)
        if stop:
            break
    return Candidate(dict(trainer.config), peak <= min(stop_above, 1.0), peak, stopper.best_accuracy, stopper.best_loss,
                     stopper.best_epoch, epoch, steps)


def estimate_step_seconds(trainer: MiniBatchMLR, d: int, c: int, slots: int) -> float:
    """Seconds per step (refresh included) under SEAL at N = 16384 on 2 cores, from the packing's
    rotations, products and refreshed ciphertexts. Calibrated on digits (57 rotations, 40 products,
    5 weight ciphertexts: 1.4 s measured, 1.6 s estimated); rotations dominate (~20 ms each)."""
    pk = trainer.packing(d, c, slots)
    cts = pk.n_groups * pk.n_fblocks
    return 0.02 * pk.rotations_per_iteration() + 0.01 * cts + 0.03 * pk.n_fblocks * len(trainer.state_names)


def plan_minibatch(X, Y, X_val=None, y_val=None, *, fixed: dict | None = None,
                   max_epochs: int = DEFAULT_MAX_EPOCHS, levels: int = 7, retract: bool = True,
                   slots: int = 8192, time_budget: float | None = None) -> MiniBatchPlan:
    """Choose the MiniBatchMLR config for preprocessed X (n × d), one-hot Y (n × c) and a
    validation split (X_val, y_val class indices; the training rows when None).

    ``fixed``: options the user set (sigmoid, learning_rate, weight_decay, momentum, batch_size,
    patience); ``max_epochs`` and ``time_budget`` (seconds, estimate_step_seconds; default
    DEFAULT_TIME_BUDGET_S): the budget. ``levels``/``slots``: of the parameters; ``retract``:
    whether the client retracts at its refreshes (client refresh; not under bootstrapping).
    Raises HetrainUserError for bad fixed options."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    if X_val is None or len(X_val) == 0:
        X_val, y_val = X, np.argmax(Y, axis=1)
    fixed = dict(fixed or {})
    if max_epochs < 1:
        raise HetrainUserError(f"--epochs must be at least 1, got {max_epochs}")
    base = {"batch_size": DEFAULT_BATCH_SIZE, "patience": DEFAULT_PATIENCE}
    base.update({k: v for k, v in fixed.items() if k in ("batch_size", "patience")})
    grid = {"sigmoid": SIGMOIDS, "learning_rate": LEARNING_RATES, "C": L2_C, "momentum": MOMENTA}
    for k in grid:
        if k in fixed:
            grid[k] = (fixed[k],)
    searched = [k.replace("_", " ") for k, v in grid.items() if len(v) > 1]
    t0 = time.perf_counter()
    candidates = []
    n, d = X.shape
    for sig, lr, C, mom in itertools.product(*grid.values()):
        wd = fixed.get("weight_decay", weight_decay_for(C, lr, n, d))
        trainer = MiniBatchMLR(**base, sigmoid=sig, learning_rate=lr, weight_decay=wd, momentum=mom, epochs=max_epochs)
        if trainer.levels_per_step > levels:
            continue
        budget = time_budget or DEFAULT_TIME_BUDGET_S
        steps_allowed = budget / estimate_step_seconds(trainer, d, Y.shape[1], slots)
        epochs = int(max(1, min(max_epochs, steps_allowed // len(trainer.batches_of(n)))))
        per_refresh = levels // trainer.levels_per_step if retract else None
        candidates.append(rehearse(trainer, X, Y, X_val, y_val, epochs, MARGIN if not retract or per_refresh > 1
                                   else 1.0, per_refresh))
    fitting = [c for c in candidates if c.fits]
    if fitting:
        chosen = max(fitting, key=lambda c: (c.val_accuracy, -c.val_loss, -_levels(c), -c.steps))
    else:  # nothing stays inside: the one that lasts longest; the client's refresh check damps its steps
        chosen = max(candidates, key=lambda c: (c.steps, -c.peak))
    config = {**chosen.config, "epochs": chosen.epochs if chosen.fits else max_epochs}
    t = MiniBatchMLR(**config)
    return MiniBatchPlan(config, chosen, candidates, len(t.batches_of(X.shape[0])), t.levels_per_step, searched,
                         time.perf_counter() - t0, estimate_step_seconds(t, d, Y.shape[1], slots))


def weight_decay_for(C: float, learning_rate: float, n: int, d: int) -> float:
    """The per-step shrink that matches an L2 penalty ‖w‖²/(2C) on the summed loss (scikit-learn's C).

    The preconditioned step on the penalty is lr·B̄_l·(b/n)·w_l/C. For standardised features
    E|x| ≈ 0.8, so B̄_l ≈ 1/(¼·b·0.8·(d+1)·0.8) and the shrink is ≈ lr·6.25/(n·(d+1)·C): computed
    from the public shape only (n, d), not from the data."""
    return 0.0 if not np.isfinite(C) else min(0.5, learning_rate * 6.25 / (n * (d + 1) * C))


def _levels(c: Candidate) -> int:
    return MiniBatchMLR(**c.config).levels_per_step
