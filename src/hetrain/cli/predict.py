"""`hetrain predict`: a trained model's predictions (or class probabilities) for rows without labels."""
from __future__ import annotations

import argparse
import csv
import io
import pathlib

import numpy as np


# TODO(merge): use hetrain.data.load_table (the "inputs" branch) and cli.inputs.add_input_arguments /
# table_from_args(args, need_labels=False); this shim is the only reader of unlabelled rows here.
def _read_queries(path, n_features: int | None = None, note=print) -> np.ndarray:
    """Feature rows (n × d, float64) from a CSV without header or an .npz with array X (y ignored).
    A CSV with n_features + 1 columns has a label column: column 0 is dropped (said in a note).
    DataError for a missing, empty, non-numeric or ragged file."""
    from hetrain.data.validate import check_features
    from hetrain.errors import DataError

    p = pathlib.Path(path)
    if not p.is_file():
        raise DataError(f"data file {str(p)!r} does not exist")
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                if "X" not in z.files:
                    raise DataError(f"{p}: .npz must hold an array 'X' (has {z.files})")
                X = z["X"]
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: not a readable .npz file ({exc})") from None
    else:
        rows, width = [], None
        try:
            with open(p, newline="", encoding="utf-8-sig") as f:
                for lineno, row in enumerate(csv.reader(f), start=1):
                    if not row or all(not c.strip() for c in row):
                        continue
                    if width is None:
                        width = len(row)
                    elif len(row) != width:
                        raise DataError(f"{p}: line {lineno} has {len(row)} columns, earlier lines have {width}")
                    try:
                        rows.append([float(c) for c in row])
                    except ValueError:
                        bad = next(i for i, c in enumerate(row) if not _is_float(c))
                        hint = " (a header row? CSV files must have no header row)" if not rows else ""
                        raise DataError(f"{p}: line {lineno}, column {bad} is not a number: {row[bad]!r}{hint}") from None
        except UnicodeDecodeError:
            raise DataError(f"{p}: not a UTF-8 text CSV file") from None
        if not rows:
            raise DataError(f"{p}: the file is empty")
        X = np.asarray(rows, dtype=np.float64)
    X = check_features(X, what=f"features in {p}")
    if n_features is not None and X.shape[1] == n_features + 1:
        note(f"note: {p} has {X.shape[1]} columns and the model takes {n_features} features: column 0 is read as "
             "a label column and ignored")
        X = X[:, 1:]
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(f"{p} has {X.shape[1]} feature columns; the model takes {n_features}")
    return X


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def write_predictions(path, labels, classes, proba: np.ndarray | None = None) -> None:
    """CSV with a header: ``label`` (one predicted class per row), then with ``proba`` one column
    ``p_<class>`` per class (rows sum to 1)."""
    from hetrain.outputs import write_output

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label"] + ([f"p_{c}" for c in classes] if proba is not None else []))
    for i, lab in enumerate(np.asarray(labels).tolist()):
        w.writerow([lab] + ([f"{v:.6g}" for v in proba[i]] if proba is not None else []))
    write_output(path, buf.getvalue(), "predictions")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model file written by `hetrain fit` or `hetrain decrypt`")
    p.add_argument("--data", required=True, help="rows to score: CSV without header (features only; a label column "
                                                 "0 is ignored) or .npz (X)")
    p.add_argument("--out", required=True, help="predictions CSV to write (header: label[,p_<class>...])")
    p.add_argument("--proba", action="store_true", help="also write each class's probability (softmax of the scores)")


def run(args) -> int:
    from hetrain.outputs import check_writable
    from hetrain.protocol import TrainedModel

    out = check_writable(args.out, "predictions")
    model = TrainedModel.load(args.model)
    X = _read_queries(args.data, model.n_features)
    labels = model.predict(X)
    write_predictions(out, labels, model.classes, model.predict_proba(X) if args.proba else None)
    print(f"{X.shape[0]} predictions ({model.model}, classes {model.classes}) written to {out}")
    return 0
