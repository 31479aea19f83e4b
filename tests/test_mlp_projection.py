"""mlp-dvr on wide inputs (issue 11, MNIST pixels): the planner's principal-component projection.

On 784 raw MNIST pixels the defaults reached 0.69 test accuracy (scikit-learn's MLP: 0.85): each 128-row
step costs ~10.9 s under SEAL (49 input blocks), so the budget held 38 steps, and with hundreds of correlated
columns every raw candidate left its interval's 90 % margin within 20-110 steps. The planner now also
rehearses the candidates on the whitened leading principal components (``projection``, client side only).
The stand-in below has the same traits at a size the twin plans in seconds: 288 features, 240 of them
correlated (rank-8 signal + noise) and 48 near-constant (a rare 1).
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from hetrain import ckks
from hetrain.errors import DataError
from hetrain.models import mlp_dvr as mlp
from hetrain.models.mlp_dvr import MLPConfigError, MLPTrainer
from hetrain.models.mlp_defaults import MARGIN
from hetrain.protocol.preprocess import Preprocessor

GIVEN = {"hidden": [16], "learning_rate": 8.0, "sigmoid_layers": ["deg3:32", "deg3:16"], "label_smoothing": 0.1,
         "batch_size": None}  # fixed so that only the inputs (raw / projected) are planned: fast


def wide(n, seed=0, d_dense=240, d_rare=48, c=4, r=8):
    rng = np.random.default_rng(seed)
    A = np.random.default_rng(99).normal(size=(r, d_dense))
    M = np.random.default_rng(98).normal(size=(c, r)) * 0.9
    y = rng.integers(0, c, n)
    dense = (M[y] + rng.normal(size=(n, r))) @ A + 0.3 * rng.normal(size=(n, d_dense))
    rare = (rng.random((n, d_rare)) < 0.004).astype(float)
    return np.hstack([dense, rare]), y


def standardised(n=480, n_train=320):
    X, y = wide(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare columns may be constant in the training rows
        pre = Preprocessor.fit(X[:n_train], y[:n_train])
    return pre.transform(X[:n_train]), pre.one_hot(y[:n_train]), pre.transform(X[n_train:]), y[n_train:]


def test_planner_projects_wide_inputs_and_beats_the_raw_features(monkeypatch):
    X, Y, Xt, yt = standardised()
    slots = ckks.get_params("n16384-deep").slots
    cfg, rep = mlp.plan_defaults(X, Y, GIVEN, refresh=True)
    T = MLPTrainer(**cfg)
    k = cfg["components"]
    assert T.config["projection"] is not None and k == len(cfg["projection"]) and k % 16 == 0 and k <= 8 * 16
    assert T.layout(*X.shape, 4, slots).feature_blocks == k // 16 < 288 // 16
    W = T.twin(X, Y)
    acc = float(np.mean(T.predict_scores(W, Xt).argmax(1) == yt))
    # the cause, back: the planner restricted to the raw features (as before) stalls inside the margin
    monkeypatch.setattr(mlp, "PCA_MIN_FEATURES", 10**9)
    raw_cfg, raw_rep = mlp.plan_defaults(X, Y, GIVEN, refresh=True)
    R = MLPTrainer(**raw_cfg)
    assert raw_cfg.get("projection") is None and R.layout(*X.shape, 4, slots).feature_blocks == 18
    raw_acc = float(np.mean(R.predict_scores(R.twin(X, Y), Xt).argmax(1) == yt))
    # measured: projected 67 iterations (the budget), 0.794; raw 4 iterations (margin), 0.744
    assert cfg["iterations"] >= 5 * raw_cfg["iterations"]
    assert mlp.estimated_seconds_per_iteration(T, *X.shape, 4, slots) < 0.6 * mlp.estimated_seconds_per_iteration(
        R, *X.shape, 4, slots)
    assert acc >= raw_acc + 0.03 and acc >= 0.77
    assert rep["reach"] <= MARGIN


def test_narrow_inputs_are_not_projected():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(96, 64)), np.arange(96) % 3
    cfg, _ = mlp.plan_defaults(X, np.eye(3)[y], {**GIVEN, "iterations": 3}, refresh=True)
    assert cfg.get("projection") is None and MLPTrainer(**cfg).config["components"] is None


def test_principal_projection_whitens_and_is_deterministic():
    X, _, _, _ = standardised()
    Q = mlp.principal_projection(X, multiple=16)
    assert Q.shape[1] == 288 and Q.shape[0] % 16 == 0
    Z = X @ Q.T
    assert np.allclose(Z.T @ Z / len(Z), np.eye(len(Q)), atol=1e-8)
    assert np.array_equal(Q, mlp.principal_projection(X.copy(), multiple=16))
    # never past the rank (fewer rows than features), whatever is asked
    assert mlp.principal_projection(X[:20], components=64).shape[0] <= 20


def test_projection_stays_with_the_client_and_the_run_matches_the_twin(tmp_path):
    """The server's config has the width (components) but not the matrix (derived from the client's rows); the
    server plans and trains from it; the decrypted weights equal the twin's; the model file keeps Q and predicts."""
    X, Y, Xt, yt = standardised(n=200, n_train=160)
    Q = mlp.principal_projection(X, multiple=16)
    T = MLPTrainer(hidden=[8], iterations=2, momentum="none", learning_rate=4.0, label_smoothing=0.1,
                   sigmoid_layers=["deg3:32", "deg3:16"], projection=Q, input_clip=3.0)
    n, d = X.shape
    p = ckks.get_params("n16384-deep")
    plan = T.plan(n, d, 4, p)
    eng = ckks.create_engine("sim", "n16384-deep", rotations=plan.rotation_steps, seed=0)
    inputs, job = T.client_encrypt(eng, X, Y, refresh=True)
    job["data_shape"] = [n, d, 4]
    assert job["config"]["projection"] is None and job["config"]["components"] == len(Q)
    lay = job["layout"]  # hidden 8: a P = 8 grid, 16 components = 2 input blocks (288 raw features: 36)
    assert job["sizes"][0] == len(Q) and lay["feature_blocks"] == -(-len(Q) // lay["P"]) == 2
    assert len(inputs["X"]) == lay["groups"] * lay["feature_blocks"]
    assert "projection" not in json.dumps(job["config"]).replace('"projection": null', "")
    server = MLPTrainer.from_job(json.loads(json.dumps(job)))
    assert server.plan(n, d, 4, p).rotation_steps == plan.rotation_steps
    out = server.server_train(eng, inputs, job,  # client refresh: decrypt and re-encrypt at the top level
                              refresh=lambda state, step=None: {k: [eng.encrypt(eng.decrypt(ct)) for ct in v] for k, v in state.items()})
    W = T.client_decrypt(eng, out, job)
    twin = T.twin(X, Y)
    assert max(float(np.max(np.abs(W[k] - twin[k]))) for k in twin) < 1e-8
    assert T.weight_shapes(d, 4)["W1"] == (8, len(Q))
    with pytest.raises(DataError, match="projection"):
        server.predict_scores(W, Xt)  # the server's copy cannot project rows
    # the client's config survives JSON (job record, model file) exactly
    again = MLPTrainer(**json.loads(json.dumps(T.config)))
    assert np.array_equal(again.predict_scores(W, Xt), T.predict_scores(W, Xt))


def test_projection_config_is_checked():
    with pytest.raises(MLPConfigError, match="projection"):
        MLPTrainer(projection=[[1.0, np.nan]])
    with pytest.raises(MLPConfigError, match="differs"):
        MLPTrainer(projection=np.eye(3)[:2], components=3)
    with pytest.raises(MLPConfigError, match="components"):
        MLPTrainer(components=0)
    assert MLPTrainer(projection=np.eye(3)[:2]).config["components"] == 2


def test_given_components_or_projection_are_kept():
    X, Y, _, _ = standardised(n=200, n_train=160)
    fixed = {**GIVEN, "iterations": 3}
    cfg, _ = mlp.plan_defaults(X, Y, {**fixed, "components": 8}, refresh=True)
    assert len(cfg["projection"]) == 8 == MLPTrainer(**cfg).config["components"]
    Q = mlp.principal_projection(X, components=5)
    cfg, _ = mlp.plan_defaults(X, Y, {**fixed, "projection": Q.tolist()}, refresh=True)
    assert np.array_equal(np.asarray(cfg["projection"]), Q)
