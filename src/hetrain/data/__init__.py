"""Reading labelled data files and scikit-learn's bundled datasets, with clear errors.

    X, y = load_dataset("train.csv")        # CSV without header, label in column 0, or .npz (X, y)
"""
from .datasets import BUILTIN_DATASETS, export_csv, load_builtin
from .loaders import load_csv, load_dataset, load_npz
from .validate import check_features, check_feature_count, check_known_labels, check_labels

__all__ = ["BUILTIN_DATASETS", "check_feature_count", "check_features", "check_known_labels", "check_labels",
           "export_csv", "load_builtin", "load_csv", "load_dataset", "load_npz"]
