"""The packings' one interface and their registry by name.

A packing maps plaintext matrices to the slot vectors of ciphertexts and back, and fixes the
rotations its circuits need. The five differ in almost everything else: what they pack besides
the weights (the mlr packings pack X, X̃, Y and masks; the grid packing per-sample vectors along
two axes; the diagonal packing client-rotated inputs), how they are chosen (from n, d, c; from the
layer widths; from one matrix), and the circuits themselves. What they all do, and what this
interface therefore asks for, is the part a client and a planner need from every one of them:

* ``name``: the registry name;
* ``slots``: the slot count it was chosen for;
* ``n_ciphertexts(shape)``: how many ciphertexts a weight matrix of ``shape`` takes (upload sizes);
* ``pack(M) -> list of slot vectors`` and ``unpack(vectors, shape) -> M``: the weight matrix
  (rows = outputs/classes, columns = inputs/features: U of mlr, W1 of the networks) to the vectors the
  client encrypts and back from the decryptions: every trainer's initial weights and trained model;
* ``rotation_steps()``: the Galois steps its circuits use for the problem it was chosen for (one
  Galois key each).

A typing.Protocol, not an ABC: the packings are frozen dataclasses from before this interface,
and a structural type lets them keep their own constructors (``BlockedPacking.choose``,
``GridLayout.choose``, ...) while ``isinstance(p, Packing)`` still checks the methods. Each is
registered with a builder ``(n_samples, shape, slots) -> Packing`` so that a caller (a test, a
benchmark) can get every packing for one problem by name.

Names kept for compatibility: job.json's ``layout`` keys and the ``layout`` option users type
(``--layout``, the estimators' ``layout=``), and the classes ``GridLayout`` and ``SampleLayout``;
in prose "packing" is the term.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Protocol, Sequence, runtime_checkable

import numpy as np

from .errors import LayoutError


@runtime_checkable
class Packing(Protocol):
    """A packing of weight matrices into slot vectors (see the module docstring)."""

    name: ClassVar[str]
    slots: int

    def n_ciphertexts(self, shape: tuple[int, int]) -> int:
        """Ciphertexts that hold a weight matrix of ``shape`` (rows, columns). LayoutError if it does not fit."""

    def pack(self, M: np.ndarray) -> list[np.ndarray]:
        """``n_ciphertexts(M.shape)`` slot vectors (each of at most ``slots`` values) holding M."""

    def unpack(self, vectors: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        """M (``shape``) from the vectors ``pack`` made (or their decryptions)."""

    def rotation_steps(self) -> list[int]:
        """Galois steps (left rotations; negative: right) the packing's circuits use."""


@dataclasses.dataclass(frozen=True)
class PackingEntry:
    """A registered packing: ``build(n_samples, shape, slots)`` chooses it for n samples and a weight
    matrix of ``shape``; ``trainer``: the trainer (or bench) whose circuits use it; ``option``: whether
    ``--layout`` takes its name (the row-major baseline is for bench/iris.py only)."""

    name: str
    build: Callable[[int, tuple[int, int], int], Packing]
    trainer: str
    summary: str
    option: bool = True


_PACKINGS: dict[str, PackingEntry] = {}


def register_packing(entry: PackingEntry) -> PackingEntry:
    """Add a packing (ValueError if its name is taken)."""
    if entry.name in _PACKINGS:
        raise ValueError(f"packing {entry.name!r} is registered already")
    _PACKINGS[entry.name] = entry
    return entry


def packing_names() -> tuple[str, ...]:
    """Names of the registered packings, in registration order."""
    return tuple(_PACKINGS)


def packing_entry(name: str) -> PackingEntry:
    """The registered entry named ``name``; LayoutError (naming the registered ones) for an unknown name."""
    try:
        return _PACKINGS[name]
    except KeyError:
        raise LayoutError(f"unknown packing {name!r}; choose one of {', '.join(_PACKINGS)}") from None


def build_packing(name: str, n_samples: int, shape: tuple[int, int], slots: int) -> Packing:
    """The packing ``name`` chosen for ``n_samples`` samples and a weight matrix of ``shape`` in
    ``slots`` slots. LayoutError for an unknown name or a problem that does not fit."""
    return packing_entry(name).build(int(n_samples), (int(shape[0]), int(shape[1])), int(slots))


# ---------------------------------------------------------------------- the built-in packings
def _blocked(n, shape, slots):
    from .packing import BlockedPacking
    return BlockedPacking.choose(n, shape[1], shape[0], slots)


def _volley_revolver(n, shape, slots):
    from .packing import VolleyRevolverPacking
    return VolleyRevolverPacking.choose(n, shape[1], shape[0], slots)


def _dvr(n, shape, slots):
    from .dvr import GridLayout
    return GridLayout.choose(slots, n, shape[1], [shape[0]])


def _diagonal(n, shape, slots):
    from .diagonal import BandDiagonals, DiagonalPacking, SampleLayout
    return DiagonalPacking(SampleLayout(n, slots), BandDiagonals(*shape))


def _rowmajor(n, shape, slots):
    from .rowmajor import RowMajorPacking
    return RowMajorPacking.for_matrix(n, shape[0], shape[1], slots)


register_packing(PackingEntry("blocked", _blocked, "mlr, mlr-minibatch (always)",
                              "blocks of I samples x L features x C classes; the fewest rotations"))
register_packing(PackingEntry("volley-revolver", _volley_revolver, "mlr with --refresh none",
                              "the published Volley Revolver packing (arXiv:2201.12577), for comparison"))
register_packing(PackingEntry("dvr", _dvr, "mlp: mlp-dvr", "S samples of a P x P grid per ciphertext (Double Volley Revolver)"))
register_packing(PackingEntry("diagonal", _diagonal, "mlp: mlp-diagonal",
                              "generalised diagonals per sample block; Wᵀ·δ on the same diagonals"))
register_packing(PackingEntry("rowmajor", _rowmajor, "bench/iris.py's baseline",
                              "row-major per sample block; Wᵀ re-packed under encryption (the baseline)",
                              option=False))
