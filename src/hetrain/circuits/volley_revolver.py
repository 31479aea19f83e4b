"""The two training products in the published Volley Revolver packing (``packing.VolleyRevolverPacking``).

forward:  for each data ciphertext k and r < R: rowsum( X[k] ⊙ rot(U, D·r) ), valid at slot D·j
spread:   each masked block copied along its row (right rotations)
gradient: Σ_r rot( Σ_k E[k,r] ⊙ X̃[k], −D·r )

Kept for comparison: it needs R·K products and 2·log2(D) rotations for each of them.
"""
from __future__ import annotations

from .packing import VolleyRevolverPacking


def forward(engine, p: VolleyRevolverPacking, X: list, U: list, executor=None) -> list:
    """Forward products of the Volley Revolver layout (Chiang, arXiv:2201.12577): R·K ciphertexts, in order
    (k, r), each rowsum(X[k] ⊙ rot(U[0], D·r)), valid at slot D·j of each row (``p.unpack_forward``).

    ``X``: the K = ``p.n_groups`` data ciphertexts; ``U``: the one weight ciphertext. One level consumed;
    R - 1 + R·K·log2 D rotations. ``executor`` is accepted for the common signature and not used.
    """
    rotated = [engine.rotate(U[0], p.D * r) for r in range(p.R)]  # shared by every data ciphertext
    out = []
    for k in range(p.n_groups):
        for r in range(p.R):
            out.append(engine.sum_slots(engine.mul(X[k], rotated[r]), p.D, 1))
    return out


def spread(engine, p: VolleyRevolverPacking, q: list, executor=None) -> list:
    """Each masked forward block copied along its row (rotate-and-sum with right rotations, log2 D each): no level."""
    return [engine.sum_slots(x, p.D, -1) for x in q]


def gradient(engine, p: VolleyRevolverPacking, E: list, Xt: list, executor=None) -> list:
    """The gradient Σ_r rot(Σ_k E[k,r] ⊙ X̃[k], -D·r) as one ciphertext in the weights' layout.

    ``E``: the R·K error blocks in forward order; ``Xt``: the K data ciphertexts of X̃. One level (one
    relinearisation per r, via ``mul_sum``), R - 1 rotations; ``executor`` is not used.
    """
    acc = None
    for r in range(p.R):
        part = engine.mul_sum([(E[k * p.R + r], Xt[k]) for k in range(p.n_groups)])
        part = engine.rotate(part, p.D * (p.R - r))  # = right by D·r, with the forward's keys
        acc = part if acc is None else engine.add(acc, part)
    return [acc]
