"""Row-major packing of small weight matrices with an encrypted transposition: the baseline WITHOUT
the cheap-transpose idea of ``diagonal`` (the naive alternative: re-pack the transpose under encryption).

Same sample batching as ``diagonal`` (``SampleLayout``: sample s owns slot block s, weights are
replicated in every block). ``RowMajorPacking`` (a SampleLayout and a RowMajor) implements
``packings.Packing`` and is registered there as "rowmajor". Inside a block, an r×c matrix W is stored row-major: row i in its own
segment of ``width`` slots (a power of two ≥ max(r, c)), entry (i, j) at slot i·width + j, zeros
elsewhere. What each product costs (the counts ``bench/iris.py`` reports):

    W·x  (``matvec``)      x tiled in every row segment; W ⊙ x (1 ct×ct, 1 level) then rotate-and-sum
                          inside the segments (log2 next_pow2(c) rotations). z_i lands at slot i·width
                          ("strided"); the other slots of the segment hold partial sums (garbage).
    gather                strided -> compact (z_i at slot i): one plaintext mask per entry and a left
                          rotation by i·(width − 1) (k masks, k − 1 rotations, 1 level).
    tile                  compact -> copies in segments 0..P−1 (P = next_pow2(k)): log2 P rotations.
    spread                strided -> entry i repeated over its whole segment (one mask, 1 level, then
                          log2 width rotations): what the outer products of the gradient need.
    transpose             Wᵀ row-major from the encrypted W, re-packed every time it is needed: entry
                          (i, j) moves from i·width + j to j·width + i, a left rotation by (i − j)(width − 1).
                          Entries with the same i − j move together: one mask per offset and one rotation
                          per non-zero offset (r + c − 1 masks, r + c − 2 rotations, 1 level). This is the
                          usual encrypted transposition (grouping by diagonal, as Jiang et al. 2018 do);
                          moving entry by entry would need r·c masks and r·c − 1 rotations.
    Wᵀ·δ                  transpose, then ``matvec`` on it with δ gathered and tiled.
    Σ_s δ aᵀ (``outer_sum``) spread δ ⊙ tiled a (1 ct×ct, 1 level) then the all-reduce over sample
                          blocks (log2 B rotations). The gradient is already row-major: no unpacking.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hetrain.ckks import PlainVector
from hetrain.ckks.pow2 import log2_pow2, next_pow2

from .diagonal import SampleLayout, allreduce_samples
from .errors import LayoutError


@dataclasses.dataclass(frozen=True)
class RowMajor:
    """An r×c matrix in row segments of ``width`` slots inside each sample block."""

    rows: int
    cols: int
    width: int

    @classmethod
    def for_matrix(cls, rows: int, cols: int, block: int) -> "RowMajor":
        """Layout of an r×c matrix with width = next power of two >= max(r, c) (W and Wᵀ share it).
        Raises LayoutError when width² exceeds ``block`` (slots per sample block).
        """
        w = next_pow2(max(rows, cols))  # the same width holds W and its transpose (see ``transpose``)
        if w * w > block:  # ``tile`` fills next_pow2(rows) segments: they must stay inside the block
            raise LayoutError(f"a {rows}x{cols} matrix and its transpose need {w * w} slots per "
                              f"sample block in row-major form, but a block has {block}")
        return cls(rows, cols, w)

    @property
    def T(self) -> "RowMajor":
        """The transpose's layout (cols × rows, same width)."""
        return RowMajor(self.cols, self.rows, self.width)

    def pack(self, W: np.ndarray) -> np.ndarray:
        """Block vector (one sample block) of W row-major.
        Returns rows · width values. Raises ValueError unless ``W`` is rows × cols.
        """
        W = np.asarray(W, dtype=np.float64)
        if W.shape != (self.rows, self.cols):
            raise ValueError(f"expected a {self.rows}x{self.cols} matrix, got {W.shape}")
        v = np.zeros(self.rows * self.width)
        for i in range(self.rows):
            v[i * self.width: i * self.width + self.cols] = W[i]
        return v

    def unpack(self, block_vec: np.ndarray) -> np.ndarray:
        """Inverse of ``pack``: the r×c matrix from a decrypted block vector (one sample block)."""
        v = np.asarray(block_vec)
        return np.array([v[i * self.width: i * self.width + self.cols] for i in range(self.rows)])

    def tiled(self, rows_in: np.ndarray) -> np.ndarray:
        """Client side: per-sample input vectors (n, c) copied into each of the r row segments.
        Returns (n, rows · width). Raises ValueError unless ``rows_in`` is (n, cols).
        """
        rows_in = np.asarray(rows_in, dtype=np.float64)
        if rows_in.ndim != 2 or rows_in.shape[1] != self.cols:
            raise ValueError(f"expected (n, {self.cols}) inputs, got {rows_in.shape}")
        out = np.zeros((rows_in.shape[0], self.rows * self.width))
        for i in range(self.rows):
            out[:, i * self.width: i * self.width + self.cols] = rows_in
        return out

    def strided(self, rows_out: np.ndarray) -> np.ndarray:
        """Client side: per-sample vectors (n, r) at slots i·width (the form ``matvec`` returns)."""
        rows_out = np.asarray(rows_out, dtype=np.float64)
        out = np.zeros((rows_out.shape[0], self.rows * self.width))
        out[:, :: self.width] = rows_out
        return out

    # rotation steps (left) each circuit uses
    def rowsum_steps(self) -> list[int]:
        """Left steps 2^k, k < log2 next_pow2(cols): the rotate-and-sum inside row segments (``matvec``)."""
        return [1 << k for k in range(log2_pow2(next_pow2(self.cols)))]

    def gather_steps(self) -> list[int]:
        """Left steps i·(width - 1), 0 < i < rows: strided -> compact (``gather``)."""
        return [i * (self.width - 1) for i in range(1, self.rows)]

    def tile_steps(self, segments: int) -> list[int]:
        """Right steps width·2^k, k < log2 next_pow2(segments) (negative numbers): compact -> tiled (``tile``)."""
        return [-(self.width << k) for k in range(log2_pow2(next_pow2(segments)))]

    def spread_steps(self) -> list[int]:
        """Right steps 2^k, k < log2 width (negative numbers): an entry repeated over its segment (``spread``)."""
        return [-(1 << k) for k in range(log2_pow2(self.width))]

    def transpose_offsets(self) -> list[int]:
        """Diagonal offsets k = i - j, -(cols - 1) .. rows - 1: the groups of entries ``transpose`` moves together."""
        return list(range(-(self.cols - 1), self.rows))  # k = i − j

    def transpose_steps(self) -> list[int]:
        """Left steps k·(width - 1) for every non-zero offset k (``transpose``)."""
        return [k * (self.width - 1) for k in self.transpose_offsets() if k]


