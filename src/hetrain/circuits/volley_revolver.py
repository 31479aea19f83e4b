"""The two training products in the published Volley Revolver packing (``packing.VolleyRevolverPacking``).

forward:  for each data ciphertext k and r < R: rowsum( X[k] ⊙ rot(U, D·r) ), valid at slot D·j
spread:   each masked block copied along its row (right rotations)
gradient: Σ_r rot( Σ_k E[k,r] ⊙ X̃[k], −D·r )

Kept for comparison: it needs R·K products and 2·log2(D) rotations for each of them.
"""
from __future__ import annotations

from .packing import VolleyRevolverPacking


def forward(engine, p: VolleyRevolverPacking, X: list, U: list, executor=None) -> list:
    rotated = [engine.rotate(U[0], p.D * r) for r in range(p.R)]  # shared by every data ciphertext
    out = []
    for k in range(p.n_groups):
        for r in range(p.R):
            out.append(engine.sum_slots(engine.mul(X[k], rotated[r]), p.D, 1))
    return out


def spread(engine, p: VolleyRevolverPacking, q: list, executor=None) -> list:
    return [engine.sum_slots(x, p.D, -1) for x in q]


def gradient(engine, p: VolleyRevolverPacking, E: list, Xt: list, executor=None) -> list:
    acc = None
    for r in range(p.R):
        part = engine.mul_sum([(E[k * p.R + r], Xt[k]) for k in range(p.n_groups)])
        part = engine.rotate(part, p.D * (p.R - r))  # = right by D·r, with the forward's keys
        acc = part if acc is None else engine.add(acc, part)
    return [acc]
