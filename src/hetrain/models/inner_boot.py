"""Bootstrapping inside an iteration: where an iteration is deeper than the levels a bootstrap restores.

A job with ``refresh="bootstrap"`` refreshes its state between iterations (protocol/server.py
``BootstrapRefresh``). When one iteration needs more levels than a bootstrap restores (mlp-dvr with
two hidden layers needs 14-15, OpenFHE's 128-bit ``openfhe-boot`` restores 6), the trainer also
bootstraps intermediate ciphertexts inside the iteration: at the start of each *segment* of its
circuit (e.g. a layer's activation, a backward step) it calls

    ct = ensure_levels(engine, ct, need, "layer 2's pre-activation")

which bootstraps ``ct`` when it holds fewer than ``need`` levels. ``need`` is not counted by hand: it
is what the segment consumes, measured by tracing the segment's own code once (``consumed``: the
trainer's functions run on zeros on the tracing engine, models/trace.py, and cached).

Rule (why it gives the fewest bootstraps along a chain of segments): a ciphertext is bootstrapped at
the latest point, the start of the first segment it cannot finish, and never earlier. Every bootstrap
restores the same level (``engine.bootstrap_level``), so bootstrapping earlier can only leave the
ciphertext with as many levels as bootstrapping here, or fewer, at every later point; by the exchange
argument of refuelling to a full tank, the greedy "only when it cannot go on" rule needs the fewest
refuels on a path. The points themselves are chosen where one ciphertext carries the whole segment
(a pre-activation, from which both the activation and its derivative are computed: one bootstrap,
not two), never the data X. Between iterations, ``trace.bootstrap_step`` decides by traced counts
whether to bootstrap the whole state first or to bootstrap inside the iteration.

A lower bound shows what is left to gain: each data group's pass is a path of L levels (mlp-dvr with
two hidden layers: 14) from a state at level s, and a bootstrap adds at most B levels (the bootstrap
level), so a group needs at least ceil((L − s) / B) bootstraps. 4-8-4-3 on openfhe-boot-test (B = s = 6):
ceil(8 / 6) = 2 per group, which is what the rule bootstraps (16 for 8 groups; bench/iris.py
--without-client). Fewer would need fewer groups (more samples per ciphertext) or more levels per
bootstrap, not another placement.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable

from hetrain.ckks import get_params
from hetrain.ckks.errors import DepthExhausted

_NEEDS: "OrderedDict[tuple, int]" = OrderedDict()
_NEEDS_SIZE = 1024


def ensure_levels(engine, ct, need: int, what: str = "a ciphertext"):
    """``ct`` with at least ``need`` levels: ``ct`` itself when it has them, else ``engine.bootstrap(ct)``.

    ``need``: levels the segment starting here consumes (``consumed``). Raises DepthExhausted (the
    ckks error of an iteration that does not fit; the planner reports it as a DepthPlanError) naming
    ``what`` when the engine cannot bootstrap, or when ``need`` exceeds the levels a bootstrap
    restores (``engine.bootstrap_level``): then no bootstrap can help."""
    if ct.level >= need:
        return ct
    level = engine.bootstrap_level if engine.can_bootstrap else None
    if level is None:
        raise DepthExhausted(f"{what} needs {need} levels and holds {ct.level}; the {engine.backend_name} engine "
                             "cannot bootstrap: use --refresh bootstrap with a backend that bootstraps (openfhe)")
    if need > level:
        raise DepthExhausted(f"{what} needs {need} levels but a bootstrap restores only {level}: use a preset with "
                             "more levels after a bootstrap, or lower-degree sigmoids")
    return engine.bootstrap(ct)


def consumed(key: Hashable, params, probe: Callable) -> int:
    """Levels the segment ``probe`` consumes, traced once per ``key`` and ring (cached).

    ``probe(engine, top)`` runs the segment's own code on the tracing engine (models/trace.py) of a
    deep chain of ``params``' ring; ``top()`` makes an all-zero ciphertext at the top level. It returns
    the ciphertexts the segment ends with (including one product per output that is multiplied again
    before the next ensure point); the result is top level − their lowest level."""
    from .trace import TraceEngine, deeper

    p = deeper(get_params(params))
    k = (key, p)
    hit = _NEEDS.get(k)
    if hit is not None:
        return hit
    engine = TraceEngine(p)
    top = p.levels

    def fresh():
        return engine.encrypt(0.0, level=top)

    outs = probe(engine, fresh)
    need = top - min(int(ct.level) for ct in outs)
    _NEEDS[k] = need
    if len(_NEEDS) > _NEEDS_SIZE:
        _NEEDS.popitem(last=False)
    return need


def inside(refresh, engine) -> bool:
    """Whether ``server_train`` also bootstraps inside iterations: its refresh hook bootstraps (``via_client``
    False, protocol/server.BootstrapRefresh: no round trip) and the engine can."""
    return refresh is not None and not getattr(refresh, "via_client", True) and engine.can_bootstrap


def refresh_first(trainer, shape, engine, levels, flavor, iteration: int) -> bool:
    """Whether to bootstrap the whole state before ``iteration`` (0-based) rather than only inside it
    (``trace.bootstrap_step``: fewer bootstraps, traced). Raises DepthPlanError when the iteration does
    not fit even with bootstraps inside it."""
    from .base import DepthPlanError
    from .trace import bootstrap_step

    first, step = bootstrap_step(trainer, shape, engine.params, levels, flavor, engine.bootstrap_level)
    if not step.fits:
        raise DepthPlanError(f"iteration {iteration + 1} does not fit even with bootstraps inside it (a bootstrap "
                             f"restores {engine.bootstrap_level} levels): use a preset with more levels after a "
                             "bootstrap, or lower-degree sigmoids")
    return first


def counted(engine, refresh, iteration: Callable):
    """(``iteration()``, the ciphertexts it bootstrapped): counted on the engine (workers' counts are merged
    in) and reported to the refresh hook's ``add_bootstraps``, so the server's statistics count them."""
    before = engine.counters.counts.get("bootstrap", 0)
    out = iteration()
    done = engine.counters.counts.get("bootstrap", 0) - before
    if done:
        getattr(refresh, "add_bootstraps", lambda n: None)(done)
    return out, done


def clear_cache() -> None:
    """Forget every traced need (``consumed``)."""
    _NEEDS.clear()
