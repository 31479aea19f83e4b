"""Diagonal (Halevi–Shoup) packing of small weight matrices, with samples batched in slots.

Sample batching (``SampleLayout``): sample s owns the block of M = slots / B consecutive slots starting
at s·M (B = n_samples rounded up to a power of two, so the B blocks fill the ciphertext exactly).
A vector v of a sample sits at positions 0..len(v)-1 of its block; the rest of the block is zero
("clean"). One rotation by t moves every sample's vector by t at once.

Weights (``BandDiagonals``): an r×c matrix W is kept as its non-zero generalised diagonals
D_t[i] = W[i, i+t], t = -(r-1) .. c-1, one ciphertext per diagonal, replicated in every sample
block. Then, without any wrap-around (vectors are clean, so out-of-range reads are zeros):

    W·x  = Σ_t D_t ⊙ rot(x, t)            (rotations of x, one relinearisation: mul_sum)
    Wᵀ·δ = Σ_t rot(D_t ⊙ δ, -t)          (the SAME D_t: the diagonals of Wᵀ are rotations of W's)

The naive alternative re-packs Wᵀ's diagonals each time, E_t = mask ⊙ rot(D_{-t}, t) (one rotation
and one plaintext mask per diagonal, one extra level), then runs the forward product on them.

Gradients Σ_s δ_s·a_sᵀ in diagonal form need a sum over samples: ``pack_sum`` rotates every
diagonal's product into its own window of a sample block, sums the windows into one ciphertext
and all-reduces over the B sample blocks (log2 B rotations; every block then holds the sum);
``unpack`` rotates window t back to positions 0..r-1. Unpacking is not masked (a mask would cost a
level): the other windows land at positions that the consumer multiplies by zero, which
``PackPlan`` guarantees by spacing the windows (see ``PackPlan.for_band``).

Galois keys: every family of rotations here is evenly spaced (offsets t, windows k·spacing), so each
is computed as a chain — rot(x, t) from rot(x, t−1) (``rotations_of``), and sums Σ rot(y_t, t) by
Horner's rule (``rotate_sum``) — with the same number of rotations as rotating directly but only the
keys ``chain_steps`` lists (±1, ±spacing) instead of one key per offset and window.

``DiagonalPacking`` (a SampleLayout and a BandDiagonals) implements ``packings.Packing`` and is
registered there as "diagonal". (``SampleLayout`` keeps its name for compatibility: it is the
sample batching that the diagonal and the row-major packings share.)
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from hetrain.ckks.pow2 import log2_pow2, next_pow2

from .errors import LayoutError


@dataclasses.dataclass(frozen=True)
class SampleLayout:
    """B sample blocks of M slots each (B·M = slots)."""

    n_samples: int
    slots: int

    def __post_init__(self):
        if self.n_samples < 1:
            raise LayoutError("need at least one sample")
        if self.batch > self.slots:
            raise LayoutError(f"{self.n_samples} samples do not fit in {self.slots} slots")

    @property
    def batch(self) -> int:
        """B: ``n_samples`` rounded up to a power of two (number of sample blocks)."""
        return next_pow2(self.n_samples)

    @property
    def block(self) -> int:
        """M = slots / B: the slots each sample block owns."""
        return self.slots // self.batch

    def allreduce_steps(self) -> list[int]:
        """Rotation steps M·2^k, k < log2 B, of the all-reduce over sample blocks (``allreduce_samples``)."""
        return [self.block << k for k in range(log2_pow2(self.batch))]

    def place(self, rows: np.ndarray) -> np.ndarray:
        """(n_samples, k) per-sample vectors -> slot vector (sample blocks, zero padded).
        Raises LayoutError unless ``rows`` is (n_samples, k) with k <= block.
        """
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[0] != self.n_samples or rows.shape[1] > self.block:
            raise LayoutError(f"expected ({self.n_samples}, <= {self.block}) per-sample vectors, got {rows.shape}")
        v = np.zeros((self.batch, self.block))
        v[: self.n_samples, : rows.shape[1]] = rows
        return v.ravel()

    def replicate(self, vec: np.ndarray) -> np.ndarray:
        """The same block vector in every sample block (weights, constants).
        Returns ``slots`` values. Raises LayoutError for a vector longer than a block.
        """
        vec = np.asarray(vec, dtype=np.float64).ravel()
        if vec.size > self.block:
            raise LayoutError(f"a vector of {vec.size} values does not fit a block of {self.block} slots")
        b = np.zeros(self.block)
        b[: vec.size] = vec
        return np.tile(b, self.batch)

    def replicate_real(self, vec: np.ndarray) -> np.ndarray:
        """Like ``replicate`` but only in the blocks of real samples (padding blocks stay zero)."""
        v = self.replicate(vec).reshape(self.batch, self.block)
        v[self.n_samples:] = 0.0
        return v.ravel()

    def read(self, slots_vec: np.ndarray, length: int) -> np.ndarray:
        """Inverse of ``place``: (n_samples, length)."""
        return np.asarray(slots_vec).reshape(self.batch, self.block)[: self.n_samples, :length]


@dataclasses.dataclass(frozen=True)
class BandDiagonals:
    """The generalised diagonals of an r×c matrix: offsets t = -(r-1) .. c-1."""

    rows: int
    cols: int

    @property
    def offsets(self) -> list[int]:
        """Diagonal offsets t = -(rows-1) .. cols-1 (rows + cols - 1 of them), in increasing order."""
        return list(range(-(self.rows - 1), self.cols))

    def valid(self, t: int) -> np.ndarray:
        """Rows i for which W[i, i+t] exists.
        A boolean mask of shape (rows,).
        """
        i = np.arange(self.rows)
        return (i + t >= 0) & (i + t < self.cols)

    def diagonals(self, W: np.ndarray) -> dict[int, np.ndarray]:
        """{t: D_t} with D_t[i] = W[i, i+t] (length ``rows``, 0 where column i+t does not exist) for every offset:
        the Halevi–Shoup generalised diagonals of ``W`` (rows × cols). Raises ValueError for another shape.
        """
        W = np.asarray(W, dtype=np.float64)
        if W.shape != (self.rows, self.cols):
            raise ValueError(f"expected a {self.rows}x{self.cols} matrix, got {W.shape}")
        out = {}
        for t in self.offsets:
            d = np.zeros(self.rows)
            ok = self.valid(t)
            i = np.arange(self.rows)[ok]
            d[ok] = W[i, i + t]
            out[t] = d
        return out

    def matrix(self, diags: dict[int, np.ndarray]) -> np.ndarray:
        """Inverse of ``diagonals`` (entries outside the band/valid range are ignored)."""
        W = np.zeros((self.rows, self.cols))
        for t in self.offsets:
            ok = self.valid(t)
            i = np.arange(self.rows)[ok]
            W[i, i + t] = np.asarray(diags[t])[: self.rows][ok]
        return W

    def rotated_inputs(self, x_rows: np.ndarray) -> dict[int, np.ndarray]:
        """Client side: rot(x, t) per diagonal, zeroed where W[i, i+t] does not exist.

        Shape (n, rows) each. Zeroing makes every product with a diagonal clean, which lets the
        server leave garbage in the unused entries of its weight diagonals (see ``unpack``).
        Raises ValueError unless ``x_rows`` is (n, cols).
        """
        x_rows = np.asarray(x_rows, dtype=np.float64)
        if x_rows.ndim != 2 or x_rows.shape[1] != self.cols:
            raise ValueError(f"expected (n, {self.cols}) inputs, got {x_rows.shape}")
        out = {}
        for t in self.offsets:
            ok = self.valid(t)
            v = np.zeros((x_rows.shape[0], self.rows))
            i = np.arange(self.rows)[ok]
            v[:, ok] = x_rows[:, i + t]
            out[t] = v
        return out


@dataclasses.dataclass(frozen=True)
class PackPlan:
    """Where each diagonal's gradient goes in the packed ciphertext: window t starts at start_t,
    the diagonal's rows at off_t. Windows are disjoint modulo the block size, and the offsets are
    evenly spaced (off_t = k·spacing for the k-th diagonal), so every move between windows is a
    rotation by ±spacing: a chain of such rotations reaches all windows with ONE pair of Galois keys
    (``chain_steps``) instead of one key per window, for the same number of rotations."""

    offsets: tuple[int, ...]
    pack_offsets: tuple[int, ...]  # off_t per offset, same order
    window: int                    # the spacing
    block: int

    @staticmethod
    def _extent(band: BandDiagonals, live_cols: int | None) -> dict[int, tuple[int, int]]:
        """[lo, hi) relative to off_t that window t must keep free of other windows' entries.

        ``live_cols=None``: the consumer of the unpacked diagonal D_t multiplies it by a clean vector
        supported on its valid entries only (the client-made rotated inputs), so a window need only
        hold the r rows. ``live_cols=k``: D_t is multiplied by rot(a, t) with a supported on 0..k-1
        and by a vector supported on rows 0..r-1, so entries p with p+t in [0, k) must read zero
        unless they are the diagonal's own rows: [min(0, -t), max(r, k - t)).
        """
        if live_cols is None:
            return {t: (0, band.rows) for t in band.offsets}
        return {t: (min(0, -t), max(band.rows, live_cols - t)) for t in band.offsets}

    @classmethod
    def min_spacing(cls, band: BandDiagonals, live_cols: int | None = None) -> int:
        """Smallest window spacing (slots) that keeps every diagonal's window clear of its neighbours' entries
        (see ``_extent`` for ``live_cols``); at least ``band.rows``.
        """
        ext = [cls._extent(band, live_cols)[t] for t in band.offsets]
        return max([band.rows] + [ext[k][1] - ext[k + 1][0] for k in range(len(ext) - 1)])

    @classmethod
    def for_band(cls, band: BandDiagonals, block: int, live_cols: int | None = None,
                 spacing: int | None = None) -> "PackPlan":
        """Evenly spaced windows for ``band``'s diagonals inside a block of ``block`` slots
        (``spacing``: at least ``min_spacing``; default the minimum).
        Raises LayoutError for a spacing below the minimum, or windows that do not fit in one sample block.
        """
        offs = band.offsets
        g = cls.min_spacing(band, live_cols) if spacing is None else int(spacing)
        if g < cls.min_spacing(band, live_cols):
            raise LayoutError(f"window spacing {g} is below the minimum {cls.min_spacing(band, live_cols)}")
        ext = cls._extent(band, live_cols)
        starts = [k * g + ext[t][0] for k, t in enumerate(offs)]
        ends = [k * g + ext[t][1] for k, t in enumerate(offs)]
        base = -min(starts)  # > 0 only when the first window reaches left of its rows
        if max(ends) - min(starts) > block:
            raise LayoutError(
                f"{len(offs)} diagonals need windows {g} slots apart ({max(ends) - min(starts)} slots in all) but a "
                f"sample block has {block}: use fewer hidden units, fewer samples, or a larger ring")
        return cls(tuple(offs), tuple(base + k * g for k in range(len(offs))), g, block)

    def off(self, t: int) -> int:
        """off_t: slot of diagonal ``t``'s first row in the packed sum. Raises ValueError for an offset not planned."""
        return self.pack_offsets[self.offsets.index(t)]

    def steps(self) -> list[int]:
        """Galois steps of the chained pack (−off) and unpack (+off) rotations."""
        s = set(chain_steps(self.pack_offsets)) | set(chain_steps([-o for o in self.pack_offsets]))
        return sorted(s)


