"""Advice for the client's refusals: the options that WOULD make the job fit, each one checked.

Two kinds of refusal happen on the client before any key is made:

* out of interval (``circuits.approx.IntervalError``): the plaintext twin shows a polynomial input
  leaving its approximation's interval, where the encrypted run would compute garbage;
* depth (``models.base.DepthPlanError``): the job needs more levels than the parameters offer.

The client holds the plaintext data and the twin, so instead of generic advice it tries candidate
options and names only those with which the same checks pass. Both functions take ``build``:

    build(config, X, preset) -> anything    # raises HetrainUserError when that job would be refused

which must run exactly the checks the real run makes before keygen (make the trainer from the
user's ``config``, pick/plan the preset, ``plan.check``, ``trainer.client_check(X, Y)``);
``X`` is the preprocessed data (the candidate ``--scale`` multiplies it), ``preset`` a preset name
or "auto". protocol.planning.prepare uses them for every trainer; the mini-batch path (client_jobs) does
the same with its own ``build`` (see ``refusal_with_advice``).

Candidates, in order (the first that passes of each kind, then the first ``limit`` kinds):
``--sigmoid deg<D>:<B>`` (same degree, the smallest wider bound of ``BOUNDS``; then degree 7 or 15,
whose depth the build's plan checks), ``--learning-rate`` (halved up to 4 times), ``--iterations``
(the most that pass), ``--scale`` (only where the trainer's span depends on the input scale: not for
logistic regression, whose quadratic-gradient step B̄⊙G is invariant to the feature scale but for the bias column), and for depth refusals
``--iterations``, ``--preset`` and ``--refresh client``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np

from hetrain.circuits.approx import get_sigmoid
from hetrain.errors import HetrainUserError

BOUNDS = (8, 12, 16, 24, 32, 48, 64, 96, 128)
WIDER_DEGREES = (7, 15)
LR_FACTORS = (0.5, 0.25, 0.125, 0.0625)
SCALE_FACTORS = (0.5, 0.25, 0.125)
KINDS = ("sigmoid", "learning_rate", "iterations", "scale")
FLAGS = {"sigmoid": "--sigmoid", "learning_rate": "--learning-rate", "iterations": "--iterations",
         "scale": "--scale", "preset": "--preset", "refresh": "--refresh"}

Build = Callable[[dict, np.ndarray, str], object]


@dataclasses.dataclass
class Option:
    """One piece of advice: options (config key -> value) that were checked to fit."""

    values: dict
    note: str = ""

    def cli(self) -> str:
        """The options as command-line flags, e.g. ``--learning-rate 2 --iterations 3`` (floats as ``%g``)."""
        return " ".join(f"{FLAGS.get(k, '--' + k.replace('_', '-'))} {_num(v)}" for k, v in self.values.items())

    def text(self) -> str:
        """The flags in backquotes, followed by the note in parentheses when there is one: one line of advice."""
        return f"`{self.cli()}`" + (f" ({self.note})" if self.note else "")


def _num(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


class _Budget:
    """At most ``builds`` checks or ``seconds`` of checking per piece of advice (mlp builds run a search)."""

    def __init__(self, builds: int = 80, seconds: float = 30.0) -> None:
        self.left, self.until = builds, time.monotonic() + seconds

    def take(self) -> bool:
        self.left -= 1
        return self.left >= 0 and time.monotonic() < self.until


def _try(build: Build, config: dict, X: np.ndarray, preset: str, budget: _Budget):
    """None when the job passes, else the refusal (an exception; a budget stop counts as one)."""
    if not budget.take():
        return HetrainUserError("advice budget spent")
    try:
        with np.errstate(all="ignore"):
            build(config, X, preset)
        return None
    except HetrainUserError as exc:
        return exc


def _passes(build: Build, config: dict, X: np.ndarray, preset: str, budget: _Budget) -> bool:
    return _try(build, config, X, preset, budget) is None


def _fix(build: Build, config: dict, X: np.ndarray, preset: str, err, changed: str, budget: _Budget) -> dict | None:
    """A second option that makes ``config`` (refused with ``err``) pass: a wider sigmoid for an interval
    refusal, fewer iterations for a depth refusal; None if none does (or ``changed`` is that option)."""
    from hetrain.circuits.approx import IntervalError

    from .base import DepthPlanError

    if isinstance(err, IntervalError) and changed != "sigmoid":
        key, values = "sigmoid", sigmoid_candidates(config.get("sigmoid"))
    elif isinstance(err, DepthPlanError) and changed not in ("iterations", "preset") and config.get("iterations"):
        key, values = "iterations", iteration_candidates(int(config["iterations"]))
    else:
        return None
    for v in values:
        if _passes(build, {**config, key: v}, X, preset, budget):
            return {key: v}
    return None


def sigmoid_candidates(spec: str | None) -> list[str]:
    """Wider sigmoid specs than ``spec``: same degree first (smallest wider bound), then degrees 7, 15."""
    approx = get_sigmoid(spec or "published")
    degree, bound = approx.degree, max(abs(v) for v in approx.interval)
    out = [f"deg{degree}:{b}" for b in BOUNDS if b > bound]
    for d in WIDER_DEGREES:
        if d > degree:
            out += [f"deg{d}:{b}" for b in BOUNDS if b >= bound]
    return out


def iteration_candidates(T: int, start: int | None = None) -> list[int]:
    """Fewer iterations than T, most first (all of them up to 12, a geometric selection beyond)."""
    top = min(T - 1, start) if start is not None else T - 1
    if top < 1:
        return []
    if top <= 12:
        return list(range(top, 0, -1))
    return sorted({top, *(max(1, int(top * f)) for f in (0.75, 0.5, 0.35, 0.25, 0.1)), 1}, reverse=True)


def _first(build: Build, config: dict, X: np.ndarray, preset: str, key: str, values, budget: _Budget,
           alone_first: bool = True) -> Option | None:
    """The first value of ``key`` with which the job passes, alone or with one ``_fix``. ``alone_first``:
    every value alone before any combination (else each value alone then combined, value by value: for
    iterations, the most that fit first)."""
    refused = []
    for v in values:
        err = _try(build, {**config, key: v}, X, preset, budget)
        if err is None:
            return Option({key: v})
        if not alone_first:
            extra = _fix(build, {**config, key: v}, X, preset, err, key, budget)
            if extra is not None:
                return Option({key: v, **extra})
        refused.append((v, err))
    for v, err in refused if alone_first else ():
        extra = _fix(build, {**config, key: v}, X, preset, err, key, budget)
        if extra is not None:
            return Option({key: v, **extra})
    return None


def interval_advice(build: Build, X: np.ndarray, config: dict, *, preset: str = "auto",
                    learning_rate: float | None = None, iterations: int | None = None, scale: float = 1.0,
                    scale_invariant: bool = False, kinds: Sequence[str] = KINDS, limit: int = 2) -> str:
    """A sentence naming up to ``limit`` options with which the job passes ``build`` (see module doc).

    ``config``: the user's options (config keys, as the CLI passes them); ``learning_rate``/``iterations``:
    the values the refused run used (None: unknown, then that kind starts from 1 / is skipped);
    ``scale``: the current ``--scale`` (X is already multiplied by it); ``scale_invariant``: the
    trainer's polynomial inputs do not depend on the input scale (say so instead of trying it)."""
    budget = _Budget()
    found: list[Option] = []
    for kind in kinds:
        if len(found) >= limit:
            break
        opt = None
        if kind == "sigmoid":
            opt = _first(build, config, X, preset, "sigmoid", sigmoid_candidates(config.get("sigmoid")), budget)
        elif kind == "learning_rate":
            lr = learning_rate if learning_rate is not None else config.get("learning_rate")
            values = [lr * f for f in LR_FACTORS] if lr is not None else [1.0, 0.5, 0.25]
            opt = _first(build, config, X, preset, "learning_rate", values, budget)
        elif kind == "iterations":
            T = iterations if iterations is not None else config.get("iterations")
            if T is not None:
                opt = _first(build, config, X, preset, "iterations", iteration_candidates(int(T)), budget)
        elif kind == "scale" and not scale_invariant:
            for f in SCALE_FACTORS:
                if _passes(build, config, X * f, preset, budget):
                    opt = Option({"scale": scale * f})
                    break
        if opt is not None:
            found.append(opt)
    tail = (" --scale does not help here: the quadratic-gradient step B̄⊙G is invariant to the feature scale "
            "(all but the bias column), so the span hardly moves."
            if scale_invariant else "")
    if not found:
        return "No single change of --sigmoid, --learning-rate or --iterations tried by the client fits." + tail
    return ("Options that fit (each checked on the plaintext twin with this data): "
            + " or ".join(o.text() for o in found) + "." + tail)


