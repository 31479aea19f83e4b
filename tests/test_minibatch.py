"""Mini-batch MLR with refreshed state: twin agreement (sim and SEAL), epochs over more rows than
one packing holds, client-side validation/early stopping, and clear errors on bad input."""
import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris

from hetrain.data import load_builtin
from hetrain.errors import DataError, HetrainUserError
from hetrain.models.base import DepthPlanError
from hetrain.models.mlr_minibatch import MiniBatchMLR
from hetrain.protocol import files, fit
from hetrain.protocol.client_jobs import ClientJob
from hetrain.protocol.keys import KeyDir
from hetrain.protocol.refresh import MLRValidation, twin_long


def _fit_held_out(tmp_path, X, y, n_val, cfg, **kw):
    """protocol.fit of mini-batch mlr with ``cfg`` as given (no planner), the client holding out
    ``n_val`` rows (its stratified split) for validation; keys and bundle kept under ``tmp_path``."""
    return fit(X, y, "mlr", cfg, backend="sim", preset="n16384", progress=False, plan=False,
               validation_fraction=n_val / len(y), keys=tmp_path / "keys", workdir=tmp_path / "job", **kw)


def _last_weights(tmp_path, r) -> np.ndarray:
    """The decrypted final state of the server's outputs (before the client picks its best epoch)."""
    keys = KeyDir.open(tmp_path / "keys")
    job = ClientJob.load(keys.job_dir(r.stats["job_id"]))
    engine = keys.job_engine(())
    outputs = files.read_ciphertext_map(tmp_path / "job" / files.OUTPUTS, engine, "server outputs")
    return job.trainer.client_decrypt(engine, outputs, {"d": job.Xp.shape[1], "c": job.Y.shape[1]})["W"]


def test_digits_all_rows_in_batches_sim_matches_twin_and_learns(tmp_path):
    X, y = load_digits(return_X_y=True)  # 1,797 rows - 300 held out: 6 batches of 256 (one packing holds 256)
    cfg = {"epochs": 2, "batch_size": 256, "sigmoid": "deg3:16", "learning_rate": 0.5, "patience": 0}
    r = _fit_held_out(tmp_path, X, y, 300, cfg, refresh="client")
    s = r.stats
    assert s["steps"] == 2 * 6 and not s["run"]["stopped_early"]
    # sim without noise: the encrypted arithmetic is the twin's, up to float64 summation order
    assert s["twin_max_abs_diff"] < 1e-9
    np.testing.assert_allclose(_last_weights(tmp_path, r), s["twin_weights"], atol=1e-9)
    # one step per refresh at n16384 (7 levels, 4 per step): 11 refreshes for 12 steps, one evaluation
    # (epoch 1, merged with a refresh) and the final one on download
    assert s["refreshes"] == 11 and s["round_trips"] == 11
    epochs = [h for h in s["history"] if h["kind"] == "epoch"]
    assert [h["epoch"] for h in epochs] == [1, 2]
    assert epochs[-1]["val_accuracy"] > 0.8  # twin: 0.853 after these 12 steps (sklearn to convergence ≈0.96)


def test_twin_is_plain_gradient_ascent_with_the_batch_preconditioner():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(10, 3)), np.eye(2)[rng.integers(0, 2, 10)]
    t = MiniBatchMLR(batch_size=4, learning_rate=0.5)
    W = twin_long(t, X, Y, 3)  # batches rows 0-3, 4-7, 8-9
    ref = np.zeros((2, 4))
    for rows in (np.arange(4), np.arange(4, 8), np.arange(8, 10)):
        Xb = np.c_[np.ones(len(rows)), X[rows]]
        B = 1 / (1e-10 + 0.25 * (np.abs(Xb) * np.abs(Xb).sum(1, keepdims=True)).sum(0))
        ref = ref + 0.5 * B * ((Y[rows] - t.approx(Xb @ ref.T)).T @ Xb)
    np.testing.assert_allclose(W, ref, rtol=1e-12)


def test_early_stopping_keeps_the_best_epoch():
    from hetrain import ckks
    eng = ckks.create_engine("sim", "n8192")
    t = MiniBatchMLR(batch_size=4, patience=2)
    Xv, yv = np.array([[1.0], [-1.0]]), np.array([0, 1])
    client = MLRValidation(t, Xv, yv, n_features=1, n_classes=2, slots=eng.slots)
    good = np.array([[0.0, 1.0], [0.0, -1.0]])  # predicts both rows right
    bad = -good
    pk = t.packing(1, 2, eng.slots)
    vecs = lambda W: {"W": pk.pack_weights(W)}  # noqa: E731  (what the client decrypts)
    assert client.evaluate(vecs(good), 1, 1) is False
    assert client.evaluate(vecs(bad), 2, 2) is False   # 1 epoch without improvement
    assert client.evaluate(vecs(bad), 3, 3) is True    # patience 2 reached: stop
    np.testing.assert_allclose(client.final_weights(bad), good, atol=1e-12)