@dataclasses.dataclass(frozen=True)
class DiagonalPacking:
    """One r×c weight matrix as its generalised diagonals, each replicated in every sample block
    (``packings.Packing``): r + c − 1 ciphertexts; rotation steps those of ``matvec`` (rot(x, t)),
    ``matvec_transpose`` (Horner sum of rot(·, −t)), ``pack_sum``/``unpack_all`` of its gradient
    (windows of ``PackPlan.for_band``, default spacing) and the all-reduce over sample blocks."""

    layout: SampleLayout
    band: BandDiagonals

    name = "diagonal"

    @property
    def slots(self) -> int:
        """Slots of the ring the sample layout was chosen for (N/2)."""
        return self.layout.slots

    def _check_shape(self, shape) -> BandDiagonals:
        if tuple(shape) != (self.band.rows, self.band.cols):
            raise LayoutError(f"this diagonal packing holds a {self.band.rows}x{self.band.cols} matrix, not {tuple(shape)}")
        if self.band.rows > self.layout.block:
            raise LayoutError(f"a diagonal of {self.band.rows} rows does not fit a block of {self.layout.block} slots")
        return self.band

    def n_ciphertexts(self, shape: tuple[int, int]) -> int:
        """One ciphertext per generalised diagonal of the r x c matrix (r + c − 1); LayoutError for another shape."""
        return len(self._check_shape(shape).offsets)

    def pack(self, W: np.ndarray) -> list[np.ndarray]:
        """One replicated vector per diagonal D_t, t = −(r−1) .. c−1 (``BandDiagonals.offsets`` order)."""
        W = np.asarray(W, dtype=np.float64)
        self._check_shape(W.shape)
        return [self.layout.replicate(d) for d in self.band.diagonals(W).values()]

    def unpack(self, vectors, shape: tuple[int, int]) -> np.ndarray:
        """W (``shape``) from the diagonal vectors ``pack`` made (or their decryptions; block 0 is read)."""
        band = self._check_shape(shape)
        return band.matrix({t: np.asarray(v)[: band.rows] for t, v in zip(band.offsets, vectors)})

    def rotation_steps(self) -> list[int]:
        """Galois steps of the diagonal circuits: the rotation chains of W·x and Wᵀ·δ, the re-packing and the allreduce."""
        offs = self.band.offsets
        steps = set(chain_steps(offs)) | set(chain_steps([-t for t in offs]))
        steps |= set(PackPlan.for_band(self.band, self.layout.block).steps()) | set(self.layout.allreduce_steps())
        steps.discard(0)
        return sorted(steps)


