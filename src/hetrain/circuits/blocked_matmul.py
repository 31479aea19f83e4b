"""The two training products in the blocked packing (see ``packing.BlockedPacking``).

forward:  z[g]  = rotsum_l( Σ_h X[g,h] ⊙ U[h] )        valid where l = 0      1 level
spread:   E[g]  = rotsum_l( q[g] )  (q zero where l ≥ 1)  gradient packing     0 levels
gradient: G[h]  = rotsum_i( Σ_g E[g] ⊙ X̃[g,h] )       U's packing            1 level

Each Σ is a single ``mul_sum`` (one relinearisation and rescale for the whole sum). The sample
groups g (forward, spread) and the feature blocks h (gradient) are independent tasks: with an
``executor`` (hetrain.ckks.executor) they run on its workers, with the same operations.

The blocked layout is this project's; each rotsum is the rotate-and-sum of Halevi–Shoup
("Algorithms in HElib", CRYPTO 2014), log2 of its width in rotations.
"""
from __future__ import annotations

from .packing import BlockedPacking
from .tasks import run_tasks


def forward_group(engine, p: BlockedPacking, U: list, Xg: list):
    """z of one sample group: ``forward`` for group g is ``forward_group(engine, p, U, X[g·H:(g+1)·H])``."""
    return engine.sum_slots(engine.mul_sum(list(zip(Xg, U))), p.L, p.C)


def spread_group(engine, p: BlockedPacking, q):
    """``spread`` of one group's ciphertext."""
    return engine.sum_slots(q, p.L, p.C)


def gradient_block(engine, p: BlockedPacking, E: list, Xth: list):
    """G of one feature block h: ``gradient``'s block h is ``gradient_block(engine, p, E, [X̃[g·H + h] for g])``."""
    return engine.sum_slots(engine.mul_sum(list(zip(E, Xth))), p.I, p.C * p.L)


def forward(engine, p: BlockedPacking, X: list, U: list, executor=None) -> list:
    """z = X·Uᵀ, one ciphertext per sample group (valid where l = 0; garbage elsewhere)."""
    H = p.n_fblocks
    tasks = [(X[g * H:(g + 1) * H],) for g in range(p.n_groups)]
    return run_tasks(engine, executor, forward_group, tasks, (p, U))


def spread(engine, p: BlockedPacking, q: list, executor=None) -> list:
    """Copy the l = 0 values of each group over l (the permuted order ``p.grad_sample()``)."""
    return run_tasks(engine, executor, spread_group, [(x,) for x in q], (p,))


def gradient(engine, p: BlockedPacking, E: list, Xt: list, executor=None) -> list:
    """G = Eᵀ·X̃ in U's packing (replicated over samples), one ciphertext per feature block."""
    H = p.n_fblocks
    tasks = [([Xt[g * H + h] for g in range(p.n_groups)],) for h in range(H)]
    return run_tasks(engine, executor, gradient_block, tasks, (p, E))
