"""Client-side choice of the ``mlp`` defaults, run on the plaintext data BEFORE keygen.

Full-batch gradient descent on a polynomial-sigmoid network has no single setting that converges on
every dataset and keeps every pre-activation inside its polynomial's interval (outside it the
encrypted run computes garbage that nobody can see). The client holds the plaintext data, so it
picks the setting itself, with the plaintext twin (the encrypted run's exact arithmetic):

1. split its training rows into a fitting part and a validation part (stratified, 20 %, seed 0);
2. train the twin on the fitting part for each candidate of a small fixed grid (``candidates``),
   up to ``max_iterations`` iterations (a wall-time budget turned into iterations by the trainer),
   recording after every iteration the validation accuracy and the largest |pre-activation| per
   layer; an iteration counts only while every layer stays within ``MARGIN`` of its interval;
3. rank (candidate, iterations) by validation loss (cross-entropy; on small validation parts, e.g. 28
   RegNet rows, accuracy is too coarse and picked worse models), then validation accuracy, then fewer
   iterations, then grid order (deterministic); from ``ACCURACY_FIRST_ROWS`` validation rows (digits:
   287) accuracy first, then loss: there accuracy resolves 0.5 %, and the loss is not comparable between
   candidates with and without label smoothing (a smoothed model's scores stay near s / 1 − s);
4. re-run the best on ALL the training rows, exactly as the encrypted run will, and keep it only if
   every pre-activation of that run stays inside ``MARGIN`` x its interval; else try the next one
   (at most 8 candidates are re-run).

Only keys the user did not give are chosen; given ones are kept (and fix that grid dimension).

5. if no candidate passes, the user's own options with the TRAINER's defaults for the rest (``fallback``:
   what the job ran before this planner existed) are kept when that run's pre-activations stay inside
   their intervals (reach <= 1, what the client's pre-keygen check requires; the 90 % margin is the
   planner's own preference, not a condition of a correct encrypted run): the planner never refuses a
   job that would have run correctly without it. Only when that run leaves an interval too (its encrypted
   result would be garbage) is the job refused, and the pipeline appends checked advice (models/advice.py).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence

import numpy as np

from hetrain.circuits.approx import IntervalError

MARGIN = 0.9          # pre-activations of the planned run stay within 90 % of each interval
VALIDATION_FRACTION = 0.2
ACCURACY_FIRST_ROWS = 200  # from this many validation rows, rank on accuracy first (loss breaks ties)


@dataclasses.dataclass
class Trace:
    """Per-iteration record of one twin run: validation accuracy and loss, max |pre-activation| / bound."""

    val_acc: list[float]
    val_loss: list[float]
    reach: list[float]  # max over layers of max|A_l| / B_l, for the state used by iteration t+1


def split(Y: np.ndarray, fraction: float = VALIDATION_FRACTION, seed: int = 0):
    """Deterministic stratified split of row indices (fit, validation); every class keeps >= 1 fitting row."""
    labels = np.asarray(Y).argmax(1)
    rng = np.random.default_rng(seed)
    fit_idx, val_idx = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * len(rows))) if len(rows) > 1 else 0
        k = min(k, len(rows) - 1)
        val_idx += list(rows[:k])
        fit_idx += list(rows[k:])
    return np.sort(fit_idx), np.sort(val_idx)


def bce(scores: np.ndarray, Y: np.ndarray) -> float:
    """Mean binary cross-entropy (nats per row, summed over the c outputs) of probabilities ``scores`` (n × c,
    NaN read as 0.5, clipped to [1e-6, 1 − 1e-6]) against one-hot Y (n × c)."""
    p = np.clip(np.nan_to_num(scores, nan=0.5), 1e-6, 1 - 1e-6)
    return float(-np.mean(np.sum(Y * np.log(p) + (1 - Y) * np.log(1 - p), axis=1)))


def choose(candidates: Sequence[dict], run: Callable[[dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], Trace],
           final_reach: Callable[[dict, int], float], X: np.ndarray, Y: np.ndarray,
           max_iterations: int | Callable[[dict], int],
           fixed_iterations: int | None = None, hold_out: bool = True,
           fallback: tuple[dict, int] | None = None) -> tuple[dict, dict]:
    """The best (candidate, iterations) as described in the module docstring; returns (config, report).

    ``run(cand, Xf, Yf, Xv, Yv, T)`` trains the twin for T iterations and returns its Trace;
    ``final_reach(cand, T)``: the largest |pre-activation| / bound of the run on all rows after each of its
    T iterations (a list; computed once per candidate, so a candidate whose best iteration leaves the
    margin on all rows falls back to its last iteration that does not).
    ``max_iterations``: a number, or ``max_iterations(cand)`` per candidate (a mini-batch step costs less
    than a full-batch one, so the same time budget holds more of them).
    ``hold_out=False``: rank on the training rows' own loss (for ~100-row sets, where 20 held-out rows
    are too few to rank on: Iris's 24 validation rows scored 0.79-0.88 where the test rows gave 0.97).
    ``fallback``: (config, iterations) of the job as the trainer itself would run it (the user's options,
    the trainer's defaults for the rest), returned when no candidate fits but its run stays inside every
    interval (step 5 of the module docstring).
    """
    fi, vi = split(Y)
    if len(vi) == 0 or not hold_out:  # too few rows to hold any out: rank on the training rows themselves
        fi = vi = np.arange(len(Y))
    ranked = []
    for order, cand in enumerate(candidates):
        T = fixed_iterations or (max_iterations(cand) if callable(max_iterations) else max_iterations)
        with np.errstate(all="ignore"):
            tr = run(cand, X[fi], Y[fi], X[vi], Y[vi], T)
        for t in range(len(tr.val_acc)):
            if not tr.reach[t] <= MARGIN:  # the state entering iteration t+1 (and every later one) is out
                break
            if fixed_iterations is not None and t + 1 != fixed_iterations:
                continue
            key = (round(tr.val_loss[t], 4), -tr.val_acc[t]) if len(vi) < ACCURACY_FIRST_ROWS or not hold_out \
                else (-tr.val_acc[t], round(tr.val_loss[t], 4))
            ranked.append((*key, t + 1, order))
    ranked.sort()
    final: dict[int, list] = {}
    for k1, k2, t, order in ranked:
        if order not in final:
            if len(final) >= 8:
                break
            cand = candidates[order]
            with np.errstate(all="ignore"):
                final[order] = final_reach(cand, fixed_iterations or
                                           (max_iterations(cand) if callable(max_iterations) else max_iterations))
        reach = max(final[order][:t], default=np.inf)
        if reach <= MARGIN:
            loss, neg_acc = (k1, k2) if len(vi) < ACCURACY_FIRST_ROWS or not hold_out else (k2, k1)
            cfg = {**candidates[order], "iterations": t}
            T = max_iterations(candidates[order]) if callable(max_iterations) else max_iterations
            return cfg, {"max_iterations": T, "validation_accuracy": -neg_acc, "validation_loss": loss, "iterations": t,
                         "reach": reach, "candidates": len(candidates), "validation_rows": int(len(vi))}
    if fallback is not None:
        cfg, T = fallback
        with np.errstate(all="ignore"):
            reach = max(final_reach(cfg, T)[:T], default=np.inf)
        if reach <= 1.0:
            return {**cfg, "iterations": T}, {"max_iterations": T, "validation_accuracy": None, "validation_loss": None,
                                              "iterations": T, "reach": reach, "candidates": len(candidates),
                                              "validation_rows": int(len(vi)), "fallback": "trainer defaults"}
    raise IntervalError("no default mlp setting keeps every pre-activation inside its sigmoid's interval on this data; "
                    "give --sigmoid with a wider interval, a smaller --learning-rate or fewer --iterations.")


def grid(fixed: dict, **axes: Iterable) -> list[dict]:
    """Cartesian product of ``axes`` (in order), each dimension replaced by the user's value when given."""
    out = [dict()]
    for key, values in axes.items():
        values = [fixed[key]] if key in fixed else list(values)
        out = [{**o, key: v} for o in out for v in values]
    return out
