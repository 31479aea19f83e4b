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
    """CSV without header, label first written as a float (``5.0``) like ../shared/data; atomic, and
    kept elsewhere (OutputError says where) if ``path`` refuses the bytes (hetrain.outputs)."""
    from hetrain.outputs import open_output

    with open_output(path, "CSV file") as f:
        for label, row in zip(y, X):
            # repr-precision floats: the file round-trips exactly
            f.write(f"{float(label)!r}," + ",".join(repr(float(v)) for v in row) + "\n")


def export_csv(name: str, path: str | os.PathLike, test_path: str | os.PathLike | None = None,
               test_fraction: float = 0.2, seed: int = 0) -> tuple[int, int]:
    """Write a bundled dataset to ``path``; returns (rows, features) of that file.

    With ``test_path``, a stratified split (scikit-learn's train_test_split, ``seed``) writes
    ``test_fraction`` of the rows there and the rest to ``path``.
    """
    from hetrain.outputs import check_writable

    for p in (path, test_path):
        if p is not None:
            check_writable(p, "CSV file")
    X, y = load_builtin(name)
    if test_path is not None:
        if not 0.0 < test_fraction < 1.0:
            raise DataError(f"test fraction must lie strictly between 0 and 1, got {test_fraction}")
        from sklearn.model_selection import train_test_split

        X, X_test, y, y_test = train_test_split(X, y, test_size=test_fraction, stratify=y, random_state=seed)
        write_csv(test_path, X_test, y_test)
    write_csv(path, X, y)
    return X.shape