def test_early_stop_ends_training_loop(tmp_path):
    X, y = load_iris(return_X_y=True)
    # a tiny step barely moves the accuracy: patience 1 stops after the 2nd or 3rd epoch, not the 20th
    cfg = {"epochs": 20, "batch_size": 128, "learning_rate": 1e-6, "patience": 1}
    r = _fit_held_out(tmp_path, X, y, 30, cfg, refresh="client")
    assert r.stats["run"]["stopped_early"] and r.stats["steps"] < 20
    assert r.stats["stop_reason"] == "early stopping" and not r.partial


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(HetrainUserError, match="unknown mlr-minibatch option"):
        MiniBatchMLR(iterations=3)
    with pytest.raises(HetrainUserError, match="momentum must be 'none' or a number"):
        MiniBatchMLR(momentum="nesterov")
    with pytest.raises(HetrainUserError, match="batch_size"):
        MiniBatchMLR(batch_size=0)
    t = MiniBatchMLR()
    with pytest.raises(DataError, match="NaN"):
        t.plain_batches(np.array([[np.nan, 1.0]]), np.array([[1.0, 0.0]]), 8192)
    with pytest.raises(DataError, match="n × d"):
        t.plain_batches(np.ones((3, 2)), np.ones((2, 2)), 8192)
    with pytest.raises(DataError, match="outside"):  # sigmoid inputs beyond [-8, 8]
        t.twin_step(np.full((2, 3), 10.0), np.ones((4, 2)), np.eye(2)[[0, 1, 0, 1]], np.arange(4))


def test_depth_errors_before_any_work(tmp_path):
    X, y = load_iris(return_X_y=True)
    keys = tmp_path / "keys"
    # mini-batch epochs without refresh: "mlr" with refresh none is the full-batch trainer (no epochs)
    with pytest.raises(HetrainUserError, match="epochs"):
        fit(X, y, "mlr", {"epochs": 3}, backend="sim", preset="n16384", refresh="none", plan=False, keys=keys,
            progress=False)
    with pytest.raises(DepthPlanError, match="cannot bootstrap: use refresh client"):
        fit(X, y, "mlr", {"epochs": 3}, backend="seal", preset="n8192", refresh="bootstrap", plan=False, keys=keys,
            progress=False)
    with pytest.raises(DepthPlanError, match="one step needs 4 levels"):  # refused before keys are used
        fit(X, y, "mlr", {"epochs": 1}, backend="sim", preset="n8192", refresh="client", plan=False, keys=keys,
            progress=False)
    assert not keys.exists()  # every refusal came before any key was made


def test_batches_are_encrypted_no_higher_than_a_refresh_cycle_uses():
    """n16384 (7 levels, 4 per step): one step per cycle, so X sits at 4 and X̃, Ym at 1."""
    from hetrain import ckks

    tr = MiniBatchMLR(epochs=1, batch_size=8)
    assert tr.data_levels(7) == (4, 1) and tr.data_levels(19) == (16, 13) and tr.data_levels(9) == (8, 5)
    eng = ckks.create_engine("sim", "n16384")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(8, 5)), np.eye(3)[rng.integers(0, 3, 8)]
    (lazy,) = tr.encrypt_batches(eng, X, Y)
    batch = type(lazy)(*(list(cts) for cts in (lazy.X, lazy.Xt, lazy.Ym)))
    assert {c.level for c in batch.X} == {4} and {c.level for c in batch.Xt + batch.Ym} == {1}


def test_the_configs_epochs_caps_the_planned_run_and_may_not_contradict_max_epochs(tmp_path):
    """fit(config={"epochs": E}) runs at most E epochs (the planner used to replace it with its own
    early-stopped count); the same number given twice, differently, is refused."""
    from hetrain.protocol import fit

    X, y = load_builtin("iris")
    r = fit(X, y, "mlr", {"epochs": 2}, refresh="client", backend="sim", progress=False, keys=tmp_path / "K",
            workdir=tmp_path / "JOB")
    assert sum(1 for h in r.stats["history"] if h.get("kind") == "epoch") <= 2
    with pytest.raises(HetrainUserError, match=r"epochs is given twice \(2 in the config, 3 as max_epochs\)"):
        fit(X, y, "mlr", {"epochs": 2}, refresh="client", backend="sim", progress=False, max_epochs=3,
            keys=tmp_path / "K2", workdir=tmp_path / "JOB2")
