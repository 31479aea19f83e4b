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

    UTF-8, with or without a byte-order mark (Excel and Notepad write one); LF or CRLF line ends.
    ``n_features``: see load_dataset.
    """
    rows: list[list[float]] = []
    text_labels: list[tuple[int, str]] = []  # (line, label) of rows whose label is text
    width = None
    first_line = 0
    try:
        # utf-8-sig: a leading BOM is dropped instead of being read into the first cell
        with open(path, newline="", encoding="utf-8-sig") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                if not row or all(not c.strip() for c in row):
                    continue  # blank line
                first = width is None
                if first:
                    width, first_line = len(row), lineno
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
                    continue
                except ValueError:
                    pass
                bad = [i for i, c in enumerate(row) if not _is_float(c)]
                features = [i for i in bad if i > 0]
                if first and features and (bad[0] == 0 or 2 * len(bad) > len(row)):
                    shown = ", ".join(repr(row[i]) for i in bad[:3]) + (", ..." if len(bad) > 3 else "")
                    raise DataError(f"{path}: line {lineno} is not numeric ({shown}); it looks like a header row: "
                                    "CSV files must have no header row") from None
                if features:
                    col = features[0]
                    raise DataError(f"{path}: line {lineno}, column {col} (feature {col - 1}) is not a number: "
                                    f"{row[col]!r}") from None
                text_labels.append((lineno, row[0]))  # only the label is text: decided once every line is read
                rows.append([0.0] + [float(c) for c in row[1:]])
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file") from None
    if not rows:
        raise DataError(f"{path}: the file is empty")
    if text_labels:
        raise DataError(_text_label_message(path, text_labels, len(rows), first_line))
    a = np.asarray(rows, dtype=np.float64)
    y = check_labels(a[:, 0])
    X = check_features(a[:, 1:], what=f"features in {path}")
    return X, y


def _text_label_message(path, text_labels: list[tuple[int, str]], n_rows: int, first_line: int) -> str:
    """Text in the label column: a whole column of class names, or one stray line (a header?)."""
    lineno, label = text_labels[0]
    if len(text_labels) == 1 and n_rows > 1:
        msg = (f"{path}: line {lineno}, column 0 (label) is not a number: {label!r}; it is the only line with a "
               "text label (the other lines have numbers there)")
        if lineno == first_line:
            msg += f"; if line {lineno} is a header row, remove it: CSV files must have no header row"
        return msg
    examples: list[str] = []
    for _, lab in text_labels:
        if lab not in examples:
            examples.append(lab)
    shown = " and ".join(repr(e) for e in examples[:2])
    where = "on every line" if len(text_labels) == n_rows else f"on {len(text_labels)} of {n_rows} lines, first line {lineno}"
    return (f"{path}: labels must be integers; column 0 holds text labels such as {shown} ({where}); "
            "map them to integers (e.g. 0, 1)")


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
