"""The row-major baseline of the Iris network (mlp-diagonal's comparison): one full training iteration WITHOUT the
cheap-transpose idea, for bench/iris.py to count and time against mlp-diagonal. A benchmark's baseline,
not part of the package (tests/test_rowmajor.py loads it with conftest's ``bench_module`` fixture).

Same network, same scaled arithmetic (``mlp_diagonal_twin.scaled_step``), same batching of the
samples in slot blocks, same sample sums (all-reduce over blocks) and the same level-saving folds
(learning rates and the output slope folded into the data, the sigmoid on z/B). Only the weight
layout differs: W1 (H×(d+1)) and W2 (c×(H+1)) are row-major (``circuits.rowmajor``) and W2ᵀ is
re-packed from the encrypted W2 every iteration. Not a trainer (no refresh, no plan): one full
iteration from given weights, checked against the twin's step.

Levels (top L, weights at L): z1 L−1, σ_h L−1−d, gather â L−2−d, z2/δ2 L−3−d, gather δ2 L−4−d,
u = W2ᵀδ2 L−5−d (W2ᵀ at L−1), δ1 L−6−d, spread δ1 L−7−d, W1 gradient L−8−d; W2 gradient L−5−d.
With the degree-7 hidden sigmoid (d = 3) that is 11 levels: it needs n32768 (n16384-deep has 9).
"""
from __future__ import annotations

import numpy as np

from hetrain.circuits import diagonal as dg
from hetrain.circuits import rowmajor as rmj
from hetrain.circuits.poly import eval_poly
from hetrain.ckks import PlainVector

from hetrain.models.mlp_diagonal_twin import Scales


class RowMajorIteration:
    """Client packing and the server's full iteration for the row-major baseline of ``trainer``."""

    def __init__(self, trainer, n: int, d: int, c: int, slots: int) -> None:
        self.T, self.n, self.d, self.c = trainer, n, d, c
        H = trainer.H
        self.layout = dg.SampleLayout(n, slots)
        width = max(rmj.RowMajor.for_matrix(H, d + 1, self.layout.block).width,
                    rmj.RowMajor.for_matrix(c, H + 1, self.layout.block).width)
        # one segment width for both layers: z1 (rows of W1) and u (rows of W2ᵀ) meet slot by slot in δ1
        self.w1, self.w2 = rmj.RowMajor(H, d + 1, width), rmj.RowMajor(c, H + 1, width)
        self.scales = Scales.of(trainer.lr1, trainer.lr2, n, trainer.out_sig)

    def rotation_steps(self) -> list[int]:
        return rmj.steps_for_iteration(self.w1, self.w2, self.layout)

    def client_encrypt(self, eng, X: np.ndarray, Y: np.ndarray, V1: np.ndarray, V2: np.ndarray) -> dict:
        """Inputs and weights (scaled V1, V2 of the twin) for one iteration."""
        s, L = self.scales, self.layout
        xh = s.x * np.hstack([X, np.ones((len(X), 1))])
        return {"x": eng.encrypt(L.place(self.w1.tiled(xh) / self.T._bound())),  # z1/B, as mlp-diagonal
                "xg": eng.encrypt(L.place(self.w1.tiled(xh))),
                "delta0": eng.encrypt(L.place(self.w2.strided(s.o0 - Y))),
                "w1": eng.encrypt(L.replicate(self.w1.pack(V1))),
                "w2": eng.encrypt(L.replicate(self.w2.pack(V2)))}

    def decrypt(self, eng, state: dict) -> tuple[np.ndarray, np.ndarray]:
        blk = self.layout.block
        return (self.w1.unpack(eng.decrypt(state["w1"])[:blk]), self.w2.unpack(eng.decrypt(state["w2"])[:blk]))

    def iteration(self, eng, inp: dict) -> dict:
        T, L, w1, w2, H = self.T, self.layout, self.w1, self.w2, self.T.H
        sc = self.scales
        powers = lambda c: np.array(c) * T._bound() ** np.arange(len(c))  # noqa: E731  (polynomial in z/B)
        sig = powers(T.hidden_sig.coeffs) * sc.a
        dsig = list(powers(T.hidden_sig.derivative().coeffs) * sc.dsig)
        const = PlainVector(L.replicate_real(np.r_[np.full(H, sig[0]), sc.a * T.hb]))
        # forward
        z1 = rmj.matvec(eng, inp["w1"], inp["x"], w1)                                  # strided at j·width
        a_str = eval_poly(eng, z1, [0.0] + list(sig[1:]))
        a = eng.add(rmj.gather(eng, a_str, w1, rmj.gather_masks(w1, L)), const)         # compact [σ(z1), hb]
        a_t = rmj.tile(eng, a, w2, w2.rows)                                             # in W2's row segments
        delta2 = eng.add(rmj.matvec(eng, inp["w2"], a_t, w2), inp["delta0"])          # strided at i·width
        # backward: W2ᵀ re-packed, δ2 gathered and tiled into the H rows of W2ᵀ that δ1 needs
        wt = rmj.transpose(eng, inp["w2"], w2, rmj.transpose_masks(w2, L))
        d2_t = rmj.tile(eng, rmj.gather(eng, delta2, w2, rmj.gather_masks(w2, L)), w2.T, H)
        u = rmj.matvec(eng, wt, d2_t, w2.T)                                             # strided at j·width
        delta1 = eng.mul(u, eval_poly(eng, z1, dsig))
        # gradients, already row-major
        g2 = rmj.outer_sum(eng, rmj.spread(eng, delta2, w2, rmj.spread_mask(w2, L)), a_t, L)
        g1 = rmj.outer_sum(eng, rmj.spread(eng, delta1, w1, rmj.spread_mask(w1, L)), inp["xg"], L)
        return {**inp, "w1": eng.sub(inp["w1"], g1), "w2": eng.sub(inp["w2"], g2)}