def chain_steps(shifts: Sequence[int]) -> list[int]:
    """Steps used by ``rotations_of``/``rotate_sum`` for these shifts: each non-zero shift is reached
    from the next smaller one (in absolute value) of the same sign; evenly spaced shifts need one step per sign."""
    out = set()
    for sign in (1, -1):
        prev = 0
        for s in sorted((x for x in shifts if x * sign > 0), key=abs):
            out.add(s - prev)
            prev = s
    return sorted(out)


# ---------------------------------------------------------------------------------------- circuits
def rotations_of(eng, ct, offsets: Sequence[int]) -> dict:
    """{t: rot(ct, t)} (t = 0 costs nothing), one rotation per non-zero t, each from the previous
    one of the same sign (keys: ``chain_steps(offsets)``)."""
    out = {0: ct}
    for sign in (1, -1):
        prev = 0
        for t in sorted((x for x in offsets if x * sign > 0), key=abs):
            out[t] = eng.rotate(out[prev], t - prev)
            prev = t
    return {t: out[t] for t in offsets}


def rotate_sum(eng, terms: dict):
    """Σ_s rot(terms[s], s) by Horner's rule along each sign: the same rotations as rotating every
    term, with the keys ``chain_steps(terms)`` only."""
    out = terms.get(0)
    for sign in (1, -1):
        shifts = sorted((x for x in terms if x * sign > 0), key=abs, reverse=True)
        acc = None
        for k, s in enumerate(shifts):
            acc = terms[s] if acc is None else eng.add(terms[s], acc)
            nxt = shifts[k + 1] if k + 1 < len(shifts) else 0
            acc = eng.rotate(acc, s - nxt)
        if acc is not None:
            out = acc if out is None else eng.add(out, acc)
    return out


