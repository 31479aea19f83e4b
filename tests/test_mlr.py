"""Multiclass logistic regression: schedule folding, twin, depth plan, sim training, bad input."""
import numpy as np
import pytest

from hetrain import ckks
from hetrain.circuits.approx import get_sigmoid
from hetrain.errors import DataError, HetrainUserError
from hetrain.models.base import DepthPlanError, get_trainer
from hetrain.models.base import choose_preset
from hetrain.models.mlr import MLRTrainer
from hetrain.models.mlr_twin import Schedule, add_bias, reference_ascent, twin


def _blobs(n=60, d=12, c=3, seed=0, spread=1.5):
    """Standardised Gaussian blobs: a problem logistic regression can learn in a few iterations."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    centres = rng.normal(size=(c, d)) * spread
    X = centres[y] + rng.normal(size=(n, d))
    X = (X - X.mean(0)) / X.std(0)
    return X, np.eye(c)[y], y


def _train_sim(trainer, X, Y, preset="n16384-deep", noise=0.0):
    plan = trainer.plan(*X.shape, Y.shape[1], preset)
    eng = ckks.create_engine("sim", preset, rotations=plan.rotation_steps, noise=noise, seed=1)
    inputs, job = trainer.client_encrypt(eng, X, Y)
    server = get_trainer(job["model"]).from_job(job)
    out = server.server_train(eng, inputs, job)
    return trainer.client_decrypt(eng, out, job)["W"], out, eng


@pytest.mark.parametrize("momentum", ["none", "nesterov"])
@pytest.mark.parametrize("T", [1, 2, 5])
def test_folded_schedule_equals_textbook_recursion(momentum, T):
    X, Y, _ = _blobs()
    approx = get_sigmoid("published")
    got = twin(X, Y, approx, Schedule.build(T, len(X), 4.0, momentum), check=False)["W"]
    ref = reference_ascent(X, Y, approx, T, 4.0, momentum)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)  # same maths, different float order


@pytest.mark.parametrize("layout", ["blocked", "volley-revolver"])
def test_sim_training_equals_twin_and_learns(layout):
    X, Y, y = _blobs()
    tr = MLRTrainer(iterations=3, layout=layout)
    W, _, _ = _train_sim(tr, X, Y)
    tw = tr.twin(X, Y)["W"]
    np.testing.assert_allclose(W, tw, atol=1e-12)  # sim without noise: only float reordering
    assert (tr.predict_scores({"W": W}, X).argmax(1) == y).mean() > 0.9


def test_sim_training_with_ckks_sized_noise_stays_near_twin():
    X, Y, _ = _blobs(seed=2)
    tr = MLRTrainer(iterations=3, momentum="nesterov", sigmoid="deg3:8")
    W, _, _ = _train_sim(tr, X, Y, noise="ckks")
    # noise 1e-7 per operation, amplified by sums of ≤ 64 terms and the ×4 step: ≪ 1e-4
    assert np.abs(W - tr.twin(X, Y)["W"]).max() < 1e-4


@pytest.mark.parametrize("T", [1, 2, 3])
def test_planned_levels_equal_levels_consumed(T):
    X, Y, _ = _blobs(n=40, d=7)
    tr = MLRTrainer(iterations=T)
    plan = tr.plan(40, 7, 3, "n16384-deep")
    top, out_level = _levels(tr, X, Y)
    assert plan.levels_needed == 1 + 4 * (T - 1)  # traced: the first gradient, then forward + sigmoid + gradient
    # the client encrypts one level above what the schedule consumes when the preset has it (the level
    # that scoring queries against the encrypted model needs), and the schedule consumes the rest
    spare = min(1, ckks.get_params("n16384-deep").levels - plan.levels_needed)
    assert (top, out_level) == (plan.levels_needed + spare, spare)


def _levels(trainer, X, Y, preset="n16384-deep"):
    """(level of the uploaded labels, level of the trained weights) under the sim."""
    plan = trainer.plan(*X.shape, Y.shape[1], preset)
    eng = ckks.create_engine("sim", preset, rotations=plan.rotation_steps)
    inputs, job = trainer.client_encrypt(eng, X, Y)
    out = get_trainer(job["model"]).from_job(job).server_train(eng, inputs, job)
    return inputs["Y"][0].level, out["W"][0].level


def test_one_more_iteration_consumes_exactly_the_planned_levels_per_iteration():
    X, Y, _ = _blobs(n=40, d=7)
    per_iter = MLRTrainer().plan(40, 7, 3, "n32768").levels_per_later_iteration
    consumed = [top - out for top, out in (_levels(MLRTrainer(iterations=T, sigmoid="deg5:8"), X, Y, "n32768")
                                           for T in (2, 3))]
    assert consumed[1] - consumed[0] == 2 + 3 == per_iter + 1  # degree 5 costs one level more than degree 3
    assert MLRTrainer(sigmoid="deg5:8").plan(40, 7, 3, "n32768").levels_per_later_iteration == consumed[1] - consumed[0]


def test_depth_that_does_not_fit_is_refused_before_any_work():
    tr = MLRTrainer(iterations=4)
    plan = tr.plan(128, 400, 10, "n16384-deep")
    assert not plan.fits and plan.iterations_that_fit == 3
    with pytest.raises(DepthPlanError, match=r"3 iteration\(s\) fit.*'n32768'"):
        plan.check(ckks.get_params("n16384-deep"))
    eng = ckks.create_engine("sim", "n16384-deep", rotations=plan.rotation_steps)
    X, Y, _ = _blobs(n=20, d=5)
    with pytest.raises(DepthPlanError):
        tr.client_encrypt(eng, X, Y)
    assert MLRTrainer(iterations=5).plan(128, 400, 10, "n32768").fits
    assert MLRTrainer(iterations=6).plan(128, 400, 10, "n32768").iterations_that_fit == 5


def test_recommended_preset():
    assert choose_preset(MLRTrainer(iterations=2), 128, 400, 10).name == "n16384"
    assert choose_preset(MLRTrainer(iterations=3), 128, 400, 10).name == "n16384-deep"
    assert choose_preset(MLRTrainer(iterations=5), 128, 400, 10).name == "n32768"
    largest = choose_preset(MLRTrainer(iterations=9), 128, 400, 10)  # none fits: the largest, whose check explains
    with pytest.raises(DepthPlanError, match=r"5 iteration\(s\) fit"):
        MLRTrainer(iterations=9).plan(128, 400, 10, largest).check(largest)


def test_sigmoid_inputs_outside_the_interval_are_refused_by_the_client():
    X, Y, _ = _blobs()
    eng = ckks.create_engine("sim", "n16384-deep")
    tr = MLRTrainer(iterations=3, learning_rate=200.0)  # overshoots: |z| ≫ 8 at iteration 2
    with pytest.raises(DataError, match="outside the sigmoid approximation's interval"):
        tr.client_encrypt(eng, X, Y)
    # a wider approximation accepts the same inputs
    assert MLRTrainer(iterations=3, learning_rate=200.0, sigmoid="deg3:600").twin(X, Y)["z_max"] > 8


def test_bad_inputs_and_config_are_clear_errors():
    X, Y, _ = _blobs(n=20, d=5)
    tr = MLRTrainer(iterations=2)
    bad_X = X.copy()
    bad_X[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        tr.twin(bad_X, Y)
    with pytest.raises(DataError, match="one-hot"):
        tr.twin(X, Y * 2)
    with pytest.raises(DataError, match="same n"):
        tr.twin(X, Y[:-1])
    with pytest.raises(DataError, match="expects 5 features"):
        tr.predict_scores(tr.twin(X, Y), X[:, :4])
    with pytest.raises(HetrainUserError, match="unknown mlr option"):
        MLRTrainer(hidden=[4])
    for cfg in ({"momentum": "adam"}, {"layout": "diagonal"}, {"sigmoid": "tanh"}, {"learning_rate": -1},
                {"iterations": 0}):
        with pytest.raises(HetrainUserError):
            MLRTrainer(**cfg)


def test_job_carries_no_data_and_is_enough_for_the_server():
    X, Y, _ = _blobs(n=20, d=5)
    eng = ckks.create_engine("sim", "n16384")
    tr = MLRTrainer(iterations=2)
    inputs, job = tr.client_encrypt(eng, X, Y)
    assert set(inputs) == {"X", "Xt", "Y"}
    assert job["config"] == tr.config and job["model"] == "mlr"
    flat = repr(job)
    assert str(round(float(X[0, 0]), 6)) not in flat
    assert isinstance(get_trainer("mlr").from_job(job), MLRTrainer)


def test_twin_on_seed_like_data_predicts_with_bias_column():
    X, Y, y = _blobs(n=30, d=4)
    W = MLRTrainer(iterations=1).twin(X, Y)["W"]
    assert W.shape == (3, 5)
    np.testing.assert_allclose(MLRTrainer(iterations=1).predict_scores({"W": W}, X), add_bias(X) @ W.T)
