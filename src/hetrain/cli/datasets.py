"""`hetrain datasets`: write scikit-learn's bundled datasets in hetrain's CSV layout (offline)."""
from __future__ import annotations

import argparse

from hetrain.data.datasets import BUILTIN_DATASETS


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    exp = sub.add_parser("export", help="write a dataset as CSV (no header, label in column 0)")
    exp.add_argument("name", choices=BUILTIN_DATASETS)
    exp.add_argument("--out", required=True, help="CSV file to write (the training rows with --test-out)")
    exp.add_argument("--test-out", help="also split: stratified held-out rows go to this CSV (default: no split)")
    exp.add_argument("--test-fraction", type=float, default=0.2, help="share of rows for --test-out (default 0.2)")
    exp.add_argument("--seed", type=int, default=0, help="random state of the split (default 0)")
    sub.add_parser("list", help="list the bundled datasets")


def run(args) -> int:
    from hetrain.data import export_csv, load_builtin

    if args.action == "list":
        for name in BUILTIN_DATASETS:
            X, y = load_builtin(name)
            print(f"{name}: {X.shape[0]} samples, {X.shape[1]} features, {len(set(y.tolist()))} classes")
        return 0
    rows, cols = export_csv(args.name, args.out, args.test_out, args.test_fraction, args.seed)
    print(f"wrote {rows} rows x {cols} features (+ label column) to {args.out}")
    if args.test_out:
        print(f"wrote the held-out rows (stratified, fraction {args.test_fraction}, seed {args.seed}) to {args.test_out}")
    return 0
