"""Packings for the two products of logistic-regression training: index maps NumPy <-> slots.

Both implement ``packings.Packing`` (pack/unpack of the weights U, their ciphertext count and the
rotation steps of the circuits) and are registered there by name ("blocked", "volley-revolver").

Notation: n samples, d features (bias included), c classes; z = X·Uᵀ (n × c) is the forward
product, G = Eᵀ·X̃ (c × d) the gradient product. Only NumPy here: the circuits that use these
maps live in ``blocked_matmul.py`` and ``volley_revolver.py``.

A rotate-and-sum over the OUTERMOST index of a packing needs no mask: rotations are cyclic
over the whole vector, so every slot receives the complete sum. A sum over an inner index leaves
garbage where it wraps into the neighbouring block, which a (plaintext) mask must remove.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hetrain.ckks.pow2 import log2_pow2, next_pow2

from .errors import LayoutError


@dataclasses.dataclass(frozen=True)
class BlockedPacking:
    """The fast packing: every ciphertext is a block of I samples × L features × C class slots.

    slot(i, l, k) = (i·L + l)·C + k, with I·L·C = slots (C = classes rounded up to a power of 2).
    Ciphertext (g, h) covers samples g·I.. and features h·L.. ; X is replicated over the class
    index, weights U over the sample index, so both products are slot-wise multiplications:

    * forward: Σ_h X[g,h]·U[h] across ciphertexts (one relinearisation per g), then a short
      rotate-and-sum over l (log2 L rotations); z is valid where l = 0 (masked in the sigmoid);
    * the masked sigmoid output is spread back over l with the SAME rotations (left ones), which
      hands the slots l ≥ 1 of sample row i the value of row i+1 (mod I): the client uploads the
      gradient's copy X̃ in that permuted order (``grad_sample``), so no second set of keys is needed;
    * gradient: Σ_g E[g]·X̃[g,h] across ciphertexts, then a rotate-and-sum over the outermost
      index i (log2 I rotations, no mask): the result is in U's packing, replicated over i.

    Rotation steps: C·2^k (k < log2 L) and C·L·2^k (k < log2 I): log2(slots/C) keys in all.
    """

    n: int
    d: int
    c: int
    slots: int
    I: int
    L: int
    C: int

    name = "blocked"

    @classmethod
    def choose(cls, n: int, d: int, c: int, slots: int) -> "BlockedPacking":
        """The block shape with the fewest rotations per iteration (then the fewest ciphertexts).
        Raises LayoutError when the classes (rounded up to a power of two) need more than half the slots.
        """
        C = next_pow2(c)
        if C > slots // 2:
            raise LayoutError(f"{c} classes do not fit the blocked packing in {slots} slots")
        best = None
        I = 1
        while I <= slots // C:
            L = slots // C // I
            p = cls(n, d, c, slots, I, L, C)
            key = (p.rotations_per_iteration(), p.n_groups * p.n_fblocks)
            if best is None or key < best[0]:
                best = (key, p)
            I *= 2
        return best[1]

    @property
    def n_groups(self) -> int:  # sample blocks g
        """Sample blocks g: ceil(n / I)."""
        return -(-self.n // self.I)

    @property
    def n_fblocks(self) -> int:  # feature blocks h
        """Feature blocks h: ceil(d / L)."""
        return -(-self.d // self.L)

    def rotations_per_iteration(self) -> int:
        """Rotations in one training iteration: 2·log2 L per sample block (row sum and spread) plus log2 I per
        feature block (gradient's sum over samples).
        """
        return self.n_groups * 2 * log2_pow2(self.L) + self.n_fblocks * log2_pow2(self.I)

    def rotation_steps(self) -> list[int]:
        """Galois steps C·2^k (k < log2 L) and C·L·2^k (k < log2 I): log2(slots / C) keys."""
        return [self.C << k for k in range(log2_pow2(self.L))] + [(self.C * self.L) << k for k in range(log2_pow2(self.I))]

    def describe(self) -> dict:
        """The block shape for logs and reports: layout name, I, L, C, groups, feature blocks,
        ciphertexts per copy of X."""
        return {"layout": self.name, "I": self.I, "L": self.L, "C": self.C, "groups": self.n_groups,
                "feature_blocks": self.n_fblocks, "ciphertexts_per_copy_of_X": self.n_groups * self.n_fblocks}

    # --------------------------------------------------------------- index maps
    def _grid(self):
        i, l, k = np.meshgrid(np.arange(self.I), np.arange(self.L), np.arange(self.C), indexing="ij")
        return i.ravel(), l.ravel(), k.ravel()  # in slot order

    def grad_sample(self) -> np.ndarray:
        """Sample offset (within a group) held by each slot of the gradient layout: i, or i+1 mod I where l ≥ 1."""
        i, l, _ = self._grid()
        return np.where(l == 0, i, (i + 1) % self.I)

    def _take(self, M: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        ok = (rows < M.shape[0]) & (cols < M.shape[1])
        out = np.zeros(rows.shape)
        out[ok] = M[rows[ok], cols[ok]]
        return out

    def pack_forward_data(self, X: np.ndarray) -> list[np.ndarray]:
        """X (n × d) -> vectors [g][h] (flattened g-major), X replicated over the class index."""
        i, l, _ = self._grid()
        return [self._take(X, g * self.I + i, h * self.L + l) for g in range(self.n_groups) for h in range(self.n_fblocks)]

    def pack_gradient_data(self, Xt: np.ndarray) -> list[np.ndarray]:
        """X̃ (n × d) in the gradient's permuted sample order, [g][h] flattened g-major."""
        s = self.grad_sample()
        _, l, _ = self._grid()
        return [self._take(Xt, g * self.I + s, h * self.L + l) for g in range(self.n_groups) for h in range(self.n_fblocks)]

    def pack_labels(self, Y: np.ndarray) -> list[np.ndarray]:
        """Y (n × c) in the gradient's packing (replicated over l, permuted like X̃), one vector per group."""
        s = self.grad_sample()
        _, _, k = self._grid()
        return [self._take(Y, g * self.I + s, k) for g in range(self.n_groups)]

    # ---------------------------------------------------- the Packing interface (packings.py): the weights
    def _check_shape(self, shape) -> None:
        if shape[0] > self.C:
            raise LayoutError(f"a matrix of {shape[0]} rows does not fit the blocked packing's {self.C} class slots")

    def n_ciphertexts(self, shape: tuple[int, int]) -> int:
        """Ciphertexts holding an r × k weight matrix (r ≤ C): one per block of L columns."""
        self._check_shape(shape)
        return -(-int(shape[1]) // self.L)

    def pack(self, U: np.ndarray) -> list[np.ndarray]:
        """U (c × d) -> one vector per feature block (``n_ciphertexts(U.shape)``), replicated over the
        sample index."""
        U = np.asarray(U, dtype=np.float64)
        self._check_shape(U.shape)
        _, l, k = self._grid()
        return [self._take(U, k, h * self.L + l) for h in range(self.n_ciphertexts(U.shape))]

    def unpack(self, vectors, shape: tuple[int, int]) -> np.ndarray:
        """Inverse of ``pack`` for a ``shape`` matrix (reads sample row 0 of each block)."""
        self._check_shape(shape)
        U = np.zeros((self.C, len(vectors) * self.L))
        for h, v in enumerate(vectors):
            blk = np.asarray(v)[: self.L * self.C].reshape(self.L, self.C)
            U[:, h * self.L:(h + 1) * self.L] = blk.T
        return U[: shape[0], : shape[1]]

    pack_weights = pack

    def unpack_weights(self, vectors) -> np.ndarray:
        """The trained weights U (c × d) from their ciphertexts' decryptions."""
        return self.unpack(vectors, (self.c, self.d))

    def unpack_forward(self, vectors) -> np.ndarray:
        """z (n × c) from the forward output vectors (one per group, valid where l = 0)."""
        z = np.zeros((self.n_groups * self.I, self.c))
        for g, v in enumerate(vectors):
            blk = np.asarray(v)[: self.slots].reshape(self.I, self.L, self.C)
            z[g * self.I:(g + 1) * self.I] = blk[:, 0, : self.c]
        return z[: self.n]

    def pack_forward_output(self, Z: np.ndarray) -> list[np.ndarray]:
        """Z (n × c) where the forward leaves valid values (l = 0), zeros elsewhere: the spread's input."""
        i, l, k = self._grid()
        return [np.where(l == 0, self._take(Z, g * self.I + i, k), 0.0) for g in range(self.n_groups)]

    def forward_masks(self) -> list[np.ndarray]:
        """1 where a forward output slot is valid: l = 0, a real class, a real sample.
        One 0/1 vector of ``slots`` values per sample group.
        """
        i, l, k = self._grid()
        return [((l == 0) & (k < self.c) & (g * self.I + i < self.n)).astype(float) for g in range(self.n_groups)]

    def label_masks(self) -> list[np.ndarray]:
        """1 on every slot of the gradient's packing that holds a real (sample, class) pair."""
        s = self.grad_sample()
        _, _, k = self._grid()
        return [((k < self.c) & (g * self.I + s < self.n)).astype(float) for g in range(self.n_groups)]


@dataclasses.dataclass(frozen=True)
class VolleyRevolverPacking:
    """The published packing (J. Chiang, "Volley Revolver: A Novel Matrix-Encoding Method for Privacy-
    Preserving Neural Networks (Inference)", arXiv:2201.12577), kept for comparison.

    A data ciphertext holds R = slots/D sample rows of D slots (D = d rounded up to a power of 2):
    slot D·j + l of ciphertext k is X[R·k + j, l]. The weights sit in ONE ciphertext, one class per
    row. For r = 0..R-1 the weights are rotated by D·r so that row j meets class (j + r) mod R; every
    product is row-summed (log2 D rotations), masked and spread back (log2 D more). The gradient
    sums the products over k, rotates block r back by D·r and sums over r.
    Masks are plaintexts here (the published code encrypted them) and are folded into the sigmoid.
    """

    n: int
    d: int
    c: int
    slots: int
    D: int
    R: int

    name = "volley-revolver"

    @classmethod
    def choose(cls, n: int, d: int, c: int, slots: int) -> "VolleyRevolverPacking":
        """D = next power of two >= d, R = slots / D rows per ciphertext.
        Raises LayoutError when d > slots or when c > R (use the blocked layout).
        """
        D = next_pow2(d)
        if D > slots:
            raise LayoutError(f"{d} features do not fit one row of {slots} slots")
        R = slots // D
        if c > R:
            raise LayoutError(f"the Volley Revolver packing needs classes <= rows per ciphertext "
                              f"({c} > {R} rows of {D} slots); use layout 'blocked'")
        return cls(n, d, c, slots, D, R)

    @property
    def n_groups(self) -> int:  # data ciphertexts k
        """Data ciphertexts k: ceil(n / R)."""
        return -(-self.n // self.R)

    @property
    def n_blocks(self) -> int:  # forward outputs (k, r)
        """Forward outputs (k, r): n_groups · R."""
        return self.n_groups * self.R

    def rotations_per_iteration(self) -> int:
        """Rotations in one iteration: R - 1 weight rotations, 2·log2 D per forward block (row sum and spread),
        R - 1 to rotate the gradient blocks back.
        """
        return (self.R - 1) + self.n_blocks * 2 * log2_pow2(self.D) + (self.R - 1)

    def rotation_steps(self) -> list[int]:
        """Galois steps D·r (0 < r < R) and ±2^k (k < log2 D)."""
        rows = [self.D * r for r in range(1, self.R)]
        return rows + [1 << k for k in range(log2_pow2(self.D))] + [-(1 << k) for k in range(log2_pow2(self.D))]

    def describe(self) -> dict:
        """The layout for logs and reports: name, D, R, data ciphertexts, forward blocks."""
        return {"layout": self.name, "D": self.D, "R": self.R, "data_ciphertexts": self.n_groups,
                "forward_blocks": self.n_blocks}

    def _rows(self):
        j, l = np.meshgrid(np.arange(self.R), np.arange(self.D), indexing="ij")
        return j.ravel(), l.ravel()

    def pack_forward_data(self, X: np.ndarray) -> list[np.ndarray]:
        """X (n × d) -> one vector of ``slots`` values per data ciphertext k: slot D·j + l holds X[R·k + j, l]
        (zero padded). Also the gradient's copy X̃ (``pack_gradient_data`` is the same map).
        """
        j, l = self._rows()
        out = []
        for k in range(self.n_groups):
            rows = k * self.R + j
            ok = (rows < X.shape[0]) & (l < X.shape[1])
            v = np.zeros(self.slots)
            v[ok] = X[rows[ok], l[ok]]
            out.append(v)
        return out

    pack_gradient_data = pack_forward_data

    def block_class(self, r: int) -> np.ndarray:
        """Class met by each slot's row in block r: (j + r) mod R."""
        j, _ = self._rows()
        return (j + r) % self.R

    def pack_labels(self, Y: np.ndarray) -> list[np.ndarray]:
        """Y per forward block (k, r), replicated along each row: row j holds Y[R·k + j, (j + r) mod R]."""
        j, _ = self._rows()
        out = []
        for k in range(self.n_groups):
            for r in range(self.R):
                rows, cls_ = k * self.R + j, self.block_class(r)
                ok = (rows < Y.shape[0]) & (cls_ < Y.shape[1])
                v = np.zeros(self.slots)
                v[ok] = Y[rows[ok], cls_[ok]]
                out.append(v)
        return out

    # ---------------------------------------------------- the Packing interface (packings.py): the weights
    def n_ciphertexts(self, shape: tuple[int, int]) -> int:
        """One ciphertext: one class per row of D slots (r ≤ R rows, k ≤ D columns)."""
        if shape[0] > self.R or shape[1] > self.D:
            raise LayoutError(f"a {shape[0]}x{shape[1]} matrix does not fit {self.R} rows of {self.D} slots")
        return 1

    def pack(self, U: np.ndarray) -> list[np.ndarray]:
        """U (c × d) -> one vector, row j of U at slots D·j .. D·j + d − 1."""
        U = np.asarray(U, dtype=np.float64)
        self.n_ciphertexts(U.shape)
        v = np.zeros((self.R, self.D))
        v[: U.shape[0], : U.shape[1]] = U
        return [v.ravel()]

    def unpack(self, vectors, shape: tuple[int, int]) -> np.ndarray:
        """The ``shape`` (c × d) weight matrix from the decrypted weight vector (row j at slots D·j ..)."""
        self.n_ciphertexts(shape)
        return np.asarray(vectors[0])[: self.slots].reshape(self.R, self.D)[: shape[0], : shape[1]]

    pack_weights = pack

    def unpack_weights(self, vectors) -> np.ndarray:
        """Inverse of ``pack_weights``: U (c × d) from the decrypted weight vector."""
        return self.unpack(vectors, (self.c, self.d))

    def unpack_forward(self, vectors) -> np.ndarray:
        """z (n × c) from the decrypted forward blocks (k, r) in order: slot D·j of block (k, r)
        is z[R·k + j, (j+r) mod R]."""
        z = np.zeros((self.n_groups * self.R, self.R))
        j = np.arange(self.R)
        for idx, v in enumerate(vectors):
            k, r = divmod(idx, self.R)
            z[k * self.R + j, (j + r) % self.R] = np.asarray(v)[: self.slots].reshape(self.R, self.D)[:, 0]
        return z[: self.n, : self.c]

    def pack_forward_output(self, Z: np.ndarray) -> list[np.ndarray]:
        """Z (n × c) at the first slot of each row of each block (k, r), zeros elsewhere."""
        Zp = np.zeros((self.n_groups * self.R, self.R))
        Zp[: Z.shape[0], : Z.shape[1]] = Z
        j = np.arange(self.R)
        out = []
        for k in range(self.n_groups):
            for r in range(self.R):
                v = np.zeros((self.R, self.D))
                v[:, 0] = Zp[k * self.R + j, (j + r) % self.R]
                out.append(v.ravel())
        return out

    def _mask(self, k: int, r: int, first_only: bool) -> np.ndarray:
        j, l = self._rows()
        m = (self.block_class(r) < self.c) & (k * self.R + j < self.n)
        if first_only:
            m &= l == 0
        return m.astype(float)

    def forward_masks(self) -> list[np.ndarray]:
        """Per forward block (k, r): 1 at the first slot of each row holding a real sample and class, else 0."""
        return [self._mask(k, r, True) for k in range(self.n_groups) for r in range(self.R)]

    def label_masks(self) -> list[np.ndarray]:
        """Per forward block (k, r): 1 on the whole row of each real sample and class, else 0."""
        return [self._mask(k, r, False) for k in range(self.n_groups) for r in range(self.R)]


PACKINGS = {"blocked": BlockedPacking, "volley-revolver": VolleyRevolverPacking}  # mlr's packings


def choose_packing(layout: str, n: int, d: int, c: int, slots: int):
    """The mlr packing named ``layout`` (job.json's and the config's key keeps that name: 'blocked' or
    'volley-revolver'; 'auto' = 'blocked') for n samples, d features (bias included), c classes.
    Raises LayoutError for an unknown packing, or data that does not fit the chosen one."""
    if layout == "auto":
        layout = "blocked"
    try:
        return PACKINGS[layout].choose(n, d, c, slots)
    except KeyError:
        raise LayoutError(f"unknown layout {layout!r} (the packing); choose one of auto, {', '.join(PACKINGS)}") from None
