"""Client preprocessing: statistics from the training rows only, constant features, scale, one-hot."""
from __future__ import annotations

import numpy as np
import pytest

from hetrain.errors import DataError
from hetrain.protocol import Preprocessor


def test_standardises_with_training_statistics(rng):
    X = rng.normal(3.0, 5.0, size=(50, 4))
    p = Preprocessor.fit(X, np.arange(50) % 3, scale=0.5)
    Z = p.transform(X)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(0), 0.5, rtol=1e-12)  # unit variance times the scale
    # test rows use the training statistics, not their own
    np.testing.assert_allclose(p.transform(X[:1] + 1.0), Z[:1] + 0.5 / X.std(0), rtol=1e-12)


def test_constant_feature_becomes_zero_not_nan():
    X = np.array([[1.0, 7.0], [2.0, 7.0], [3.0, 7.0]])
    p = Preprocessor.fit(X, [0, 1, 0])
    Z = p.transform(np.array([[2.0, 7.0], [2.0, 9.0]]))
    assert np.all(np.isfinite(Z)) and Z[0, 1] == 0.0 and Z[1, 1] == 2.0  # centred, not divided by ~0


def test_one_hot_follows_sorted_classes_and_roundtrips():
    p = Preprocessor.fit(np.eye(4), [7, 2, 7, 2])
    assert p.classes == [2, 7]
    np.testing.assert_array_equal(p.one_hot([7, 2, 7]), [[0, 1], [1, 0], [0, 1]])
    q = Preprocessor.from_dict(p.to_dict())
    np.testing.assert_array_equal(q.transform(np.eye(4)), p.transform(np.eye(4)))
    with pytest.raises(DataError, match="not seen in training"):
        p.one_hot([3])


@pytest.mark.parametrize("kwargs, y, message", [
    ({"scale": 0.0}, [0, 1], "scale must be a positive"),
    ({"scale": float("nan")}, [0, 1], "scale must be a positive"),
    ({}, [1, 1], "single class"),
    ({}, [0, 1, 1], "3 labels for 2 rows"),
])
def test_bad_inputs(kwargs, y, message):
    with pytest.raises(DataError, match=message):
        Preprocessor.fit(np.ones((2, 2)) + np.eye(2), y, **kwargs)


def test_malformed_record():
    with pytest.raises(DataError, match="malformed"):
        Preprocessor.from_dict({"mean": [0.0], "std": [0.0], "scale": 1.0, "classes": [0, 1]})
    with pytest.raises(DataError, match="malformed"):
        Preprocessor.from_dict({"mean": [0.0]})
