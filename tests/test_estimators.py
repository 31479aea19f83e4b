"""scikit-learn-style estimators: the parameter contract, and fit/predict through the real pipeline."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from toykit import ToyTrainer  # noqa: F401  (registers "toy-centroid")

from hetrain.data import load_builtin
from hetrain.errors import DataError, HetrainUserError
from hetrain.estimators import EncryptedLogisticRegression, EncryptedMLPClassifier


class ToyClassifier(EncryptedLogisticRegression):
    """The estimator machinery over the toy trainer (the real 'mlr' is tested with its trainer)."""

    _model_name = "toy-centroid"


@pytest.mark.parametrize("cls", [EncryptedLogisticRegression, EncryptedMLPClassifier])
def test_params_roundtrip_and_clone(cls):
    est = cls(iterations=3, preset="n16384", backend="sim", random_state=5)
    params = est.get_params()
    assert params["iterations"] == 3 and params["preset"] == "n16384" and params["backend"] == "sim"
    twin = clone(est)
    assert twin is not est and twin.get_params() == params
    twin.set_params(iterations=7)
    assert twin.iterations == 7 and est.iterations == 3
    # no work (and no validation) in __init__: even a bad backend only fails at fit
    cls(backend="nope")


def test_mlp_config_passes_hidden_as_list():
    est = EncryptedMLPClassifier(hidden=(8, 4), iterations=2)
    assert est._config() == {"hidden": [8, 4], "iterations": 2, "layout": "auto"}


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        ToyClassifier().predict(np.ones((2, 4)))


@pytest.fixture(scope="module")
def iris_str():
    X, y = load_builtin("iris")
    return X, np.array(["setosa", "versicolor", "virginica"])[y]


def test_fit_predict_sim_with_string_labels(iris_str):
    X, y = iris_str
    clf = ToyClassifier(iterations=2, preset="n16384", backend="sim").fit(X, y)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"] and clf.n_features_in_ == 4
    assert set(clf.predict(X)) <= set(clf.classes_)
    assert clf.score(X, y) > 0.75
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
    assert clf.fit_stats_["backend"] == "sim" and clf.twin_max_abs_diff_ < 1e-12


def test_fit_predict_seal(iris_str):
    X, y = iris_str
    clf = ToyClassifier(preset="n8192", backend="seal").fit(X, y)
    # same tolerance reasoning as test_protocol_pipeline.test_fit_seal_matches_twin
    assert clf.twin_max_abs_diff_ < 1e-5 and clf.score(X, y) > 0.75
    assert clf.fit_stats_["params"] == "n8192" and clf.fit_stats_["upload_key_bytes"] > 1e6


def test_bad_inputs(iris_str):
    X, y = iris_str
    with pytest.raises(DataError, match="one label per row"):
        ToyClassifier(backend="sim").fit(X, y[:-1])
    with pytest.raises(DataError, match="NaN"):
        ToyClassifier(backend="sim").fit(np.where(X > 7, np.nan, X), y)
    with pytest.raises(DataError, match="single class"):
        ToyClassifier(backend="sim").fit(X[:10], y[:10])


def test_logistic_regression_estimator_with_mlr():
    from sklearn.model_selection import train_test_split
    X, y = load_builtin("wine")
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    clf = EncryptedLogisticRegression(iterations=3, sigmoid="deg3:16", backend="sim").fit(Xtr, ytr)
    assert clf.score(Xte, yte) > 0.93 and clf.fit_stats_["model"] == "mlr"


def test_mlp_defaults_follow_the_planner():
    # hidden=None (the default) means "planned": nothing fixed in the config, clone keeps that
    est = EncryptedMLPClassifier(backend="sim", refresh="client")
    assert est.hidden is None and est._config() == {"layout": "auto"}
    twin = clone(est)
    assert twin.get_params() == est.get_params() and twin.get_params()["refresh"] == "client"
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    # a short planned run (iterations given, the rest chosen) keeps the test quick on the sim backend
    clf = clone(est).set_params(iterations=4).fit(Xtr[:160], ytr[:160])
    cfg = clf.model_.config
    assert clf.fit_stats_["model"] == "mlp-dvr" and clf.fit_stats_["defaults"] is not None
    assert cfg["hidden"] == [16] and cfg["iterations"] == 4 and cfg["momentum"] == "none"
    assert clf.score(Xte, yte) > 0.85


def _short_mlr(**params):
    # the published full-batch trainer, 2 iterations on the sim backend: seconds
    return EncryptedLogisticRegression(refresh="none", iterations=2, sigmoid="deg3:16", preset="n16384",
                                       backend="sim", **params)


def test_random_state_is_a_parameter_and_seed_a_deprecated_alias(iris_str):
    X, y = iris_str
    for cls in (EncryptedLogisticRegression, EncryptedMLPClassifier):
        params = cls(random_state=7).get_params()
        assert params["random_state"] == 7 and params["seed"] == "deprecated"
    # the mini-batch trainer (2 epochs on sim) draws its split, shuffles and start from the seed
    def run(**seeding):
        return EncryptedLogisticRegression(backend="sim", preset="n16384", epochs=2, **seeding).fit(X, y).model_

    new = run(random_state=3).predict_scores(X)
    with pytest.warns(FutureWarning, match="seed was renamed random_state"):
        old = run(seed=3).predict_scores(X)
    np.testing.assert_array_equal(old, new)  # the same seed: the same run
    assert np.abs(run(random_state=4).predict_scores(X) - new).max() > 1e-3  # the seed is used
    # a RandomState draws the seed, as in scikit-learn: two equal generators give equal runs
    a = run(random_state=np.random.RandomState(1)).predict_scores(X)
    np.testing.assert_array_equal(a, run(random_state=np.random.RandomState(1)).predict_scores(X))
    assert clone(_short_mlr(seed=3)).get_params()["seed"] == 3  # clone keeps the old name's value


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_bad_random_state(iris_str, bad):
    X, y = iris_str
    with pytest.raises(HetrainUserError, match=r"random_state must be None, an int >= 0"):
        _short_mlr(random_state=bad).fit(X, y)


def test_seed_and_random_state_that_disagree(iris_str):
    X, y = iris_str
    with pytest.warns(FutureWarning), pytest.raises(HetrainUserError, match="seed=1 and random_state=2 disagree"):
        _short_mlr(seed=1, random_state=2).fit(X, y)


def test_grid_search_over_one_parameter():
    from sklearn.model_selection import GridSearchCV

    X, y = load_builtin("iris")
    search = GridSearchCV(_short_mlr(random_state=0), {"iterations": [1, 2]}, cv=2).fit(X, y)
    assert search.best_params_["iterations"] in (1, 2)
    assert search.best_estimator_.random_state == 0 and search.best_estimator_.fit_stats_["backend"] == "sim"
    assert search.best_estimator_.model_.config["iterations"] == search.best_params_["iterations"]
    assert search.best_score_ > 0.6 and search.score(X, y) > 0.6


def test_the_real_estimators_fit_on_seal():
    # both estimators through the real trainers under real CKKS (small rings: seconds, not minutes)
    X, y = load_builtin("iris")
    X, y = X[::3], y[::3]  # 50 rows: the diagonal layout's sample block holds them at n16384
    mlr = EncryptedLogisticRegression(refresh="none", iterations=1, sigmoid="deg3:16", preset="n8192",
                                      backend="seal", random_state=0).fit(X, y)
    mlp = EncryptedMLPClassifier(hidden=4, iterations=1, backend="seal", random_state=0).fit(X, y)
    for clf, model, params in ((mlr, "mlr", "n8192"), (mlp, "mlp-diagonal", "n16384")):
        s = clf.fit_stats_
        assert (s["backend"], s["model"], s["params"]) == ("seal", model, params)
        assert s["server_engine_has_secret_key"] is False and s["verified"] is True
        # CKKS error at scale 2^40 is ~1e-6 after a few levels; 1e-4 is far below the weights (~0.1)
        assert 0 < clf.twin_max_abs_diff_ < 1e-4
        assert clf.score(X, y) > 0.5  # 3 classes: chance is 1/3, one iteration is enough to beat it
