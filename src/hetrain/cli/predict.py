"""`hetrain predict`: a trained model's predictions (or class probabilities) for rows without labels."""
from __future__ import annotations

import argparse
import csv
import io

import numpy as np

from .inputs import add_input_arguments


def read_features(args, n_features: int | None = None, note=print) -> np.ndarray:
    """The rows to score (n × d, float64) from ``args.data`` with the input options (cli/inputs.py; no
    label column unless --label-column names one). A file with n_features + 1 columns and no
    --label-column has a label column: column 0 is dropped (said in a note). DataError for a missing,
    empty, non-numeric or ragged file, or one whose width is not the model's."""
    from hetrain.errors import DataError

    from .inputs import table_from_args

    table = table_from_args(args, need_labels=False)
    X = table.X
    if n_features is not None and args.label_column is None and X.shape[1] == n_features + 1:
        note(f"note: {table.source} has {X.shape[1]} columns and the model takes {n_features} features: column 0 "
             "is read as a label column and ignored (--label-column 0 says so, --label-column NAME names another)")
        X = X[:, 1:]
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(f"{table.source} has {X.shape[1]} feature columns; the model takes {n_features}")
    return X


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
    p.add_argument("--data", required=True, help="rows to score: CSV (features only; a label column 0 is ignored), "
                                                 ".npz (X) or Parquet")
    add_input_arguments(p, labels=False)
    p.add_argument("--out", required=True, help="predictions CSV to write (header: label[,p_<class>...])")
    p.add_argument("--proba", action="store_true", help="also write each class's probability (softmax of the scores)")


def run(args) -> int:
    from hetrain.outputs import check_writable
    from hetrain.protocol import TrainedModel

    out = check_writable(args.out, "predictions")
    model = TrainedModel.load(args.model)
    X = read_features(args, model.n_features)
    labels = model.predict(X)
    write_predictions(out, labels, model.classes, model.predict_proba(X) if args.proba else None)
    print(f"{X.shape[0]} predictions ({model.model}, classes {model.classes}) written to {out}")
    return 0