def matvec(eng, diags: dict, x_rot: dict):
    """W·x = Σ_t D_t ⊙ rot(x, t): one relinearisation and rescale for all diagonals."""
    return eng.mul_sum([(diags[t], x_rot[t]) for t in diags])


def matvec_transpose(eng, diags: dict, delta):
    """Wᵀ·δ = Σ_t rot(D_t ⊙ δ, -t) on the same diagonals as ``matvec`` (one level, n-1 rotations)."""
    return rotate_sum(eng, {-t: eng.mul(d, delta) for t, d in diags.items()})


def transpose_masks(band: BandDiagonals, layout: SampleLayout) -> dict:
    """Plaintext masks keeping the valid entries of each diagonal of Wᵀ (for the naive re-pack)."""
    from hetrain.ckks import PlainVector
    tb = BandDiagonals(band.cols, band.rows)
    return {t: PlainVector(layout.replicate(tb.valid(t).astype(float))) for t in tb.offsets}


def repack_transpose(eng, diags: dict, masks: dict) -> dict:
    """Naive: build Wᵀ's diagonals E_t = mask ⊙ rot(D_{-t}, t) explicitly (n rotations, n masks, 1 level)."""
    out = {}
    for t, m in masks.items():
        r = eng.rotate(diags[-t], t) if t else diags[-t]
        out[t] = eng.mul_plain(r, m)
    return out


