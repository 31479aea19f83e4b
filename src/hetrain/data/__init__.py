"""Reading labelled data files and scikit-learn's bundled datasets, with clear errors.

    t = load_table("train.csv", label_column="species")   # CSV (header, delimiter detected), .npz, Parquet
    X, y = load_dataset("train.csv")                      # the same reader, label in column 0
"""
from .datasets import BUILTIN_DATASETS, export_csv, load_builtin
from .loaders import load_csv, load_dataset, load_npz
from .table import Table, load_table
from .validate import align_labels, check_features, check_feature_count, check_known_labels, check_labels

__all__ = ["BUILTIN_DATASETS", "Table", "align_labels", "check_feature_count", "check_features", "check_known_labels",
           "check_labels", "export_csv", "load_builtin", "load_csv", "load_dataset", "load_npz", "load_table"]