@dataclasses.dataclass(frozen=True)
class RowMajorPacking:
    """One r×c weight matrix row-major in one ciphertext, replicated in every sample block
    (``packings.Packing``); rotation steps those of ``matvec``, ``matvec_transpose`` (re-pack, gather,
    tile, matvec on Wᵀ), ``spread`` and ``outer_sum`` for this matrix."""

    layout: SampleLayout
    rm: RowMajor

    name = "rowmajor"

    @classmethod
    def for_matrix(cls, n_samples: int, rows: int, cols: int, slots: int) -> "RowMajorPacking":
        """The row-major packing of a rows x cols matrix for ``n_samples`` sample blocks in ``slots`` slots."""
        layout = SampleLayout(n_samples, slots)
        return cls(layout, RowMajor.for_matrix(rows, cols, layout.block))

    @property
    def slots(self) -> int:
        """Slots of the ring the sample layout was chosen for (N/2)."""
        return self.layout.slots

    def n_ciphertexts(self, shape: tuple[int, int]) -> int:
        """One ciphertext (the row-major matrix replicated in every sample block); LayoutError for another shape."""
        if tuple(shape) != (self.rm.rows, self.rm.cols):
            raise LayoutError(f"this row-major packing holds a {self.rm.rows}x{self.rm.cols} matrix, not {tuple(shape)}")
        return 1

    def pack(self, W: np.ndarray) -> list[np.ndarray]:
        """W (rows x cols) row-major in one vector, replicated in every sample block."""
        self.n_ciphertexts(np.shape(W))
        return [self.layout.replicate(self.rm.pack(W))]

    def unpack(self, vectors, shape: tuple[int, int]) -> np.ndarray:
        """W (``shape``) from the vector ``pack`` made (or its decryption; block 0 is read)."""
        self.n_ciphertexts(shape)
        return self.rm.unpack(np.asarray(vectors[0])[: self.layout.block])

    def rotation_steps(self) -> list[int]:
        """Galois steps of the baseline circuits: row sums, the transpose under encryption, gather, tile, spread, allreduce."""
        rm = self.rm
        s = set(rm.rowsum_steps()) | set(rm.transpose_steps()) | set(rm.gather_steps()) | set(rm.T.tile_steps(rm.cols))
        s |= set(rm.T.rowsum_steps()) | set(rm.spread_steps()) | set(self.layout.allreduce_steps())
        s.discard(0)
        return sorted(s)


