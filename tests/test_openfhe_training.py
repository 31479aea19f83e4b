"""Training without the data owner on OpenFHE: mlp-dvr and mlp-diagonal with ``refresh="bootstrap"``
(Python 3.10: skipped where openfhe is not importable).

The rings are the INSECURE test ring openfhe-boot-test-deep (N=2048, 10 levels after each bootstrap:
one mlp iteration with Nesterov momentum). Each training test costs one refresh (8 and 15 bootstraps, ~1-2 s
each with OMP_WAIT_POLICY=PASSIVE on 2 cores): ~20-40 s, marked slow.
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
    ("mlp-dvr", 150, 8, 2, 8),        # W1, b1, W2, b2 and their Nesterov look-aheads: 8 ciphertexts, one refresh
    ("mlp-diagonal", 15, 4, 3, 15),   # two iterations per chain, then one refresh of every diagonal
])
def test_mlp_trains_with_bootstrap_and_no_client_round_trip(model, n, hidden, iterations, bootstraps):
    X, y = _iris(n)
    r = fit(X, y, model, {"hidden": [hidden], "iterations": iterations}, refresh="bootstrap", backend="openfhe",
            preset="openfhe-boot-test-deep", force_insecure=True, progress=False)
    s, refresh = r.stats, r.stats["refresh"]
    assert refresh["mode"] == "bootstrap"
    assert refresh["round_trips"] == 0 and refresh["refreshes"] == 0 and refresh["bytes_to_client"] == 0
    assert refresh["bootstraps"] == bootstraps  # the server refreshed the state itself, exactly once
    # the client's twin check (protocol/twin_bound.py): the decrypted weights match the plaintext twin
    assert s["twin_max_abs_diff"] <= s["twin_bound"]
    assert s["twin_max_abs_diff"] < 1e-4  # measured 9e-7 (dvr) and 2.8e-6 (diagonal)
    assert s["server_engine_has_secret_key"] is False

