"""Plans from the circuit: a trainer's own server iteration run on a data-free tracing engine.

Depth, levels per iteration, Galois keys (rotation steps) and operation counts are not counted by
hand beside each circuit: ``step`` runs ONE iteration of the trainer's server half
(``trainer.trace_iteration``, the very function ``server_train`` loops over) on ``TraceEngine``,
the simulation backend (ckks/sim_backend.py: the level rules, alignment and ``DepthExhausted`` of
every backend, engine.py) on all-zero vectors packed for the job's real ring (slots) and levels,
and records what happened: the state's levels after the iteration (None when it ran out of depth,
i.e. the iteration does not fit), the rotation steps it used, and its operations (the
``OpCounters`` every engine keeps). Nothing of the data enters: zeros of the right shapes only.

The protocol a trainer implements (models/base.py ``Trainer``):

    trace_key()                      hashable: the config entries that shape the circuit (not the
                                     values it computes on, e.g. a learning rate); part of the cache key
    trace_setup(engine, n, d, c)     -> (ctx, state): the server's fixed inputs (zeros, at the levels
                                     ``client_encrypt`` uses) and the fresh state, name -> list of
                                     ciphertexts (a state is rebuilt from its levels as zeros)
    trace_flavor(t)                  hashable: what distinguishes iteration t's circuit (e.g. Nesterov's
                                     extra product from the second iteration on, the W2-only first step)
    trace_iteration(engine, ctx, state, flavor) -> the state after one iteration

``chain`` runs iterations from the fresh state until one does not fit (how many fit one modulus
chain, what each consumes); ``server_train`` asks ``fits`` before every iteration whether the state
it holds still has the levels (else it refreshes). A bootstrapping job (refresh "bootstrap") traces on
an engine that bootstraps (``bootstrap_level``): the trainer then also bootstraps inside the iteration
where levels run out (models/inner_boot.py), ``bootstrap_step`` chooses before each iteration between
bootstrapping the state first or not (fewer bootstraps, traced) and ``bootstrap_run`` is the whole run
as the server runs it (the plan's bootstrap count is the engine's). Results are cached per (trainer, key, shapes,
parameters, state levels, flavor): a plan costs a few traced iterations once per process (measured
by bench/trace_cost.py: well under a second at the seed shapes).
"""
from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from typing import Hashable, Sequence

from threadpoolctl import threadpool_limits

from hetrain.ckks import CKKSParams, get_params
from hetrain.ckks.errors import DepthExhausted
from hetrain.ckks.sim_backend import SimEngine

# operation kinds that depend on where the client puts its inputs (levels, encodings), not on the
# circuit: left out of the traced operation counts
_PLACEMENT_OPS = frozenset({"encrypt", "decrypt", "encode", "mod_switch", "zero_result"})
_CACHE: "OrderedDict[tuple, StepTrace]" = OrderedDict()
_CACHE_SIZE = 4096
_SETUPS: dict = {}  # (engine, ctx, fresh levels) per trainer key, shapes and parameters
_SETUPS_SIZE = 16

Levels = tuple  # ((name, (level of each ciphertext, ...)), ...) sorted by name


