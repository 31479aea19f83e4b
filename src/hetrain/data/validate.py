"""Checks on feature matrices and labels. Each failure is a DataError that says what to fix."""
from __future__ import annotations

import numpy as np

from hetrain.errors import DataError


def check_features(X, what: str = "features") -> np.ndarray:
    """A finite float64 matrix with at least one row and one column."""
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} are not numeric: {exc}") from None
    if X.ndim != 2:
        raise DataError(f"{what} must be a 2-D array (samples x features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{what} are empty (shape {X.shape})")
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{what} contain {int(bad.sum())} NaN or infinite value(s), first at row {r}, "
                        f"feature {c} ({X[r, c]})")
    return X


def check_labels(y, n_rows: int | None = None) -> np.ndarray:
    """Integer class labels (floats such as 5.0 are accepted when they are whole numbers)."""
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"labels are not numeric: {exc}") from None
    if y.ndim != 1:
        raise DataError(f"labels must be a 1-D array, got shape {y.shape}")
    if n_rows is not None and y.shape[0] != n_rows:
        raise DataError(f"{y.shape[0]} labels for {n_rows} rows of features")
    if not np.all(np.isfinite(y)):
        raise DataError("labels contain NaN or infinite values")
    frac = y != np.round(y)
    if frac.any():
        i = int(np.argmax(frac))
        raise DataError(f"labels must be integers (class ids); row {i} has label {float(y[i])}")
    return y.astype(np.int64)


def check_known_labels(y: np.ndarray, classes) -> None:
    """Every label must be one of the classes seen in training."""
    unknown = np.setdiff1d(np.unique(y), np.asarray(classes))
    if unknown.size:
        raise DataError(f"labels {unknown.tolist()} were not seen in training (the model knows classes "
                        f"{np.asarray(classes).tolist()})")


def check_feature_count(X: np.ndarray, n_features: int, what: str = "the model") -> None:
    if X.shape[1] != n_features:
        raise DataError(f"data has {X.shape[1]} features but {what} expects {n_features}")
