"""Client-side preprocessing: standardisation, an optional scale factor, one-hot labels.

The statistics come from the training rows only and are stored in the model file, so that
evaluation applies exactly the same transform. The scale factor exists for the polynomial
activations: a trainer's sigmoid approximation is only valid on an interval (e.g. [-8, 8]), and
shrinking the inputs keeps the pre-activations inside it (circuits.approx.check_interval).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hetrain.data.validate import check_feature_count, check_features, check_known_labels, check_labels
from hetrain.errors import DataError

# A feature whose training standard deviation is below this is treated as constant: it is
# centred (becomes 0) instead of being divided by ~0, which would blow up unseen test values.
CONSTANT_STD = 1e-12


@dataclasses.dataclass
class Preprocessor:
    mean: np.ndarray
    std: np.ndarray          # 1.0 where the feature is constant in training
    scale: float
    classes: list[int]

    @classmethod
    def fit(cls, X, y, scale: float = 1.0) -> "Preprocessor":
        X = check_features(X)
        y = check_labels(y, n_rows=X.shape[0])
        scale = float(scale) if isinstance(scale, (int, float, np.number)) else scale
        if not (isinstance(scale, float) and np.isfinite(scale) and scale > 0):
            raise DataError(f"scale must be a positive number, got {scale}")
        classes = sorted(int(c) for c in np.unique(y))
        if len(classes) < 2:
            raise DataError(f"training labels hold a single class ({classes}); a classifier needs at least two")
        std = X.std(axis=0)
        std = np.where(std < CONSTANT_STD, 1.0, std)
        return cls(X.mean(axis=0), std, float(scale), classes)

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def transform(self, X) -> np.ndarray:
        X = check_features(X)
        check_feature_count(X, self.n_features, "the preprocessing recorded at training")
        return (X - self.mean) / self.std * self.scale

    def one_hot(self, y) -> np.ndarray:
        """n x c matrix in {0, 1}, columns in the order of ``classes``."""
        return (self.label_index(y)[:, None] == np.arange(len(self.classes))[None, :]).astype(np.float64)

    def label_index(self, y) -> np.ndarray:
        """Column index of each label; DataError for labels not seen in training."""
        y = check_labels(y)
        check_known_labels(y, self.classes)
        return np.searchsorted(np.asarray(self.classes), y)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "scale": self.scale, "classes": self.classes}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        try:
            p = cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64),
                    float(d["scale"]), [int(c) for c in d["classes"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"preprocessing record is malformed: {exc}") from None
        if p.mean.ndim != 1 or p.mean.shape != p.std.shape or not np.all(p.std > 0):
            raise DataError("preprocessing record is malformed: mean/std shapes differ or std is not positive")
        bad = [name for name, v in (("mean", p.mean), ("std", p.std), ("scale", p.scale)) if not np.all(np.isfinite(v))]
        if bad:
            raise DataError(f"preprocessing record is malformed: {' and '.join(bad)} hold NaN or infinite values")
        if not p.scale > 0:
            raise DataError(f"preprocessing record is malformed: scale must be positive, got {p.scale}")
        if len(p.classes) < 2 or p.classes != sorted(set(p.classes)):
            raise DataError(f"preprocessing record is malformed: classes must be at least two distinct labels in "
                            f"increasing order, got {p.classes}")
        return p
