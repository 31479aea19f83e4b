"""Training without the data owner on OpenFHE: mlp-dvr and mlp-diagonal with ``refresh="bootstrap"``
(Python 3.10: skipped where openfhe is not importable).

The rings are the INSECURE test ring openfhe-boot-test-deep (N=2048, 10 levels after each bootstrap:
one mlp iteration with Nesterov momentum). Each training test bootstraps a few ciphertexts (4 and 2, ~1-2 s
each with OMP_WAIT_POLICY=PASSIVE on 2 cores): ~10-30 s, marked slow. The last test runs on openfhe-boot-test
(6 levels after a bootstrap) and bootstraps inside iterations (models/inner_boot.py).
"""
import numpy as np
import pytest

pytest.importorskip("openfhe", reason="openfhe (optional; wheel for Python 3.10 only) is not installed")

from hetrain.data import load_builtin  # noqa: E402
from hetrain.protocol import fit  # noqa: E402


def _iris(n):
    X, y = load_builtin("iris")
    idx = np.random.default_rng(0).permutation(len(y))[:n]
    return X[idx], y[idx]


@pytest.mark.slow
@pytest.mark.insecure
@pytest.mark.parametrize("model, n, hidden, iterations, bootstraps", [
    # W1, b1, W2, b2 once before iteration 2 (after Nesterov's first step, μ_0 = 0, the look-ahead is W itself)
    ("mlp-dvr", 150, 8, 2, 4),
    # two iterations per chain; the third bootstraps 2 intermediate ciphertexts inside it instead of the 15
    # weight diagonals (trace.bootstrap_step: the fewer bootstraps)
    ("mlp-diagonal", 15, 4, 3, 2),
])
def test_mlp_trains_with_bootstrap_and_no_client_round_trip(model, n, hidden, iterations, bootstraps):
    X, y = _iris(n)
    r = fit(X, y, model, {"hidden": [hidden], "iterations": iterations}, refresh="bootstrap", backend="openfhe",
            preset="openfhe-boot-test-deep", force_insecure=True, progress=False)
    s, refresh = r.stats, r.stats["refresh"]
    assert refresh["mode"] == "bootstrap"
    assert refresh["round_trips"] == 0 and refresh["refreshes"] == 0 and refresh["bytes_to_client"] == 0
    assert refresh["bootstraps"] == bootstraps  # the server bootstrapped by itself
    planned = s["bootstraps_planned"]  # the client's traced plan of the run
    assert sum(planned["state"]) + sum(planned["in_iteration"]) == bootstraps
    # the client's twin check (protocol/twin_bound.py): the decrypted weights match the plaintext twin
    assert s["twin_max_abs_diff"] <= s["twin_bound"]
    assert s["twin_max_abs_diff"] < 1e-4  # measured 9e-7 (dvr) and 2.8e-6 (diagonal)
    assert s["server_engine_has_secret_key"] is False



@pytest.mark.slow  # ~20 s: 2 iterations with ~25 bootstraps on the INSECURE test ring
@pytest.mark.insecure
def test_two_hidden_layers_train_without_the_client_by_bootstrapping_inside_iterations():
    """openfhe-boot-test restores 6 levels per bootstrap; an iteration of 4-8-4-3 needs 14-15: the server
    also bootstraps intermediate ciphertexts inside each iteration (models/inner_boot.py), with no round
    trip to the data owner, and the decryption is the plaintext twin's (twin check, same predictions)."""
    X, y = _iris(48)
    cfg = {"hidden": [8, 4], "iterations": 2, "learning_rate": 4.0, "sigmoid": "deg3:16"}
    r = fit(X, y, "mlp-dvr", cfg, refresh="bootstrap", backend="openfhe", preset="openfhe-boot-test",
            force_insecure=True, progress=False)
    s, refresh = r.stats, r.stats["refresh"]
    assert s["levels_per_iteration"]["each later iteration"] > 6
    assert refresh["round_trips"] == 0 and refresh["bytes_to_client"] == 0
    inside = s["run"]["bootstraps_in_iterations"]
    assert inside > 0 and refresh["bootstraps"] >= inside
    assert inside == sum(s["bootstraps_planned"]["in_iteration"])  # the traced plan's count
    assert s["verified"] is True and s["twin_max_abs_diff"] <= s["twin_bound"]
    assert s["twin_max_abs_diff"] < 1e-3  # measured 5.4e-6
    # the released model predicts what the plaintext twin predicts, row for row
    from hetrain.models.base import get_trainer
    m = r.model
    twin_scores = get_trainer(m.model)(**m.config).predict_scores(r.twin, m.preprocessing.transform(X))
    assert np.array_equal(m.predict(X), np.asarray(m.classes)[twin_scores.argmax(1)])
