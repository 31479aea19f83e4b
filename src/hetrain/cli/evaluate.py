"""`hetrain evaluate`: accuracy of a trained (decrypted) model on labelled data."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model file written by `hetrain fit`")
    p.add_argument("--data", required=True, help="test data: CSV without header (label in column 0) or .npz (X, y)")


def run(args) -> int:
    from hetrain.data import load_dataset
    from hetrain.protocol import TrainedModel

    model = TrainedModel.load(args.model)
    X, y = load_dataset(args.data, n_features=model.n_features)
    acc = model.accuracy(X, y)
    print(f"model: {model.model} ({model.info.get('backend', '?')}, {model.params_name}), "
          f"classes {model.classes}")
    print(f"data: {X.shape[0]} samples from {args.data}")
    print(f"accuracy={acc:.4f}")
    return 0
