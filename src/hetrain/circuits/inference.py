"""Scoring encrypted queries: a trained network's layers over column-packed queries (and its NumPy twin).

A network is a list of ``Layer`` (A: out × in, b: out, act: polynomial or None): y = act(A·x + b).
The last layer gives the linear class scores; argmax needs nothing more (the output sigmoid is
monotone, so it cannot change the argmax: it is left to the client, on the decrypted scores).

Packing ("column"): ciphertext j of a query group holds feature j of up to ``slots`` queries, one
query per slot. Why this packing and not row-major blocks of next_pow2(d) slots:

* no rotation at all: every product is a ciphertext × scalar, so the query owner makes no Galois
  keys (a Galois key is ~10-200 MB) and the server spends no key switch on sums over features;
* cost per group: Σ_layers out·in scalar products (each one rescale) for ``slots`` queries, against
  out·(1 product + log2 D rotations) per ciphertext of slots/D queries for row-major blocks: at
  n8192, d = 400, c = 10, column packing needs 4,000 cheap products per 4,096 queries; row-major
  needs 512 ciphertexts × 10 × (1 product + 9 rotations) = 51,200 operations;
* hidden layers need no repacking: a layer's outputs are again one ciphertext per unit, in the
  input's packing, so any depth of layers chains with no mask or rotation.

The price: a batch of fewer than ``slots`` queries still sends d ciphertexts (latency-bound use with
one query at a time would prefer row-major); ``bench/inference.py`` measures both batch sizes.

Levels: one per linear layer (the scalar products' rescale) plus the activation's polynomial depth
(``poly.poly_depth``). The activations are the training polynomials themselves: the network was
trained with them, so they ARE the model (a closer sigmoid would change the model, not improve
it). Their inputs are evaluated in the unit variable t = x / bound (``PolyApprox.unit_coeffs``, the
1/bound folded into A and b), which keeps every coefficient of order one at CKKS's scale.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .poly import eval_poly, eval_poly_plain, poly_depth


@dataclasses.dataclass(frozen=True)
class Layer:
    """y = act(A·x + b); ``act``: polynomial coefficients in increasing degree, or None (linear)."""

    A: np.ndarray
    b: np.ndarray
    act: tuple[float, ...] | None = None

    @property
    def depth(self) -> int:
        """Levels the layer consumes on encrypted queries: 1 for A·x + b, plus the activation's ``poly_depth``."""
        return 1 + (poly_depth(len(self.act) - 1) if self.act else 0)


def levels_needed(layers: Sequence[Layer]) -> int:
    """Levels the encrypted queries must have: one per layer plus each activation's depth."""
    return sum(layer.depth for layer in layers)


def column_pack(X: np.ndarray, slots: int) -> list[list[np.ndarray]]:
    """X (n × d) -> groups of ``slots`` queries, each a list of d vectors (feature j of the group's rows)."""
    X = np.asarray(X, dtype=np.float64)
    return [[X[s:s + slots, j] for j in range(X.shape[1])] for s in range(0, X.shape[0], slots)]


def n_groups(n: int, slots: int) -> int:
    """Ciphertext groups ``column_pack`` makes for ``n`` queries: ceil(n / slots)."""
    return -(-int(n) // int(slots))


def column_unpack(groups: Sequence[Sequence[np.ndarray]], n: int) -> np.ndarray:
    """Inverse of column_pack for decrypted scores: groups of c vectors -> n × c."""
    cols = [np.concatenate([np.asarray(g[k]) for g in groups]) for k in range(len(groups[0]))]
    return np.stack(cols, axis=1)[:n]


def score_columns(engine, cols: Sequence, layers: Sequence[Layer]) -> list:
    """The network on one group of column-packed ciphertexts (d of them); returns one ciphertext per
    class (its linear scores). Levels: ``levels_needed(layers)``; DepthExhausted below that."""
    z = list(cols)
    for layer in layers:
        out = []
        for row, bias in zip(np.asarray(layer.A), np.asarray(layer.b)):
            terms = [engine.mul_scalar(z[j], float(a)) for j, a in enumerate(row) if a != 0.0]
            acc = engine.add_many(terms) if terms else engine.mul_scalar(z[0], 0.0)
            if bias != 0.0:
                acc = engine.add(acc, float(bias))
            out.append(eval_poly(engine, acc, layer.act) if layer.act else acc)
        z = out
    return z


def plain_scores(X: np.ndarray, layers: Sequence[Layer]) -> np.ndarray:
    """NumPy twin of ``score_columns``: n × c linear scores, the same arithmetic."""
    Z = np.asarray(X, dtype=np.float64)
    for layer in layers:
        Z = Z @ np.asarray(layer.A).T + np.asarray(layer.b)
        if layer.act:
            Z = eval_poly_plain(Z, layer.act)
    return Z