class TraceEngine(SimEngine):
    """The INSECURE simulation engine on zeros, with a Galois key for every step: it records the
    rotation steps a circuit uses (``used_steps``, signed: a step past half the slots is the right
    rotation it is, e.g. -1 for slots - 1) instead of requiring them. ``bootstrap_level``: it bootstraps
    (to that level) like the job's engine does, so a trace of a bootstrapping run counts its bootstraps
    ("bootstrap" in ``ops``); None: it cannot, like SEAL."""

    backend_name = "trace-INSECURE"

    def __init__(self, params: CKKSParams, bootstrap_level: int | None = None) -> None:
        log = logging.getLogger("hetrain.ckks")
        level = log.level
        log.setLevel(logging.WARNING)  # "data is NOT encrypted": a trace holds no data at all
        try:
            super().__init__(params, (), force_insecure=True, bootstrap_level=bootstrap_level)
        finally:
            log.setLevel(level)
        self.used_steps: set[int] = set()

    def rotate(self, a, step):
        s = self.normalize_step(step)
        if s:
            self.used_steps.add(s if s <= self.slots // 2 else s - self.slots)
            if s not in self.rotation_steps:
                self.rotation_steps = self.rotation_steps | {s}
        return super().rotate(a, step)


@dataclasses.dataclass(frozen=True)
class StepTrace:
    """One traced iteration: ``levels`` of the state after it (``levels_of``; None: it did not fit),
    ``consumed`` (levels from the lowest input state ciphertext to the lowest output one; None: did not
    fit), ``ops`` (operation kind -> count, placement kinds left out) and the ``rotation_steps`` used."""

    levels: Levels | None
    consumed: int | None
    ops: dict
    rotation_steps: frozenset

    @property
    def fits(self) -> bool:
        """Whether the iteration ran without exhausting the levels (``levels`` is not None)."""
        return self.levels is not None


def levels_of(state: dict) -> Levels:
    """The levels of a state (name -> ciphertext or list of ciphertexts), as a hashable key."""
    out = []
    for name in sorted(state):
        v = state[name]
        cts = v if isinstance(v, (list, tuple)) else [v]
        out.append((name, tuple(int(ct.level) for ct in cts)))
    return tuple(out)


def lowest(levels: Levels) -> int:
    """The lowest level of any ciphertext in a state's ``levels`` (``levels_of``): what the state has left.
    Raises ValueError for a state without ciphertexts."""
    return min(lv for _, lvs in levels for lv in lvs)


def top_levels(trainer, shape: Sequence[int], params) -> Levels:
    """The levels of the trainer's fresh state (as ``trace_setup`` makes it) under ``params``."""
    return _fresh(trainer, tuple(int(x) for x in shape), get_params(params), None)


def step(trainer, shape: Sequence[int], params, levels: Levels | None, flavor: Hashable,
         bootstrap_level: int | None = None) -> StepTrace:
    """Trace one iteration of ``trainer`` (``flavor``) for data of ``shape`` = (n, d, c) under
    ``params`` from a state at ``levels`` (None: the fresh state). ``bootstrap_level``: the engine
    bootstraps to that level, so the trainer bootstraps inside the iteration where its levels run out
    (models/inner_boot.py; None: it cannot). Cached (module docstring)."""
    p = get_params(params)
    shape = tuple(int(x) for x in shape)
    levels = _fresh(trainer, shape, p, bootstrap_level) if levels is None else levels
    key = (type(trainer).__qualname__, trainer.name, trainer.trace_key(), shape, p, levels, flavor, bootstrap_level)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    engine, ctx = _setup(trainer, shape, p, bootstrap_level)
    engine.used_steps = set()
    state = _zeros(engine, levels)
    before = engine.counters.snapshot()
    try:
        with threadpool_limits(1):  # vectors of a few thousand slots: BLAS threads only wait for busy cores
            out = trainer.trace_iteration(engine, ctx, state, flavor)
    except DepthExhausted:
        result = StepTrace(None, None, _ops(engine, before), frozenset(engine.used_steps))
    else:
        after = levels_of(out)
        result = StepTrace(after, lowest(levels) - lowest(after), _ops(engine, before), frozenset(engine.used_steps))
    _CACHE[key] = result
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result


def fits(trainer, shape: Sequence[int], params, state: dict, flavor: Hashable) -> bool:
    """Whether the next iteration (``flavor``) fits the levels ``state`` holds (the mid-run question
    of ``server_train``: refresh now or not)."""
    return step(trainer, shape, params, levels_of(state), flavor).fits


def chain(trainer, shape: Sequence[int], params, flavors: Sequence[Hashable]) -> list[StepTrace]:
    """Iterations with these flavors one after the other from the fresh state, until one does not fit:
    the traces of those that fit (so ``len`` is how many fit one modulus chain)."""
    out, levels = [], None
    for f in flavors:
        s = step(trainer, shape, params, levels, f)
        if not s.fits:
            break
        out.append(s)
        levels = s.levels
    return out


def state_size(levels: Levels) -> int:
    """Ciphertexts of a state at ``levels`` (``levels_of``): what a refresh of the whole state bootstraps."""
    return sum(len(lvs) for _, lvs in levels)


def bootstrap_step(trainer, shape: Sequence[int], params, levels: Levels | None, flavor: Hashable,
                   bootstrap_level: int) -> tuple[bool, StepTrace]:
    """The server's choice before an iteration when the job bootstraps (refresh "bootstrap"): run it on
    the state as it is, bootstrapping inside the iteration wherever the levels run out
    (models/inner_boot.py), or first bootstrap every state ciphertext (the refresh hook) and then run it
    (again bootstrapping inside where needed), whichever bootstraps fewer ciphertexts, both traced.
    Returns (refresh the state first, the trace of the iteration that runs); a tie keeps the state.
    The trace's ``fits`` is False when the iteration fits neither way (a segment needs more levels
    than a bootstrap restores). ``plan`` and ``server_train`` both call this: the plan's count is the run's."""
    p = get_params(params)
    here = step(trainer, shape, p, levels, flavor, bootstrap_level)
    now = levels if levels is not None else _fresh(trainer, tuple(int(x) for x in shape), p, bootstrap_level)
    refreshed = tuple((name, (int(bootstrap_level),) * len(lvs)) for name, lvs in now)
    there = step(trainer, shape, p, refreshed, flavor, bootstrap_level)
    if here.fits and (not there.fits or here.ops.get("bootstrap", 0) <= state_size(now) + there.ops.get("bootstrap", 0)):
        return False, here
    return True, there


def bootstrap_run(trainer, shape: Sequence[int], params, flavors: Sequence[Hashable],
                  bootstrap_level: int) -> list[tuple[int, StepTrace]] | None:
    """The planned run of a bootstrapping job, iteration by iteration as ``server_train`` runs it
    (``bootstrap_step`` from the fresh state): [(state ciphertexts bootstrapped before the iteration,
    its trace, whose ops count the bootstraps inside it)], or None when an iteration does not fit even
    with bootstraps."""
    out, levels = [], None
    for f in flavors:
        refresh, s = bootstrap_step(trainer, shape, params, levels, f, bootstrap_level)
        if not s.fits:
            return None
        now = levels if levels is not None else top_levels_at(trainer, shape, params, bootstrap_level)
        out.append((state_size(now) if refresh else 0, s))
        levels = s.levels
    return out


def planned_bootstraps(trainer, shape: Sequence[int], params, flavors: Sequence[Hashable],
                       bootstrap_level: int) -> tuple[dict | None, dict | None, set]:
    """``Plan.bootstraps``, ``Plan.bootstrap_ops`` and the rotation steps of the planned bootstrapping run
    (``bootstrap_run``): {"level", "state": [per iteration], "in_iteration": [per iteration]}, its
    operation counts with every bootstrap, and the steps it uses; (None, None, set()) when an iteration
    does not fit even with bootstraps inside it."""
    booted = bootstrap_run(trainer, shape, params, flavors, bootstrap_level)
    if booted is None:
        return None, None, set()
    boots = {"level": int(bootstrap_level), "state": [n for n, _ in booted],
             "in_iteration": [s.ops.get("bootstrap", 0) for _, s in booted]}
    ops = add_ops(*(s.ops for _, s in booted), {"bootstrap": sum(boots["state"])})
    return boots, ops, set().union(*(s.rotation_steps for _, s in booted))


def top_levels_at(trainer, shape: Sequence[int], params, bootstrap_level: int | None) -> Levels:
    """``top_levels`` of the tracing engine that bootstraps to ``bootstrap_level`` (the same fresh state)."""
    return _fresh(trainer, tuple(int(x) for x in shape), get_params(params), bootstrap_level)


def add_ops(*counts: dict) -> dict:
    """Operation counts summed kind by kind."""
    out: dict = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def per_iteration(first: int, later: int) -> dict[str, int]:
    """``Plan.levels_per_iteration`` of a traced schedule: levels of the first iteration and of a later one."""
    return {"iteration 1": int(first), "each later iteration": int(later)}


DEEPER_LEVELS = 256  # the chain of ``deeper``: far more than any iteration of these trainers needs


def deeper(params: CKKSParams, levels: int = DEEPER_LEVELS) -> CKKSParams:
    """``params`` with ``levels`` levels (the same ring, slots and scale): for tracing only, to measure
    the cost of an iteration that does not fit ``params`` itself."""
    mid = params.coeff_bits[1] if params.levels else params.scale_bits
    return dataclasses.replace(params, coeff_bits=(params.coeff_bits[0],) + (mid,) * int(levels)
                               + (params.coeff_bits[-1],), name=f"{params.name}-traced-deeper")


def deep_step(trainer, shape: Sequence[int], params, levels: Levels | None, flavor: Hashable) -> StepTrace:
    """``step`` on ``deeper(params)``: what an iteration costs when it does not fit ``params``. Raises
    DepthPlanError when it does not fit even there."""
    from .base import DepthPlanError

    s = step(trainer, shape, deeper(params), levels, flavor)
    if not s.fits:
        raise DepthPlanError(f"one {trainer.name} iteration needs more than {DEEPER_LEVELS} levels: use smaller "
                             "layers or lower-degree polynomials")
    return s


def clear_cache() -> None:
    """Forget every cached trace and setup (module docstring), e.g. after a trainer's circuit changed."""
    from . import inner_boot

    _CACHE.clear()
    _SETUPS.clear()
    inner_boot.clear_cache()


def _setup(trainer, shape: tuple, p: CKKSParams, bootstrap_level: int | None = None) -> tuple:
    """(engine, ctx, fresh levels) of ``trace_setup``, made once per trainer key, shapes, parameters and
    bootstrap level."""
    key = ("setup", type(trainer).__qualname__, trainer.name, trainer.trace_key(), shape, p, bootstrap_level)
    hit = _SETUPS.get(key)
    if hit is None:
        engine = TraceEngine(p, bootstrap_level)
        ctx, state = trainer.trace_setup(engine, *shape)
        hit = _SETUPS[key] = (engine, ctx, levels_of(state))
        if len(_SETUPS) > _SETUPS_SIZE:
            _SETUPS.pop(next(iter(_SETUPS)))
    return hit[:2]


def _fresh(trainer, shape: tuple, p: CKKSParams, bootstrap_level: int | None = None) -> Levels:
    _setup(trainer, shape, p, bootstrap_level)
    return _SETUPS[("setup", type(trainer).__qualname__, trainer.name, trainer.trace_key(), shape, p, bootstrap_level)][2]


def _zeros(engine, levels: Levels) -> dict:
    """A state of all-zero ciphertexts at ``levels``: all a trace needs to know of a state."""
    return {name: [engine.encrypt(0.0, level=lv) for lv in lvs] for name, lvs in levels}


def _ops(engine, before: dict) -> dict:
    return {k: v for k, v in engine.counters.diff(before).items() if k not in _PLACEMENT_OPS}
