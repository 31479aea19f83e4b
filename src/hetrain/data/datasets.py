"""scikit-learn's bundled datasets (offline), and writing them in hetrain's CSV layout."""
from __future__ import annotations

import os

import numpy as np

from hetrain.errors import DataError

BUILTIN_DATASETS = ("iris", "digits", "breast_cancer", "wine")


def load_builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of one of BUILTIN_DATASETS, shipped inside scikit-learn's wheel (no download)."""
    from sklearn import datasets

    if name not in BUILTIN_DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(BUILTIN_DATASETS)}")
    bunch = getattr(datasets, f"load_{name}")()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def write_csv(path: str | os.PathLike, X: np.ndarray, y: np.ndarray) -> None:
    """CSV without header, label first written as a float (``5.0``) like ../shared/data; atomic."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            for label, row in zip(y, X):
                # repr-precision floats: the file round-trips exactly
                f.write(f"{float(label)!r}," + ",".join(repr(float(v)) for v in row) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def export_csv(name: str, path: str | os.PathLike) -> tuple[int, int]:
    """Write a bundled dataset to ``path``; returns (rows, features)."""
    X, y = load_builtin(name)
    write_csv(path, X, y)
    return X.shape
