"""The two training products in the blocked layout (see ``packing.BlockedPacking``).

forward:  z[g]  = rotsum_l( Σ_h X[g,h] ⊙ U[h] )        valid where l = 0      1 level
spread:   E[g]  = rotsum_l( q[g] )  (q zero where l ≥ 1)  gradient layout      0 levels
gradient: G[h]  = rotsum_i( Σ_g E[g] ⊙ X̃[g,h] )       U's layout             1 level

Each Σ is a single ``mul_sum`` (one relinearisation and rescale for the whole sum).
"""
from __future__ import annotations

from .packing import BlockedPacking


def forward(engine, p: BlockedPacking, X: list, U: list) -> list:
    """z = X·Uᵀ, one ciphertext per sample group (valid where l = 0; garbage elsewhere)."""
    H = p.n_fblocks
    out = []
    for g in range(p.n_groups):
        acc = engine.mul_sum([(X[g * H + h], U[h]) for h in range(H)])
        out.append(engine.sum_slots(acc, p.L, p.C))
    return out


def spread(engine, p: BlockedPacking, q: list) -> list:
    """Copy the l = 0 values of each group over l (the permuted order ``p.grad_sample()``)."""
    return [engine.sum_slots(x, p.L, p.C) for x in q]


def gradient(engine, p: BlockedPacking, E: list, Xt: list) -> list:
    """G = Eᵀ·X̃ in U's layout (replicated over samples), one ciphertext per feature block."""
    H = p.n_fblocks
    out = []
    for h in range(H):
        acc = engine.mul_sum([(E[g], Xt[g * H + h]) for g in range(p.n_groups)])
        out.append(engine.sum_slots(acc, p.I, p.C * p.L))
    return out