def depth_advice(build: Build, X: np.ndarray, config: dict, *, preset: str, iterations: int | None,
                 iterations_that_fit: int | None = None, presets: Sequence[str] = (),
                 refresh_build: Build | None = None, preset_fixed: bool = False) -> str:
    """A sentence naming the iterations that fit, the preset that would fit and ``--refresh client``,
    each checked with ``build`` (``refresh_build``: the same checks for a ``--refresh client`` job;
    None when the trainer cannot refresh). ``presets``: names to try, cheapest first (only those with
    more levels than the refused one: a preset adds nothing that fewer iterations do not).
    ``preset_fixed``: the parameters cannot change (a key directory's): no option names a preset."""
    budget = _Budget()
    found: list[Option] = []
    if iterations is not None:
        start = iterations_that_fit if iterations_that_fit is not None and iterations_that_fit > 0 else None
        opt = _first(build, config, X, preset, "iterations", iteration_candidates(int(iterations), start), budget,
                     alone_first=False)
        if opt is not None:
            found.append(opt)
    refused = []
    for p in presets:
        if p == preset:
            continue
        err = _try(build, config, X, p, budget)
        if err is None:
            found.append(Option({"preset": p}))
            break
        refused.append((p, err))
    else:
        for p, err in refused:
            extra = _fix(build, config, X, p, err, "preset", budget)
            if extra is not None:
                found.append(Option({"preset": p, **extra}))
                break
    if refresh_build is not None:
        note = "the client re-encrypts the state between iterations"
        if _passes(refresh_build, config, X, preset, budget):
            found.append(Option({"refresh": "client"}, note))
        elif preset != "auto" and not preset_fixed and _passes(refresh_build, config, X, "auto", budget):
            found.append(Option({"refresh": "client", "preset": "auto"}, note))
    if not found:
        return "No change of --iterations, --preset" + (" or --refresh" if refresh_build else "") + " tried by the client fits."
    return "Options that fit (each checked by the client): " + " or ".join(o.text() for o in found) + "."


def refusal_with_advice(exc: HetrainUserError, advice: str) -> HetrainUserError:
    """``exc`` (same type and attributes) with ``advice`` appended to its message."""
    base = getattr(exc, "facts", None) or str(exc)
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)
    new.args = (f"{base} {advice}",)
    return new
