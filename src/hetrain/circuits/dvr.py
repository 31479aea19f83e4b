"""Double-Volley-Revolver grid packing for dense layers on ciphertexts (used by models/mlp_dvr.py, "mlp-dvr").

``GridLayout`` implements ``packings.Packing`` (registered as "dvr"): pack/unpack of a weight
matrix in layer 1's orientation, its ciphertext count and the rotation steps below. (The class
keeps its name, and job.json its "layout" key, for compatibility.)

Every ciphertext is a stack of ``S`` samples, each owning a P x P grid of slots (P a power of
two >= every hidden width and the class count):

    slot(s, a, b) = s·P² + a·P + b            s < S samples, a < P ("a" axis), b < P ("b" axis)

If S·P² < slots, the block is repeated to fill the ciphertext, so every rotation by less than a
block is cyclic within the block. n samples need G = ceil(n / S) ciphertexts: the "double"
revolver is the outer loop over those G data ciphertexts; inside one, all S samples are treated
at once by slot-wise products.

A vector per sample (activations, errors) lies *along* one axis at index 0 of the other; a
matrix product reads it *replicated* over the other axis. Layer l multiplies slot-wise by a
weight ciphertext holding W_l[v, u] at (u on the input axis, v on the output axis), the same for
every sample, and sums over the input axis with log2(P) rotations, which leaves the result along
the output axis. Axes alternate: layer 1 maps a -> b, layer 2 b -> a, layer 3 a -> b, ...

    forward   A_l[s, v] = Σ_u Z_{l-1}[s, u] · W_l[v, u]   (replicate Z over v, reduce over u)
    backward  (δ_l W_l)[s, u] = Σ_v δ_l[s, v] · W_l[v, u]  (replicate δ over u, reduce over v)
    gradient  G_l[v, u] = Σ_s δ_l[s, v] · Z_{l-1}[s, u]    (the two replicas, Σ over ciphertexts
                                                            then over the S samples: log2(S) rotations)

So one weight ciphertext serves W_l and its transpose W_lᵀ (no transposed copy, no
re-encryption), and a gradient lands directly in its weight's packing (replicated over samples).
Layer 1 reads the input features along a, P features per ciphertext: data ciphertext (g, t)
holds X[gS + s, tP + a] replicated over b, and W1 is T = ceil(d / P) ciphertexts holding
W1[b, tP + a]. The Σ over the T blocks is one ``mul_sum`` (a single relinearisation).

Replication uses left rotations only: shift the value from index 0 to index P - 1 of the axis
(one rotation by -(P - 1)·stride), then rotate-and-sum over the axis; every rotation step is
a power of two (shared by all reductions) or one of the two shifts.

Source: J. Chiang's Double Volley Revolver encoding for neural-network training, which extends his
Volley Revolver (arXiv:2201.12577) with an outer loop over data ciphertexts; rotate-and-sum as in
Halevi–Shoup ("Algorithms in HElib", CRYPTO 2014).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from hetrain.ckks.pow2 import log2_pow2, next_pow2

from .errors import LayoutError

AXES = ("a", "b")


@dataclasses.dataclass(frozen=True)
class GridLayout:
    """The DVR grid (module docstring): ``S`` samples of a ``P`` x ``P`` slot grid per ciphertext, ``n`` samples
    and ``d`` input features in all, in a ring of ``slots`` slots. Build it with ``choose``.
    """

    name = "dvr"

    slots: int
    P: int   # grid side
    S: int   # samples per ciphertext
    n: int   # samples
    d: int   # input features

    @classmethod
    def choose(cls, slots: int, n: int, d: int, widths) -> "GridLayout":
        """The layout for ``n`` samples of ``d`` features and layer ``widths`` (hidden widths and class count):
        P = next power of two >= max(2, widths), S = min(slots / P², next power of two >= n).
        Raises LayoutError when a P x P grid does not fit in ``slots``.
        """
        P = next_pow2(max(2, *widths))
        if P * P > slots:
            raise LayoutError(f"widest layer {max(widths)} needs a {P}x{P} grid ({P * P} slots) per sample; "
                              f"the parameters have {slots} slots: use a larger ring or narrower layers")
        S = min(slots // (P * P), next_pow2(n))
        return cls(slots, P, S, n, d)

    # ------------------------------------------------------------------ sizes and steps
    @property
    def block(self) -> int:
        """Slots of one block of S samples: S·P² (the block repeats to fill the ciphertext)."""
        return self.S * self.P * self.P

    @property
    def groups(self) -> int:
        """G = ceil(n / S): data ciphertexts per feature block (the outer "double" revolver)."""
        return math.ceil(self.n / self.S)

    @property
    def feature_blocks(self) -> int:
        """T = ceil(d / P): ciphertexts the input features of one group span (and layer-1 weight ciphertexts)."""
        return math.ceil(self.d / self.P)

    def stride(self, axis: str) -> int:
        """Slot distance between neighbours along ``axis``: "a" -> P, "b" -> 1, "s" (samples) -> P².
        KeyError otherwise."""
        return {"a": self.P, "b": 1, "s": self.P * self.P}[axis]

    def width(self, axis: str) -> int:
        """Length of ``axis``: S for "s" (samples), P for "a" and "b"."""
        return self.S if axis == "s" else self.P

    def rotation_steps(self) -> list[int]:
        """Powers of two below a block (reductions, replications) and the two replication shifts."""
        steps = [1 << k for k in range(log2_pow2(self.block))]
        return steps + [-(self.P - 1) * self.stride("a"), -(self.P - 1) * self.stride("b")]

    # ------------------------------------------------------------------ plaintext encoding
    def _tile(self, grid: np.ndarray) -> np.ndarray:
        return np.tile(grid.reshape(-1), self.slots // self.block)

    def _untile(self, vec: np.ndarray) -> np.ndarray:
        return np.asarray(vec[: self.block]).reshape(self.S, self.P, self.P)

    def rows(self, M: np.ndarray, g: int) -> np.ndarray:
        """Rows of ``M`` (n x k) for group g, zero-padded to S x P."""
        out = np.zeros((self.S, self.P))
        part = M[g * self.S: (g + 1) * self.S]
        out[: part.shape[0], : part.shape[1]] = part
        return out

    def along(self, M: np.ndarray, g: int, axis: str) -> np.ndarray:
        """Slot vector of group g with M[gS + s, j] at index j of ``axis``, index 0 of the other."""
        grid = np.zeros((self.S, self.P, self.P))
        r = self.rows(M, g)
        if axis == "a":
            grid[:, :, 0] = r
        else:
            grid[:, 0, :] = r
        return self._tile(grid)

    def read_along(self, vec: np.ndarray, axis: str, k: int) -> np.ndarray:
        """S x k values along ``axis`` (inverse of ``along`` for one group)."""
        grid = self._untile(vec)
        return (grid[:, :k, 0] if axis == "a" else grid[:, 0, :k]).copy()

    def data_block(self, X: np.ndarray, g: int, t: int) -> np.ndarray:
        """Input ciphertext (g, t): X[gS + s, tP + a] replicated over b."""
        r = self.rows(X[:, t * self.P: (t + 1) * self.P], g)
        return self._tile(np.repeat(r[:, :, None], self.P, axis=2))

    def weight(self, Wm: np.ndarray, out_axis: str) -> np.ndarray:
        """Weight matrix W (out x in) at (output index on ``out_axis``, input index on the other),
        replicated over samples."""
        grid = np.zeros((self.P, self.P))
        o, i = Wm.shape
        if out_axis == "a":
            grid[:o, :i] = Wm
        else:
            grid[:i, :o] = Wm.T
        return self._tile(np.broadcast_to(grid, (self.S, self.P, self.P)))

    def read_weight(self, vec: np.ndarray, out_axis: str, shape: tuple[int, int]) -> np.ndarray:
        """Inverse of ``weight``: the ``shape`` (out x in) matrix from a decrypted weight vector (sample 0's grid)."""
        grid = self._untile(vec)[0]
        o, i = shape
        return (grid[:o, :i] if out_axis == "a" else grid[:i, :o].T).copy()

    # ------------------------------------------------ the Packing interface (packings.py): layer-1 weights
    def n_ciphertexts(self, shape: tuple[int, int]) -> int:
        """Ciphertexts of an h x k weight matrix in layer 1's orientation (h ≤ P): one per P columns."""
        if shape[0] > self.P:
            raise LayoutError(f"a layer of {shape[0]} units does not fit the {self.P}x{self.P} grid")
        return math.ceil(int(shape[1]) / self.P)

    def weight_blocks(self, W1: np.ndarray) -> list[np.ndarray]:
        """Layer-1 weights (h1 x d) as T = ceil(d / P) ciphertexts: block t holds W1[b, tP + a]."""
        W1 = np.asarray(W1, dtype=np.float64)
        return [self.weight(W1[:, t * self.P: (t + 1) * self.P], "b") for t in range(self.n_ciphertexts(W1.shape))]

    def read_weight_blocks(self, vecs, shape: tuple[int, int]) -> np.ndarray:
        """Inverse of ``weight_blocks``: layer-1 weights of ``shape`` (h1 x d) from the T decrypted block vectors."""
        h, d = shape
        self.n_ciphertexts(shape)
        parts = [self.read_weight(v, "b", (h, self.P)) for v in vecs]
        return np.concatenate(parts, axis=1)[:, :d]

    pack, unpack = weight_blocks, read_weight_blocks

    def bias(self, b: np.ndarray, out_axis: str) -> np.ndarray:
        """Slot vector of bias ``b`` (length k) along ``out_axis`` at index 0 of the other axis, in every sample."""
        return self.along(np.broadcast_to(b, (self.S, b.size)), 0, out_axis)

    def read_bias(self, vec: np.ndarray, out_axis: str, k: int) -> np.ndarray:
        """Inverse of ``bias``: the first ``k`` values along ``out_axis`` of sample 0.
        Shape (k,).
        """
        return self.read_along(vec, out_axis, k)[0]

    def mask(self, axis: str, k: int, valid_samples: int | None = None, value: float = 1.0) -> np.ndarray:
        """1 (or ``value``) at index < k along ``axis`` (index 0 of the other axis), first samples only."""
        ones = np.zeros((self.S, k)) + value
        if valid_samples is not None:
            ones[valid_samples:] = 0.0
        return self.along(ones, 0, axis)

    def valid_samples(self, g: int) -> int:
        """Real samples in group ``g``: S, fewer in the last group, 0 past the end."""
        return max(0, min(self.S, self.n - g * self.S))


def other(axis: str) -> str:
    """The other grid axis: "a" -> "b", anything else -> "a"."""
    return "b" if axis == "a" else "a"


# ---------------------------------------------------------------------- ciphertext operations
def reduce_axis(engine, ct, layout: GridLayout, axis: str):
    """Σ over ``axis`` (a, b or s); valid at index 0 of that axis (s: replicated over samples)."""
    return engine.sum_slots(ct, layout.width(axis), layout.stride(axis))


def replicate(engine, ct, layout: GridLayout, axis: str):
    """Copy the value at index 0 of ``axis`` to every index of it; the ciphertext must be zero
    at every other index of that axis (masked), else the copies mix."""
    st = layout.stride(axis)
    shifted = engine.rotate(ct, -(layout.P - 1) * st)
    return engine.sum_slots(shifted, layout.P, st)
