"""Checks on feature matrices and labels. Each failure is a DataError that says what to fix."""
from __future__ import annotations

import numpy as np

from hetrain._format import plain
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
    """Class labels as a 1-D array: int64 for numbers (floats such as 5.0 are accepted when they are
    whole numbers), str for text, kept as written (classes are then ``np.unique`` of them: sorted,
    like scikit-learn's LabelEncoder). DataError for fractional numbers, NaN/inf, empty text labels
    or a wrong length."""
    raw = np.asarray(y)
    if raw.dtype.kind in "US" or (raw.dtype.kind == "O" and any(isinstance(v, str) for v in raw.ravel())):
        text = np.asarray([str(v) for v in raw.ravel()], dtype=str).reshape(raw.shape)
        _check_shape(text, n_rows)
        empty = np.flatnonzero(np.char.strip(text.ravel()) == "")
        if empty.size:
            raise DataError(f"row {int(empty[0])} has an empty label (text labels must not be empty)")
        return text
    try:
        y = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"labels are not numeric: {exc}") from None
    _check_shape(y, n_rows)
    if not np.all(np.isfinite(y)):
        raise DataError("labels contain NaN or infinite values")
    frac = y != np.round(y)
    if frac.any():
        i = int(np.argmax(frac))
        raise DataError(f"labels must be integers (class ids) or text (class names); row {i} has label {plain(y[i])}")
    return y.astype(np.int64)


def _check_shape(y: np.ndarray, n_rows: int | None) -> None:
    if y.ndim != 1:
        raise DataError(f"labels must be a 1-D array, got shape {y.shape}")
    if n_rows is not None and y.shape[0] != n_rows:
        raise DataError(f"{y.shape[0]} labels for {n_rows} rows of features")


def align_labels(y, classes) -> np.ndarray:
    """``check_labels(y)`` in the type of a model's ``classes``: against text classes every label
    compares as text (a test file whose labels are all numbers, "2", still matches class "2");
    against number classes, text labels that are all whole numbers become numbers."""
    y = check_labels(y)
    text_classes = any(isinstance(c, str) for c in classes)
    if text_classes and y.dtype.kind != "U":
        return y.astype(str)
    if not text_classes and y.dtype.kind == "U":
        try:
            f = y.astype(np.float64)
        except ValueError:
            return y  # text labels against number classes: check_known_labels names them
        if np.all(np.isfinite(f)) and np.all(f == np.round(f)):
            return f.astype(np.int64)
    return y


def check_known_labels(y: np.ndarray, classes) -> None:
    """Every label must be one of the classes seen in training."""
    known = set(np.asarray(classes).tolist())
    unknown = sorted({v for v in np.unique(np.asarray(y)).tolist() if v not in known}, key=lambda v: (str(type(v)), v))
    if unknown:
        raise DataError(f"labels {plain(unknown)} were not seen in training (the model knows classes "
                        f"{plain(list(classes))})")


def check_feature_count(X: np.ndarray, n_features: int, what: str = "the model") -> None:
    if X.shape[1] != n_features:
        raise DataError(f"data has {X.shape[1]} features but {what} expects {n_features}")
