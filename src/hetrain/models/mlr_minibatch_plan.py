"""The client's planner for mini-batch logistic regression: hyperparameters chosen before any key.

The client holds the plaintext data, and the plaintext twin (MiniBatchMLR.twin_update) runs the
encrypted arithmetic exactly. So before keys are made, the planner *rehearses* every candidate of
a fixed grid — sigmoid approximation (SIGMOIDS), step (LEARNING_RATES), L2 strength (L2_C),
heavy-ball momentum (MOMENTA), batch size (BATCH_SIZES), raw, whitened or PCA-whitened features
(WHITENINGS) — with the twin, the client's retraction at each refresh and the early stopping the
encrypted run uses (early_stopping.py), on CV_FOLDS folds of its rows (the best KEEP_AFTER_FIRST_FOLD of the
first fold go on to the others), and keeps the best mean validation accuracy (ties: lower loss).
The winner is rehearsed once more on the run's own split, which fixes its number of epochs, and
its amplification of CKKS noise is measured (``noise_sensitivity``; past SENSITIVITY_LIMIT the
next candidate is taken). The encrypted run gets exactly that plan, so it cannot leave the
interval late.

Options the user fixed (``fixed``) are not searched. What the server learns of the choice is the
job's config: one of the grid's few hundred candidates, i.e. a few bits about the data, chosen on
the client's plaintext — never a value decrypted during training.

    plan = plan_minibatch(X, Y, X_val, y_val, fixed={}, max_epochs=100)
    plan.config     # {"sigmoid": "deg15:16", "learning_rate": 4.0, ...} for MiniBatchMLR
    plan.transform  # the whitening P (the client encrypts X·P), or None
    plan.lines()    # what `hetrain fit` prints before keygen
"""
from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np
from threadpoolctl import threadpool_limits

from hetrain.circuits.approx import sigmoid as true_sigmoid
from hetrain.errors import HetrainUserError

from .early_stopping import EarlyStopping, score_metrics
from .base import DepthPlanError
from .mlr_minibatch import RETRACT, MiniBatchMLR
from .mlr_twin import add_bias, quadratic_gradient_diag

# degree 15 (depth 4): 6 levels per step, one step per refresh at n16384 (7 levels); the unit
# variable t = z / bound keeps its coefficients below ~5e3 (see PolyApprox.unit_coeffs)
SIGMOIDS = ("deg15:16", "deg15:48")
LEARNING_RATES = (1.0, 4.0, 16.0, 64.0)
L2_C = (np.inf, 0.1, 0.01, 0.001)   # inverse L2 strength, as scikit-learn's C
MOMENTA = (0.5, 0.9)
MARGIN = 0.9          # without retraction: every planned sigmoid input within 90% of the interval's bound
DEFAULT_MAX_EPOCHS = 100
DEFAULT_TIME_BUDGET_S = 480.0  # planned training time under SEAL on 2 cores (estimate_step_seconds)
DEFAULT_PATIENCE = 5
BATCH_SIZES = (128, 256, 512)  # larger batches: fewer rotations per row (cheaper epochs), fewer steps
# raw standardised features; whitened with this shrinkage; or (shrinkage, share of the variance):
# whitened on the leading principal components that hold that share of the variance, the others
# dropped (PCA). Many standardised features that are near constant (MNIST's border pixels: one
# lit pixel in 1,280 rows standardises to ~35) make rows whose sigmoid inputs reach the interval's
# end long before the weights are good, so the client's retraction shrinks every class and the
# run stalls (raw pixels: 0.80 test accuracy where scikit-learn gets 0.85); their directions carry
# little variance, and dropping them is the regularisation the interval needs.
WHITENINGS = (None, 1.0, (100.0, 0.8))
CV_FOLDS = 3
NOISE = 1e-7                # CKKS noise per step in the rehearsal of noise_sensitivity
SENSITIVITY_LIMIT = 1e-4    # the planned run keeps the decrypted model within this of its twin (x10 margin)
MAX_SENSITIVITY_TRIES = 8
KEEP_AFTER_FIRST_FOLD = 0.25  # the share of candidates rehearsed on the other folds


