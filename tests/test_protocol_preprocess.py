"""Client preprocessing: statistics from the training rows only, constant features, scale, one-hot."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from hetrain.errors import DataError, DataWarning
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
    with pytest.warns(DataWarning, match=r"\(feature 1\)"):
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


# -- issue 10 item 11: degenerate standardisation (tiny/huge magnitudes, constant columns) ------------
@pytest.fixture(scope="module")
def wine_split():
    from sklearn.model_selection import train_test_split

    from hetrain.data import load_builtin

    X, y = load_builtin("wine")
    return train_test_split(X, y, stratify=y, random_state=0)


@pytest.mark.parametrize("factor", [1e-300, 1e300])
def test_tiny_and_huge_features_standardise_like_unscaled(wine_split, factor):
    Xtr, Xte, ytr, _ = wine_split
    ref = Preprocessor.fit(Xtr, ytr)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # real variance: nothing may be called constant
        p = Preprocessor.fit(Xtr * factor, ytr)
    np.testing.assert_allclose(p.transform(Xtr * factor), ref.transform(Xtr), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(p.transform(Xte * factor), ref.transform(Xte), rtol=1e-9, atol=1e-12)


def test_features_times_1e_minus_300_train_like_unscaled_on_sim(wine_split):
    from hetrain.protocol import fit

    Xtr, Xte, ytr, yte = wine_split
    cfg = {"iterations": 3, "sigmoid": "deg3:16"}
    ref = fit(Xtr, ytr, "mlr", cfg, preset="auto", backend="sim", progress=False)
    tiny = fit(Xtr * 1e-300, ytr, "mlr", cfg, preset="auto", backend="sim", progress=False)
    acc = ref.model.accuracy(Xte, yte)
    assert acc > 0.9  # not a majority-class model (~0.4 on wine)
    assert tiny.model.accuracy(Xte * 1e-300, yte) == pytest.approx(acc)


def test_subnormal_features_are_refused_by_name():
    X = np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 5.0], [3.0, 4.0, 4.0]])
    X[:, [0, 2]] *= 1e-310
    with pytest.raises(DataError, match=r"^features 0, 2 hold only values smaller than 2\.2250738585072014e-308 .*subnormal"):
        Preprocessor.fit(X, [0, 1, 0])


def test_constant_features_warn_with_their_indices():
    X = np.column_stack([np.arange(6.0), np.full(6, 7.0), np.arange(6.0) ** 2, np.zeros(6), np.full(6, 0.1)])
    with pytest.warns(DataWarning, match=r"^3 of 5 features are constant in the training rows \(features 1, 3, 4\): "
                                         r"centred to 0, they carry no information$"):
        p = Preprocessor.fit(X, [0, 1] * 3)
    assert np.all(p.transform(X)[:, [1, 3, 4]] == 0)
    wide = np.column_stack([np.arange(4.0)] + [np.ones(4)] * 8)
    with pytest.warns(DataWarning, match=r"features 1, 2, 3, 4, 5 and 3 more\)"):
        Preprocessor.fit(wide, [0, 1, 0, 1])


def test_all_constant_features_are_refused():
    with pytest.raises(DataError, match=r"every feature is constant in the training rows \(2 of 2\)"):
        Preprocessor.fit(np.array([[1.0, 5.0]] * 4), [0, 1, 0, 1])
