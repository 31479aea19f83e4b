"""`hetrain evaluate`: accuracy of a trained (decrypted) model on labelled data."""
from __future__ import annotations

import argparse

from .inputs import add_input_arguments, table_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model file written by `hetrain fit`")
    p.add_argument("--data", required=True, help="test data: CSV (header and delimiter detected, label in column 0 "
                                                 "unless --label-column), .npz (X, y) or Parquet")
    add_input_arguments(p)


def run(args) -> int:
    from hetrain.protocol import TrainedModel

    model = TrainedModel.load(args.model)
    table = table_from_args(args, n_features=model.n_features)
    acc = model.accuracy(table.X, table.y)
    print(f"model: {model.model} ({model.info.get('backend', '?')}, {model.params_name}), "
          f"classes {model.classes}")
    print(f"data: {table.X.shape[0]} samples from {args.data}")
    print(f"accuracy={acc:.4f}")
    return 0