@dataclasses.dataclass
class Candidate:
    """One rehearsed point of the planner's grid: its MiniBatchMLR ``config``, whether the twin's run kept
    every sigmoid input inside the interval (``fits``), the largest |sigmoid input| / bound of the run
    (``peak``, unitless), the early-stopped run's best validation accuracy (fraction) and loss (mean binary
    cross-entropy; -1 and inf when it does not fit), its best epoch, its length in epochs and in steps."""

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
    """What ``plan_minibatch`` chose before keygen: the encrypted run's config, the chosen candidate and all
    rehearsed ones, the batches per epoch, the levels one step consumes, which options were searched, the
    planning time and the estimated seconds per SEAL step, the feature transform P (d × d, or None) with
    its whitening shrinkage / kept variance / components, the mean cross-validated accuracy over ``folds``,
    and the planned run's CKKS noise growth (``noise_sensitivity``)."""

    config: dict               # MiniBatchMLR config for the encrypted run (epochs = planned epochs)
    chosen: Candidate
    candidates: list[Candidate]
    n_batches: int
    levels_per_step: int
    searched: list[str]        # the options the planner chose (the others were fixed by the user)
    seconds: float
    step_seconds: float        # estimated per step under SEAL (estimate_step_seconds)
    whitening: float | None = None      # shrinkage of the feature whitening, None: raw features
    variance: float = 1.0                # share of the variance in the principal components kept (1: all)
    components: int | None = None        # how many principal components P keeps (None: raw features)
    transform: np.ndarray | None = None  # P (d × d): the client encrypts X·P (None: X)
    cv_accuracy: float = float("nan")    # mean validation accuracy over the folds
    folds: int = 1
    noise_growth: float = 0.0            # noise_sensitivity of the planned run

    def lines(self) -> list[str]:
        """The plan as printed before keygen."""
        c, t = self.chosen, MiniBatchMLR(**self.config)
        a = t.approx
        err = a.max_error(true_sigmoid)
        lines = [f"plan: sigmoid {self.config['sigmoid']} (degree {a.degree}, interval [{a.interval[0]:g}, "
                 f"{a.interval[1]:g}], max error {err:.3f}, depth {a.depth}), learning rate "
                 f"{self.config['learning_rate']:g}, momentum {self.config['momentum']}, weight decay "
                 f"{self.config['weight_decay']:g}, batch size {self.config['batch_size']}, features "
                 + ("as standardised" if self.whitening is None else f"whitened (shrinkage {self.whitening:g}"
                    + (")" if self.variance >= 1.0 else f", on the {self.components} leading principal components: "
                       f"{100 * self.variance:.0f}% of the variance)")),
                 f"plan: {self.levels_per_step} levels per step; {c.epochs} epoch(s) x {self.n_batches} batch(es) = "
                 f"{c.steps} steps, about {c.steps * self.step_seconds / 60:.0f} min under SEAL on 2 cores; sigmoid "
                 f"inputs reach {100 * c.peak:.0f}% of the interval in the plaintext rehearsal; expected validation "
                 f"accuracy {c.val_accuracy:.4f} (best at epoch {c.best_epoch}); CKKS noise of {NOISE:g} per step "
                 f"grows to {self.noise_growth:.1e} over the run"]
        if self.searched:
            ok = sum(x.fits for x in self.candidates)
            lines.append(f"plan: chose {', '.join(self.searched)} among {len(self.candidates)} candidates "
                         f"({ok} stay inside their interval) by rehearsing them on the plaintext, {self.folds}-fold "
                         f"(mean validation accuracy {self.cv_accuracy:.4f}), in {self.seconds:.1f} s")
        return lines