def steps_for_iteration(w1: RowMajor, w2: RowMajor, layout: SampleLayout) -> list[int]:
    """Every rotation step ``bench``'s row-major network iteration uses (one Galois key each)."""
    s = set(w1.rowsum_steps()) | set(w1.gather_steps()) | set(w2.tile_steps(w2.rows)) | set(w2.rowsum_steps())
    s |= set(w2.gather_steps()) | set(w2.T.tile_steps(w2.T.rows - 1)) | set(w2.transpose_steps())
    s |= set(w2.T.rowsum_steps()) | set(w2.spread_steps()) | set(w1.spread_steps()) | set(layout.allreduce_steps())
    s.discard(0)
    return sorted(s)


# ---------------------------------------------------------------------------------------- masks
def gather_masks(rm: RowMajor, layout: SampleLayout, count: int | None = None) -> list[PlainVector]:
    """One mask per entry i < count keeping slot i·width of every sample block."""
    out = []
    for i in range(rm.rows if count is None else count):
        m = np.zeros(rm.rows * rm.width)
        m[i * rm.width] = 1.0
        out.append(PlainVector(layout.replicate(m)))
    return out


def spread_mask(rm: RowMajor, layout: SampleLayout, count: int | None = None) -> PlainVector:
    """Keeps slots i·width, i < count (the strided results), in every sample block."""
    m = np.zeros(rm.rows * rm.width)
    m[: (rm.rows if count is None else count) * rm.width: rm.width] = 1.0
    return PlainVector(layout.replicate(m))


def transpose_masks(rm: RowMajor, layout: SampleLayout) -> dict[int, PlainVector]:
    """Per offset k = i − j: keeps the entries (i, j) of W with i − j = k."""
    out = {}
    for k in rm.transpose_offsets():
        m = np.zeros(rm.rows * rm.width)
        for i in range(rm.rows):
            j = i - k
            if 0 <= j < rm.cols:
                m[i * rm.width + j] = 1.0
        out[k] = PlainVector(layout.replicate(m))
    return out


# ---------------------------------------------------------------------------------------- circuits
def rowsum(eng, ct, rm: RowMajor):
    """Slot i·width receives Σ_j of segment i (log2 next_pow2(cols) rotations; other slots: garbage)."""
    for s in rm.rowsum_steps():
        ct = eng.add(ct, eng.rotate(ct, s))
    return ct


def matvec(eng, w, x_tiled, rm: RowMajor):
    """W·x: W ⊙ x (x tiled in every row segment) then row sums -> z_i at slot i·width (strided)."""
    return rowsum(eng, eng.mul(w, x_tiled), rm)


def gather(eng, strided, rm: RowMajor, masks: list):
    """Strided (entry i at slot i·width) -> compact (entry i at slot i): a mask and a rotation per entry."""
    out = None
    for i, m in enumerate(masks):
        t = eng.mul_plain(strided, m)
        t = eng.rotate(t, i * (rm.width - 1)) if i else t
        out = t if out is None else eng.add(out, t)
    return out


def tile(eng, compact, rm: RowMajor, segments: int):
    """A compact (clean) vector copied into row segments 0..next_pow2(segments)−1."""
    for s in rm.tile_steps(segments):
        compact = eng.add(compact, eng.rotate(compact, s))
    return compact


def spread(eng, strided, rm: RowMajor, mask: PlainVector):
    """Entry i (slot i·width) repeated over its whole segment: one mask, log2 width rotations."""
    out = eng.mul_plain(strided, mask)
    for s in rm.spread_steps():
        out = eng.add(out, eng.rotate(out, s))
    return out


def transpose(eng, w, rm: RowMajor, masks: dict):
    """Wᵀ row-major (layout ``rm.T``) re-packed from the encrypted W: Σ_k rot(mask_k ⊙ W, k(width − 1))."""
    out = None
    for k, m in masks.items():
        t = eng.mul_plain(w, m)
        t = eng.rotate(t, k * (rm.width - 1)) if k else t
        out = t if out is None else eng.add(out, t)
    return out


def matvec_transpose(eng, w, delta_strided, rm: RowMajor, tmasks: dict, gmasks: list):
    """Wᵀ·δ the generic way: re-pack Wᵀ, gather δ (strided, as ``matvec`` left it) and tile it into
    the rows of Wᵀ that are needed (all of them: ``rm.cols``), then the forward product on Wᵀ."""
    wt = transpose(eng, w, rm, tmasks)
    d = tile(eng, gather(eng, delta_strided, rm, gmasks), rm.T, rm.cols)
    return matvec(eng, wt, d, rm.T)


def outer_sum(eng, delta_spread, a_tiled, layout: SampleLayout):
    """Σ_samples δ aᵀ row-major: (δ_i spread over segment i) ⊙ (a tiled), then the all-reduce."""
    return allreduce_samples(eng, eng.mul(delta_spread, a_tiled), layout)