def matvec_transpose_repacked(eng, diags: dict, delta, masks: dict):
    """Naive Wᵀ·δ: re-pack the transpose, then the forward product Σ_t E_t ⊙ rot(δ, t)."""
    e = repack_transpose(eng, diags, masks)
    return matvec(eng, e, rotations_of(eng, delta, list(e)))


def allreduce_samples(eng, ct, layout: SampleLayout):
    """Sum over the B sample blocks; every block receives the sum (log2 B rotations)."""
    out = ct
    for s in layout.allreduce_steps():
        out = eng.add(out, eng.rotate(out, s))
    return out


def pack_sum(eng, products: dict, plan: PackPlan, layout: SampleLayout):
    """Σ_samples of every diagonal's product, all in one ciphertext (window t at off_t)."""
    return allreduce_samples(eng, rotate_sum(eng, {-plan.off(t): p for t, p in products.items()}), layout)


def pack_sum_windowed(eng, delta, windowed_inputs: dict, plan: PackPlan, layout: SampleLayout):
    """``pack_sum`` of the products δ ⊙ x_t when the client already placed each x_t in its window.

    rot(δ ⊙ x_t, -o_t) = rot(δ, -o_t) ⊙ rot(x_t, -o_t): the client sends x̃_t = rot(x_t, -o_t) (free:
    it owns x), the server rotates δ instead of each product (same number of rotations) and sums all
    products with ONE relinearisation and rescale (``mul_sum``) instead of one per diagonal.
    """
    rd = rotations_of(eng, delta, [-plan.off(t) for t in windowed_inputs])
    return allreduce_samples(eng, eng.mul_sum([(rd[-plan.off(t)], xw) for t, xw in windowed_inputs.items()]), layout)


def unpack(eng, packed, t: int, plan: PackPlan):
    """Window t of a packed sum back at positions 0..r-1 (other windows stay, as harmless garbage)."""
    o = plan.off(t)
    return eng.rotate(packed, o) if o else packed


def unpack_all(eng, packed, plan: PackPlan) -> dict:
    """Every window back at 0..r-1 ({t: D_t}), the rotations chained (keys ``plan.steps()``)."""
    rot = rotations_of(eng, packed, list(plan.pack_offsets))
    return {t: rot[o] for t, o in zip(plan.offsets, plan.pack_offsets)}


# --------------------------------------------------------------------------------- plaintext twins
def matvec_plain(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Rows of X (n, c) -> rows of X·Wᵀ (n, r)."""
    return np.asarray(X) @ np.asarray(W).T


def matvec_transpose_plain(W: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Plaintext twin of the transposed product: rows of D (n, r) -> rows of D·W (n, c), i.e. Wᵀ·δ per sample."""
    return np.asarray(D) @ np.asarray(W)
