"""Encrypted inference (protocol/inference.py): case (a) the server's encrypted mlr model scores
queries under the data owner's key; case (b) a plaintext model scores another party's encrypted
queries. Sim for the refusals, SEAL (n8192 / n16384) for both cases' agreement.

Agreement target: every row's encrypted prediction equals the plaintext one; a row may differ only
where the plaintext's two best class scores are within CKKS error of each other (``assert_agree``
checks exactly that, so a close call is allowed and anything else fails)."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from sklearn.datasets import load_iris

from hetrain import ckks
from hetrain.errors import DataError, HetrainUserError
from hetrain.protocol import files, steps
from hetrain.protocol import inference as inf
from hetrain.protocol.bundle_check import ClaimError
from hetrain.protocol.keys import KeyDir
from hetrain.protocol.model import TrainedModel
from hetrain.protocol.model_spec import InferenceError, model_spec
from hetrain.protocol.preprocess import Preprocessor

from agree import assert_agree


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


def _train(root: pathlib.Path, X, y, backend="sim", preset="n8192", seed=1):
    keys = root / "K"
    r = steps.fit(X, y, "mlr", {"iterations": 1}, refresh="none", backend=backend, preset=preset, keys=keys,
                  workdir=root / "JOB", progress=False, seed=seed)
    return KeyDir.open(keys), r.model


def _mlp_model(kind: str, X, y, seed=0) -> TrainedModel:
    """A plaintext mlp model with small random weights (the circuit's correctness, not training's)."""
    rng = np.random.default_rng(seed)
    pre = Preprocessor.fit(X, y)
    d, c = X.shape[1], len(pre.classes)
    if kind == "mlp-diagonal":
        w = {"W1": rng.normal(0, 0.8, (4, d + 1)), "W2": rng.normal(0, 1.0, (c, 5))}
        config = {}
    else:
        w = {"W1": rng.normal(0, 0.5, (6, d)), "b1": rng.normal(0, 0.3, 6), "W2": rng.normal(0, 1.0, (c, 6)),
             "b2": rng.normal(0, 0.3, c)}
        config = {"hidden": [6]}
    return TrainedModel(kind, config, w, pre, "none", {})


# ------------------------------------------------------------------------------ case (b), sim
@pytest.mark.parametrize("kind", ["mlr", "mlp-dvr", "mlp-diagonal"])
def test_plain_model_sim_agrees_with_plaintext(tmp_path, iris, kind):
    X, y = iris
    model = _mlp_model(kind, X, y) if kind != "mlr" else _train(tmp_path, X, y)[1]
    spec = model_spec(model)
    keys = steps.keygen(tmp_path / "QK", backend="sim", preset=ckks.smallest_preset_with_levels(spec["levels"]))
    inf.encrypt_queries(keys, X, spec, tmp_path / "Q")
    stats = inf.infer(tmp_path / "Q", model=model)
    assert stats["engine_has_secret_key"] is False
    s = inf.decrypt_scores(keys, tmp_path / "Q")
    plain = inf.plain_model_scores(model, X)
    assert_agree(s.scores, plain, 1e-6)
    # the folded layers are the model: the same predictions as TrainedModel.predict
    assert np.array_equal(s.predict(), model.predict(X))
    assert np.allclose(s.proba().sum(1), 1.0)


def test_many_queries_span_several_groups(tmp_path, iris):
    X, y = iris
    _, model = _train(tmp_path, X, y)
    Xq = np.tile(X, (30, 1))  # 4,500 rows > 4,096 slots of n8192: two groups
    keys = steps.keygen(tmp_path / "QK", backend="sim", preset="n8192")
    inf.encrypt_queries(keys, Xq, model_spec(model), tmp_path / "Q")
    assert inf.infer(tmp_path / "Q", model=model)["n_input_ciphertexts"] == 2 * 4
    s = inf.decrypt_scores(keys, tmp_path / "Q")
    assert_agree(s.scores, model.predict_scores(Xq), 1e-6)


def test_noise_flooding_keeps_predictions(tmp_path, iris):
    X, y = iris
    _, model = _train(tmp_path, X, y)
    keys = steps.keygen(tmp_path / "QK", backend="sim", preset="n8192")
    inf.encrypt_queries(keys, X, model_spec(model), tmp_path / "Q")
    inf.infer(tmp_path / "Q", model=model, noise_std=1e-3, seed=0)
    s = inf.decrypt_scores(keys, tmp_path / "Q")
    plain = model.predict_scores(X)
    diff = np.abs(s.scores - plain)
    assert 1e-4 < diff.max() <= 1e-2  # the noise is there, and small
    assert_agree(s.scores, plain, 1e-2)


# ------------------------------------------------------------------------------ case (a), sim
def test_encrypted_model_sim(tmp_path, iris):
    X, y = iris
    keys, model = _train(tmp_path, X, y)
    inf.encrypt_queries_for_job(keys, X, tmp_path / "JOB", tmp_path / "Q")
    stats = inf.infer(tmp_path / "Q", job=tmp_path / "JOB")
    assert stats["model_level"] >= 1 and stats["engine_has_secret_key"] is False
    s = inf.decrypt_scores(keys, tmp_path / "Q")
    assert s.twin_max_abs_diff < 1e-6
    assert_agree(s.scores, s.twin_scores, 1e-6)
    # the released model is the rounded twin: the same predictions
    assert np.array_equal(s.predict(), model.predict(X))


def test_encrypted_minibatch_model_sim(tmp_path, iris):
    """The mini-batch model's final encrypted state: scored when a level is left (one step in
    n16384-deep's 9 levels leaves 4); refused clearly when the last step spent the chain (n16384:
    one 4-level step per refresh from level 4 leaves 0)."""
    X, y = iris
    for preset, epochs in (("n16384-deep", 1), ("n16384", 2)):
        root = tmp_path / preset
        steps.fit(X, y, "mlr", {"epochs": epochs, "batch_size": 150}, refresh="client", backend="sim", preset=preset,
                  keys=root / "K", workdir=root / "JOB", progress=False, validation_fraction=0.0, plan=False)
        keys = KeyDir.open(root / "K")
        inf.encrypt_queries_for_job(keys, X, root / "JOB", root / "Q")
        if preset == "n16384":
            with pytest.raises(InferenceError, match="has 0 levels left; inference needs 1"):
                inf.infer(root / "Q", job=root / "JOB")
            continue
        inf.infer(root / "Q", job=root / "JOB")
        s = inf.decrypt_scores(keys, root / "Q")
        assert s.twin_max_abs_diff < 1e-6
        assert_agree(s.scores, s.twin_scores, 1e-6)


# ------------------------------------------------------------------------------ refusals
def test_queries_under_another_key_are_refused(tmp_path, iris):
    X, y = iris
    keys_a, _ = _train(tmp_path / "a", X, y, seed=1)
    keys_b, _ = _train(tmp_path / "b", X, y, seed=2)
    # the data owner's keys must be those of the job
    with pytest.raises(HetrainUserError, match=f"encrypted under key {keys_a.key_id}.*holds key {keys_b.key_id}"):
        inf.encrypt_queries_for_job(keys_b, X, tmp_path / "a" / "JOB", tmp_path / "Q")
    # queries of key b against the model of key a, at the server
    inf.encrypt_queries_for_job(keys_b, X, tmp_path / "b" / "JOB", tmp_path / "Qb")
    with pytest.raises(InferenceError, match=f"under key {keys_b.key_id}.*trained under key {keys_a.key_id}"):
        inf.infer(tmp_path / "Qb", job=tmp_path / "a" / "JOB")
    # scores decrypted with another key directory
    inf.infer(tmp_path / "Qb", job=tmp_path / "b" / "JOB")
    with pytest.raises(InferenceError, match=f"under key {keys_b.key_id}.*holds key {keys_a.key_id}"):
        inf.decrypt_scores(keys_a, tmp_path / "Qb")


def test_model_of_another_spec_is_refused(tmp_path, iris):
    X, y = iris
    _, model = _train(tmp_path, X, y)
    other = _mlp_model("mlp-dvr", X, y)
    keys = steps.keygen(tmp_path / "QK", backend="sim", preset="n16384")
    inf.encrypt_queries(keys, X, model_spec(model), tmp_path / "Q")
    with pytest.raises(InferenceError, match="encrypted for model spec .* this model's spec is"):
        inf.infer(tmp_path / "Q", model=other)
    with pytest.raises(InferenceError, match="score them with --model"):
        inf.infer(tmp_path / "Q", job=tmp_path / "JOB")


def test_keys_with_too_few_levels_are_refused(tmp_path, iris):
    X, y = iris
    keys = steps.keygen(tmp_path / "QK", backend="sim", preset="n8192")
    with pytest.raises(InferenceError, match="needs 5 levels.*n8192 with 2.*--preset n16384"):
        inf.encrypt_queries(keys, X, model_spec(_mlp_model("mlp-diagonal", X, y)), tmp_path / "Q")


def test_encrypted_model_without_levels_is_refused(tmp_path, iris):
    X, y = iris
    keys, _ = _train(tmp_path, X, y)
    job = tmp_path / "JOB"
    engine = ckks.load_engine((job / files.PUBLIC_CONTEXT).read_bytes())
    W = files.read_ciphertext_map(job / files.OUTPUTS, engine, "model")["W"]
    files.write_ciphertext_map(job / files.OUTPUTS, engine, {"W": [engine.drop_to_level(ct, 0) for ct in W]})
    inf.encrypt_queries_for_job(keys, X, job, tmp_path / "Q")
    with pytest.raises(InferenceError, match="has 0 levels left; inference needs 1.*use case"):
        inf.infer(tmp_path / "Q", job=job)


def test_mlp_job_without_levels_is_refused_for_case_a(tmp_path, iris):
    """mlp-dvr: one iteration spends all 9 levels of n16384-deep: the forward is refused with what to do."""
    X, y = iris
    keys = tmp_path / "K"
    steps.fit(X[::5], y[::5], "mlp-dvr", {"iterations": 1, "hidden": [4]}, refresh="none", backend="sim",
              preset="n16384-deep", keys=keys, workdir=tmp_path / "JOB", progress=False)
    inf.encrypt_queries_for_job(KeyDir.open(keys), X, tmp_path / "JOB", tmp_path / "Q")
    with pytest.raises(InferenceError, match="too few levels left for its forward.*use case \\(b\\)"):
        inf.infer(tmp_path / "Q", job=tmp_path / "JOB")


def test_bad_queries_are_refused(tmp_path, iris):
    X, y = iris
    _, model = _train(tmp_path, X, y)
    spec = model_spec(model)
    keys = steps.keygen(tmp_path / "QK", backend="sim", preset="n8192")
    with pytest.raises(DataError, match="the queries have 3 features; the model takes 4"):
        inf.encrypt_queries(keys, X[:, :3], spec, tmp_path / "Q")
    bad = dict(spec, n_features=5)
    with pytest.raises(InferenceError, match="spec_id does not match"):
        inf.encrypt_queries(keys, X, bad, tmp_path / "Q")
    X2 = X.copy()
    X2[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        inf.encrypt_queries(keys, X2, spec, tmp_path / "Q")


def test_tampered_query_bundle_is_refused_before_use(tmp_path, iris):
    X, y = iris
    _, model = _train(tmp_path, X, y)
    keys = steps.keygen(tmp_path / "QK", backend="sim", preset="n8192")
    q = tmp_path / "Q"
    inf.encrypt_queries(keys, X, model_spec(model), q)
    job = json.loads((q / files.JOB).read_text())
    (q / files.JOB).write_text(json.dumps(dict(job, n_queries=10 ** 6)))
    with pytest.raises(ClaimError, match="holds 4 ciphertexts; 1000000 queries in this packing make 980"):
        inf.infer(q, model=model)
    with pytest.raises(ClaimError, match="not a query bundle"):
        inf.infer(tmp_path / "JOB", model=model)  # a training bundle


# ------------------------------------------------------------------------------ real CKKS (SEAL)
def test_seal_both_cases_mlr(tmp_path, iris):
    X, y = iris
    keys, model = _train(tmp_path, X, y, backend="seal", preset="n8192")
    inf.encrypt_queries_for_job(keys, X, tmp_path / "JOB", tmp_path / "QA")
    inf.infer(tmp_path / "QA", job=tmp_path / "JOB")
    a = inf.decrypt_scores(keys, tmp_path / "QA")
    assert_agree(a.scores, a.twin_scores, 1e-3)
    qkeys = steps.keygen(tmp_path / "QK", backend="seal", preset="n8192")
    inf.encrypt_queries(qkeys, X, model_spec(model), tmp_path / "QB")
    inf.infer(tmp_path / "QB", model=model)
    b = inf.decrypt_scores(qkeys, tmp_path / "QB")
    assert_agree(b.scores, model.predict_scores(X), 1e-3)


def test_seal_plain_mlp_diagonal(tmp_path, iris):
    X, y = iris
    model = _mlp_model("mlp-diagonal", X, y)
    spec = model_spec(model)
    assert spec["levels"] == 5 and spec["rotations"] == []
    keys = steps.keygen(tmp_path / "QK", backend="seal", preset="n16384")
    inf.encrypt_queries(keys, X, spec, tmp_path / "Q")
    inf.infer(tmp_path / "Q", model=model)
    s = inf.decrypt_scores(keys, tmp_path / "Q")
    assert_agree(s.scores, inf.plain_model_scores(model, X), 1e-3)
