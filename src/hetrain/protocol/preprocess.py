"""Client-side preprocessing: standardisation, an optional scale factor, one-hot labels.

The statistics come from the training rows only and are stored in the model file, so that
evaluation applies exactly the same transform. The scale factor exists for the polynomial
activations: a trainer's sigmoid approximation is only valid on an interval (e.g. [-8, 8]), and
shrinking the inputs keeps the pre-activations inside it (circuits.approx.check_interval).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from hetrain.data.validate import align_labels, check_feature_count, check_features, check_known_labels, check_labels
from hetrain._format import plain
from hetrain.errors import DataError, DataWarning

# A feature whose training standard deviation is at most this fraction of its largest magnitude
# is treated as constant: it is centred (becomes 0) instead of being divided by ~0 (rounding noise),
# which would blow up unseen test values. Relative, so that features x 1e-300 or x 1e300 standardise
# exactly as the unscaled ones do.
CONSTANT_STD = 1e-12

# Smallest positive normal float64: a column whose largest magnitude is below it holds only subnormal
# values, with too few significant bits to standardise.
_TINY = float(np.finfo(np.float64).tiny)


def _columns(idx, limit: int = 5) -> str:
    """'features 0, 3, 7' or 'features 0, 3, 7, 8, 9 and 12 more' (0-based, as in the CSV errors)."""
    idx = [int(i) for i in idx]
    shown = ", ".join(str(i) for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"feature{'s' if len(idx) > 1 else ''} {shown}{more}"


def standardisation_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, constant mask) per column, computed on the column divided by its largest magnitude.

    The rescaling keeps the arithmetic in range whatever the magnitude (squares of 1e-300 underflow
    to 0 and of 1e300 overflow to inf otherwise); DataError for columns of subnormal values only.
    """
    peak = np.abs(X).max(axis=0)
    subnormal = (peak > 0) & (peak < _TINY)
    if subnormal.any():
        raise DataError(f"{_columns(np.flatnonzero(subnormal))} hold only values smaller than {_TINY!r} in magnitude "
                        "(subnormal numbers, too imprecise to standardise): rescale the data (e.g. multiply by 1e300)")
    unit = np.where(peak > 0, peak, 1.0)
    Xs = X / unit
    mean_s, std_s = Xs.mean(axis=0), Xs.std(axis=0)
    constant = std_s <= CONSTANT_STD
    return mean_s * unit, np.where(constant, 1.0, std_s * unit), constant


@dataclasses.dataclass
class Preprocessor:
    """Standardisation recorded on the training rows: ``mean`` and ``std`` (d,) per feature (std 1 where
    constant), a ``scale`` multiplied in after, and the sorted ``classes`` (all int, or all text).
    """
    mean: np.ndarray
    std: np.ndarray          # 1.0 where the feature is constant in training
    scale: float
    classes: list            # sorted class labels: all int, or all str (text labels, as written)

    @classmethod
    def fit(cls, X, y, scale: float = 1.0) -> "Preprocessor":
        """The preprocessing of training rows ``X`` (n × d) and labels ``y`` (n,); ``scale`` > 0.

        Raises DataError for a non-positive or non-numeric scale, fewer than two classes, every feature constant,
        or malformed rows/labels; warns DataWarning when some features are constant.
        """
        X = check_features(X)
        y = check_labels(y, n_rows=X.shape[0])
        scale = float(scale) if isinstance(scale, (int, float, np.number)) else scale
        if not (isinstance(scale, float) and np.isfinite(scale) and scale > 0):
            raise DataError(f"scale must be a positive number, got {plain(scale)!r}")
        classes = np.unique(y).tolist()  # LabelEncoder's order; the one-hot columns follow it
        if len(classes) < 2:
            raise DataError(f"training labels hold a single class ({classes}); a classifier needs at least two")
        mean, std, constant = standardisation_stats(X)
        if constant.all():
            raise DataError(f"every feature is constant in the training rows ({X.shape[1]} of {X.shape[1]}): "
                            "there is nothing to learn from")
        if constant.any():
            warnings.warn(DataWarning(
                f"{int(constant.sum())} of {X.shape[1]} features are constant in the training rows "
                f"({_columns(np.flatnonzero(constant))}): centred to 0, they carry no information"), stacklevel=2)
        return cls(mean, std, float(scale), classes)

    @property
    def n_features(self) -> int:
        """d: features a row must have."""
        return int(self.mean.shape[0])

    def transform(self, X) -> np.ndarray:
        """(X - mean) / std · scale, float64 (n × d). Raises DataError for malformed rows or another feature count."""
        X = check_features(X)
        check_feature_count(X, self.n_features, "the preprocessing recorded at training")
        return (X - self.mean) / self.std * self.scale

    def one_hot(self, y) -> np.ndarray:
        """n x c matrix in {0, 1}, columns in the order of ``classes``."""
        return (self.label_index(y)[:, None] == np.arange(len(self.classes))[None, :]).astype(np.float64)

    def label_index(self, y) -> np.ndarray:
        """Column index of each label; DataError for labels not seen in training.
        Shape (n,), integers in [0, c).
        """
        y = align_labels(y, self.classes)
        check_known_labels(y, self.classes)
        return np.searchsorted(np.asarray(self.classes), y)

    def to_dict(self) -> dict:
        """JSON-ready dict (lists); inverse of ``from_dict``."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "scale": self.scale, "classes": self.classes}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        """Inverse of ``to_dict``, checked. Raises DataError for missing fields, shapes that differ, non-positive
        std or scale, NaN or infinite values, or classes that are not at least two distinct sorted labels.
        """
        try:
            p = cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64),
                    float(d["scale"]), record_classes(d["classes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"preprocessing record is malformed: {exc}") from None
        if p.mean.ndim != 1 or p.mean.shape != p.std.shape or not np.all(p.std > 0):
            raise DataError("preprocessing record is malformed: mean/std shapes differ or std is not positive")
        bad = [name for name, v in (("mean", p.mean), ("std", p.std), ("scale", p.scale)) if not np.all(np.isfinite(v))]
        if bad:
            raise DataError(f"preprocessing record is malformed: {' and '.join(bad)} hold NaN or infinite values")
        if not p.scale > 0:
            raise DataError(f"preprocessing record is malformed: scale must be positive, got {p.scale}")
        if p.classes is None or len(p.classes) < 2 or p.classes != sorted(set(p.classes)):
            raise DataError(f"preprocessing record is malformed: classes must be at least two distinct labels in "
                            f"increasing order, got {p.classes}")
        return p


def record_classes(classes) -> list | None:
    """A file's class list as the model holds it: all int, or all str (text labels); None when it
    mixes the two or holds anything else (the caller says the record is malformed)."""
    classes = list(classes)
    if all(isinstance(c, str) for c in classes):
        return classes
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) and float(c).is_integer() for c in classes):
        return [int(c) for c in classes]
    return None