def rehearse(trainers: list[MiniBatchMLR], X: np.ndarray, Y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
             max_epochs: int, stop_above: float = np.inf, retract: bool = True, levels: int = 7) -> list[Candidate]:
    """Run the twin of every candidate at once, with early stopping, and (``retract``) the client's
    retraction at each refresh (every levels // levels_per_step steps); a candidate stops
    (fits=False) once a sigmoid input exceeds ``stop_above`` × its bound.

    The candidates share the batches (same batch_size and patience), so their weights are stacked
    and every product is one matrix multiplication: the arithmetic of MiniBatchMLR.twin_update and
    .retract, in the same order per candidate, ~20x faster than one candidate at a time."""
    K, (n, d), c = len(trainers), X.shape, Y.shape[1]
    first = trainers[0]
    Xall, Xv = add_bias(X), add_bias(X_val)
    bound = np.array([t.approx.bound for t in trainers])
    lr = np.array([t.config["learning_rate"] for t in trainers])
    wd = np.array([t.config["weight_decay"] for t in trainers])
    beta = np.array([t.beta for t in trainers])
    every = np.array([max(1, levels // t.levels_per_step) for t in trainers])
    sigmoids = {}
    for k, t in enumerate(trainers):
        sigmoids.setdefault(t.config["sigmoid"], (np.asarray(t.approx.unit_coeffs()), []))[1].append(k)
    batches = []
    for rows in first.batches_of(n):
        Xb = add_bias(X[rows])
        batches.append((Xb, Xb * quadratic_gradient_diag(Xb), Y[rows]))
    decay_mask = np.ones(d + 1)
    decay_mask[0] = 0.0
    W, D = np.zeros((K, c, d + 1)), np.zeros((K, c, d + 1))
    active, fits = np.ones(K, bool), np.ones(K, bool)
    peak, steps, ran = np.zeros(K), np.zeros(K, int), np.zeros(K, int)
    stoppers = [EarlyStopping(t.config["patience"]) for t in trainers]
    step = 0
    for epoch in range(1, max_epochs + 1):
        for Xb, XbB, Yb in batches:
            if retract and step:
                idx = np.flatnonzero(active & (step % every == 0))
                if idx.size:
                    z = np.abs(Xall @ W[idx].reshape(-1, d + 1).T).max(axis=0).reshape(idx.size, c)
                    limit = RETRACT * bound[idx, None]
                    with np.errstate(divide="ignore", invalid="ignore"):
                        f = np.where(z > limit, limit / z, 1.0)
                    W[idx] *= f[:, :, None]
                    D[idx] *= f[:, :, None]
            idx = np.flatnonzero(active)
            T = (Xb @ W[idx].reshape(-1, d + 1).T).reshape(len(Xb), idx.size, c) / bound[idx][None, :, None]
            with np.errstate(invalid="ignore"):
                reach = np.abs(T).max(axis=(0, 2))
            peak[idx] = np.maximum(peak[idx], reach)
            out = ~(reach <= stop_above)
            fits[idx[out]], active[idx[out]], ran[idx[out]] = False, False, epoch
            S = np.empty_like(T)
            pos = {k: i for i, k in enumerate(idx)}
            for coeffs, members in sigmoids.values():
                cols = [pos[k] for k in members if k in pos]
                if cols:
                    S[:, cols, :] = np.polynomial.polynomial.polyval(T[:, cols, :], coeffs)
            R = (Yb[:, None, :] - S).reshape(len(Xb), -1)
            G = (R.T @ XbB).reshape(idx.size, c, d + 1) * lr[idx, None, None]
            G -= wd[idx, None, None] * decay_mask * W[idx]
            D[idx] = G + beta[idx, None, None] * D[idx]
            keep = idx[~out]
            W[keep] += D[keep]
            steps[keep] += 1
            step += 1
            if not active.any():
                break
        idx = np.flatnonzero(active)
        if not idx.size:
            break
        scores = (Xv @ W[idx].reshape(-1, d + 1).T).reshape(len(Xv), idx.size, c)
        acc, loss = score_metrics(scores, y_val)
        for i, k in enumerate(idx):
            _, stop = stoppers[k].update(float(acc[i]), float(loss[i]), epoch)
            if stop or epoch == max_epochs:
                active[k], ran[k] = False, epoch
    out = []
    for k, t in enumerate(trainers):
        st = stoppers[k]
        ok = fits[k] and np.isfinite(st.best_loss)
        out.append(Candidate(dict(t.config), bool(ok), float(peak[k]), st.best_accuracy if ok else -1.0,
                             st.best_loss if ok else np.inf, st.best_epoch, int(ran[k] or max_epochs), int(steps[k])))
    return out


def estimate_step_seconds(trainer: MiniBatchMLR, d: int, c: int, slots: int) -> float:
    """Seconds per step (refresh included) under SEAL at N = 16384 on 2 cores, from the packing's
    rotations, products and refreshed ciphertexts. Calibrated on digits (57 rotations, 40 products,
    5 weight ciphertexts: 1.4 s measured, 1.6 s estimated); rotations dominate (~20 ms each)."""
    packing = trainer.packing(d, c, slots)
    cts = packing.n_groups * packing.n_fblocks
    return 0.02 * packing.rotations_per_iteration() + 0.01 * cts + 0.03 * packing.n_fblocks * len(trainer.state_names)


def whitening(X: np.ndarray, shrinkage: float, variance: float = 1.0) -> np.ndarray:
    """The symmetric (ZCA) whitening matrix P = (XᵀX/n + shrinkage·I)^(-1/2) of standardised rows X
    (n × d): X·P has a better conditioned Hessian, so gradient steps converge in fewer epochs. The
    shrinkage keeps rare directions (and d > n) from being blown up. ``variance`` < 1: only the
    leading eigenvectors that hold this share of XᵀX's trace are kept (P has that rank, still
    d × d), the rest of the directions are dropped. Client side only: the client encrypts X·P and
    folds P back into the released weights (``unwhiten``)."""
    lam, V = np.linalg.eigh(X.T @ X / max(len(X), 1))
    lam = np.maximum(lam, 0.0)
    keep = slice(None) if variance >= 1.0 else slice(len(lam) - components_for(lam, variance), None)
    return (V[:, keep] / np.sqrt(lam[keep] + shrinkage)) @ V[:, keep].T


def components_for(eigenvalues: np.ndarray, variance: float) -> int:
    """How many of the largest ``eigenvalues`` hold ``variance`` of their sum (at least one)."""
    lam = np.sort(np.maximum(np.asarray(eigenvalues, dtype=np.float64), 0.0))[::-1]
    if variance >= 1.0 or lam.sum() <= 0:
        return len(lam)
    return int(min(len(lam), np.searchsorted(np.cumsum(lam) / lam.sum(), variance) + 1))


def _whitening_of(option) -> tuple[float, float] | None:
    """A WHITENINGS entry (or the user's --whitening) as (shrinkage, share of the variance), None: raw."""
    if option is None:
        return None
    if isinstance(option, (tuple, list)):
        return float(option[0]), float(option[1])
    return float(option), 1.0


def _transform(X: np.ndarray, option) -> np.ndarray | None:
    w = _whitening_of(option)
    return None if w is None else whitening(X, *w)


def unwhiten(W: np.ndarray, P: np.ndarray | None) -> np.ndarray:
    """Weights (c × (1 + d)) trained on X·P, as weights on X: the bias stays, the rest becomes W·Pᵀ."""
    if P is None:
        return W
    return np.concatenate([W[:, :1], W[:, 1:] @ P.T], axis=1)


def _folds(y: np.ndarray, k: int = CV_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    _, counts = np.unique(y, return_counts=True)
    splitter = StratifiedKFold(k, shuffle=True, random_state=0) if counts.min() >= k else KFold(k, shuffle=True,
                                                                                                  random_state=0)
    return list(splitter.split(np.zeros(len(y)), y))


def plan_minibatch(*args, **kwargs) -> MiniBatchPlan:
    """See ``_plan_minibatch``; runs with one BLAS thread: its matrices are small, and OpenBLAS threads
    that wait for a core the server process holds made a 8 s plan take 90 s on 2 busy cores."""
    with threadpool_limits(1):
        return _plan_minibatch(*args, **kwargs)


def _plan_minibatch(X, Y, X_val=None, y_val=None, *, fixed: dict | None = None,
                    max_epochs: int = DEFAULT_MAX_EPOCHS, levels: int = 7, retract: bool = True,
                    slots: int = 8192, time_budget: float | None = None) -> MiniBatchPlan:
    """Choose the MiniBatchMLR config and the feature whitening for preprocessed X (n × d), one-hot Y
    (n × c) and the run's validation split (X_val, y_val class indices; None: the training rows).

    Selection: every candidate of the grid (SIGMOIDS × LEARNING_RATES × L2_C × MOMENTA × BATCH_SIZES,
    on the raw and on the whitened features, WHITENINGS) is rehearsed on the first of CV_FOLDS folds
    of all the client's rows (X and X_val); the best KEEP_AFTER_FIRST_FOLD go on to the other folds
    (successive halving), and the best mean validation accuracy wins (ties: lower mean loss); folds
    make the choice stable where one split of 24 Iris rows is not. Then the winner is
    rehearsed on the run's own split, which gives the planned epochs (early stopping included).

    ``fixed``: options the user set (sigmoid, learning_rate, weight_decay, momentum, batch_size,
    patience, whitening: None for raw features, a shrinkage, or (shrinkage, share of the variance
    kept)); ``max_epochs`` and ``time_budget`` (seconds, estimate_step_seconds; default
    DEFAULT_TIME_BUDGET_S): the budget. ``levels``/``slots``: of the parameters; ``retract``:
    whether the client retracts at its refreshes (client refresh; not under bootstrapping).
    Raises HetrainUserError for bad options, DepthPlanError when no sigmoid fits the levels."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    no_val = X_val is None or len(X_val) == 0
    if no_val:
        X_val, y_val = X, np.argmax(Y, axis=1)
    fixed = dict(fixed or {})
    if max_epochs < 1:
        raise HetrainUserError(f"--epochs must be at least 1, got {max_epochs}")
    grid = {"sigmoid": SIGMOIDS, "learning_rate": LEARNING_RATES, "C": L2_C, "momentum": MOMENTA}
    for k in grid:
        if k in fixed:
            grid[k] = (fixed[k],)
    if "weight_decay" in fixed:  # the user's decay replaces the searched L2 strength
        grid["C"] = (np.inf,)
    n, d = X.shape
    c = Y.shape[1]
    sizes = (fixed["batch_size"],) if "batch_size" in fixed else BATCH_SIZES
    whitenings = WHITENINGS if "whitening" not in fixed else (fixed.pop("whitening"),)
    searched = [k.replace("_", " ") for k, v in grid.items() if len(v) > 1] + \
        (["batch size"] if len(sizes) > 1 else []) + (["whitening"] if len(whitenings) > 1 else [])
    t0 = time.perf_counter()

    def trainers_for(batch_size: int, n_rows: int, config: dict | None = None) -> list[MiniBatchMLR]:
        out = []
        combos = [config] if config else [dict(zip(grid, v)) for v in itertools.product(*grid.values())]
        for g in combos:
            wd = fixed["weight_decay"] if "weight_decay" in fixed else g["weight_decay"] if "weight_decay" in g \
                else weight_decay_for(g["C"], g["learning_rate"], n, d)
            t = MiniBatchMLR(patience=fixed.get("patience", DEFAULT_PATIENCE), batch_size=min(batch_size, n_rows),
                             sigmoid=g["sigmoid"], learning_rate=g["learning_rate"], weight_decay=wd,
                             momentum=g["momentum"], epochs=max_epochs)
            if t.levels_per_step <= levels:
                out.append(t)
        if not out:
            raise DepthPlanError(f"no sigmoid of the plan fits one step in {levels} levels: choose a preset with "
                                 "more levels (--preset n16384 or larger)")
        return out

    def budget_epochs(trainers: list[MiniBatchMLR], n_rows: int) -> int:
        # the epochs that the slowest candidate (momentum: two refreshed states) runs in the time budget
        epoch_s = max(estimate_step_seconds(t, d, c, slots) for t in trainers) * len(trainers[0].batches_of(n_rows))
        return int(max(1, min(max_epochs, (time_budget or DEFAULT_TIME_BUDGET_S) // epoch_s)))

    stop_above = 1.0 if retract else MARGIN  # retraction: each step starts inside MARGIN, a cycle stays inside
    X_all = X if no_val else np.concatenate([X, X_val])
    y_all = np.argmax(Y, axis=1) if no_val else np.concatenate([np.argmax(Y, axis=1), y_val])
    scores: dict = {}  # (whitening, batch size, index) -> [sum of accuracies, sum of losses, candidate, fits]
    folds = _folds(y_all)
    survivors: dict = {}  # (whitening, batch size) -> indices still rehearsed after the first fold
    for shrink in whitenings:
        for f, (tr, va) in enumerate(folds):
            P = _transform(X_all[tr], shrink)
            Xtr, Xva = (X_all[tr], X_all[va]) if P is None else (X_all[tr] @ P, X_all[va] @ P)
            # a batch size past the rows is one full batch (key 0): the same run, rehearsed once
            for size in sorted({b if b < len(tr) else 0 for b in sizes}):
                every = trainers_for(size or len(tr), len(tr))
                keep = survivors.get((shrink, size), range(len(every)))
                trainers = [every[i] for i in keep]
                results = rehearse(trainers, Xtr, np.eye(c)[y_all[tr]], Xva, y_all[va],
                                   budget_epochs(trainers, len(tr)), stop_above, retract, levels)
                if f == 0:  # successive halving: only the best KEEP_AFTER_FIRST_FOLD go on to the other folds
                    order = sorted(range(len(results)), key=lambda j: (not results[j].fits, -results[j].val_accuracy,
                                                                       results[j].val_loss))
                    survivors[(shrink, size)] = sorted(keep[j] for j in
                                                       order[:max(1, int(KEEP_AFTER_FIRST_FOLD * len(order)))])
                for i, cand in zip(keep, results):
                    acc = scores.setdefault((shrink, size, i), [0.0, 0.0, cand, True, 0])
                    acc[0] += cand.val_accuracy
                    acc[1] += cand.val_loss
                    acc[3] &= cand.fits
                    acc[4] += 1
    # ranked on the means over the folds; a key missing from a fold (fold sizes on both sides of a
    # batch size) is ranked after the complete ones
    ranked = sorted(scores.items(), key=lambda kv: (not kv[1][3], kv[1][4] < len(folds), -round(kv[1][0] / kv[1][4], 4),
                                                     kv[1][1] / kv[1][4], _levels(kv[1][2])))
    # the winner on the run's own split (its planned epochs), unless the run amplifies CKKS noise past
    # what the twin check allows: then the next one
    tried = []
    for (shrink, size, _), (acc_sum, _, best, _, counted) in ranked[:MAX_SENSITIVITY_TRIES]:
        P = _transform(X, shrink)
        Xr, Xv = (X, X_val) if P is None else (X @ P, X_val @ P)
        config = {k: best.config[k] for k in ("sigmoid", "learning_rate", "momentum", "weight_decay")}
        final_trainers = trainers_for(size or n, n, config)
        chosen = rehearse(final_trainers, Xr, Y, Xv, y_val, budget_epochs(final_trainers, n), stop_above, retract,
                          levels)[0]
        config = {**chosen.config, "epochs": chosen.epochs if chosen.fits else max_epochs}
        t = MiniBatchMLR(**config)
        amplified = noise_sensitivity(t, Xr, Y, chosen.steps, levels if retract else None)
        tried.append((amplified, config, chosen, shrink, P, acc_sum / counted))
        if amplified <= SENSITIVITY_LIMIT:
            break
    amplified, config, chosen, shrink, P, cv = min(tried, key=lambda x: (x[0] > SENSITIVITY_LIMIT,
                                                                          tried.index(x)))
    t = MiniBatchMLR(**config)
    w = _whitening_of(shrink)
    k = None if w is None else components_for(np.linalg.eigvalsh(X.T @ X / max(n, 1)), w[1])
    return MiniBatchPlan(config, chosen, [v[2] for v in scores.values()], len(t.batches_of(n)), t.levels_per_step,
                         searched, time.perf_counter() - t0, estimate_step_seconds(t, d, c, slots),
                         whitening=None if w is None else w[0], variance=1.0 if w is None else w[1], components=k,
                         transform=P, cv_accuracy=cv, folds=len(folds), noise_growth=amplified)


def noise_sensitivity(trainer: MiniBatchMLR, X: np.ndarray, Y: np.ndarray, steps: int, levels: int | None) -> float:
    """max |W − W'| after ``steps`` twin steps, where W' gets Gaussian noise of NOISE per step (what
    CKKS adds: encryption, rescaling, the polynomial): how far the decrypted model can drift from its
    twin. Momentum near 1 amplifies it (β = 0.95 on digits: 1e-7 per step became 7e-3 in 100 steps;
    β = 0.9: 3e-4), so the planner keeps it under SENSITIVITY_LIMIT."""
    rng = np.random.default_rng(0)
    batches = [trainer.twin_batch(X, Y, rows) for rows in trainer.batches_of(X.shape[0])]
    every = max(1, levels // trainer.levels_per_step) if levels else 0
    clean = noisy = trainer.initial_state(X.shape[1], Y.shape[1])
    for k in range(steps):
        if every and k and k % every == 0:
            clean, noisy = trainer.retract(clean, X), trainer.retract(noisy, X)
        clean = trainer.twin_update(clean, batches[k % len(batches)], check=False)
        noisy = trainer.twin_update(noisy, batches[k % len(batches)], check=False)
        noisy = {name: v + rng.normal(0.0, NOISE, v.shape) for name, v in noisy.items()}
    return float(np.max(np.abs(clean["W"] - noisy["W"])))


def weight_decay_for(C: float, learning_rate: float, n: int, d: int) -> float:
    """The per-step shrink that matches an L2 penalty ‖w‖²/(2C) on the summed loss (scikit-learn's C).

    The preconditioned step on the penalty is lr·B̄_l·(b/n)·w_l/C. For standardised features
    E|x| ≈ 0.8, so B̄_l ≈ 1/(¼·b·0.8·(d+1)·0.8) and the shrink is ≈ lr·6.25/(n·(d+1)·C): computed
    from the public shape only (n, d), not from the data."""
    return 0.0 if not np.isfinite(C) else min(0.5, learning_rate * 6.25 / (n * (d + 1) * C))


def _levels(c: Candidate) -> int:
    return MiniBatchMLR(**c.config).levels_per_step
