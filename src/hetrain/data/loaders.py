"""Labelled data files: CSV without header (label in column 0) or .npz with arrays X and y."""
from __future__ import annotations

import csv
import os
import pathlib
import zipfile

import numpy as np

from hetrain.errors import DataError

from .validate import check_features, check_labels


def load_dataset(path: str | os.PathLike, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X float64 n x d, y int64 n) from a .csv or .npz file, validated.

    ``n_features``: the feature count a model expects (evaluation); a CSV with exactly that many
    columns then gets a DataError saying it seems to lack its label column, before column 0 is
    misread as labels."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise DataError(f"data file {str(p)!r} does not exist")
    if p.suffix.lower() == ".npz":
        return load_npz(p)
    return load_csv(p, n_features)


def load_csv(path: str | os.PathLike, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CSV without header: column 0 is the label (e.g. ``5.0``), the other columns are features.
    ``n_features``: see load_dataset."""
    rows: list[list[float]] = []
    width = None
    try:
        with open(path, newline="") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                if not row or all(not c.strip() for c in row):
                    continue  # blank line
                if width is None:
                    width = len(row)
                    if n_features is not None and width == n_features:
                        raise DataError(f"{path} has {width} columns, exactly the {n_features} features the model "
                                        "expects: it seems to have no label column (column 0 must be the label, "
                                        "then the features)")
                    if width < 2:
                        raise DataError(f"{path}: line {lineno} has {width} column; need a label and at least one feature")
                elif len(row) != width:
                    raise DataError(f"{path}: line {lineno} has {len(row)} columns, earlier lines have {width}")
                try:
                    rows.append([float(c) for c in row])
                except ValueError:
                    col = next(i for i, c in enumerate(row) if not _is_float(c))
                    what = "label" if col == 0 else f"feature {col - 1}"
                    raise DataError(f"{path}: line {lineno}, column {col} ({what}) is not a number: {row[col]!r}"
                                    + (" (CSV files must have no header row)" if lineno == 1 else "")) from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file") from None
    if not rows:
        raise DataError(f"{path}: the file is empty")
    a = np.asarray(rows, dtype=np.float64)
    y = check_labels(a[:, 0])
    X = check_features(a[:, 1:], what=f"features in {path}")
    return X, y


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """.npz with arrays ``X`` (n x d) and ``y`` (n)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"X", "y"} - set(z.files)
            if missing:
                raise DataError(f"{path}: .npz must hold arrays 'X' and 'y'; missing {sorted(missing)} (has {z.files})")
            X, y = z["X"], z["y"]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if X.size == 0:
        raise DataError(f"{path}: the file holds no samples")
    X = check_features(X, what=f"features in {path}")
    return X, check_labels(y, n_rows=X.shape[0])


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
