"""(X, y) from a data file, for callers that want arrays: thin wrappers of ``load_table`` (table.py)."""
from __future__ import annotations

import os
import pathlib

import numpy as np

from .table import _load_csv, _load_npz, load_table


def load_dataset(path: str | os.PathLike, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X float64 n x d, y n) from a .csv (header and delimiter detected, label in column 0), .npz
    (X, y) or Parquet file, validated: y is int64 for whole-number labels, str for text labels.

    ``n_features``: the feature count a model expects (evaluation); a file with exactly that many
    columns then gets a DataError saying it seems to lack its label column, before column 0 is
    misread as labels."""
    t = load_table(path, n_features=n_features)
    return t.X, t.y


def load_csv(path: str | os.PathLike, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """load_dataset of a file read as CSV whatever its suffix."""
    t = _load_csv(pathlib.Path(path), None, 0, None, True, n_features)
    return t.X, t.y


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """.npz with arrays ``X`` (n x d) and ``y`` (n)."""
    t = _load_npz(pathlib.Path(path), 0, True)
    return t.X, t.y
