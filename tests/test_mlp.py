"""mlp-dvr on the (INSECURE) sim backend: exact agreement with the twin, layout, depth plan, bad inputs.

The sim backend without noise computes the encrypted circuit in float64, so the decrypted
network must equal the twin up to float64 rounding (1e-9 is ~10^6 ulps of headroom over
a few hundred summed products); with CKKS-sized noise see test_mlp_seal.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from hetrain import ckks
from hetrain.circuits import dvr
from hetrain.circuits.errors import LayoutError
from hetrain.errors import DataError, HetrainUserError
from hetrain.models import mlp_dvr_twin
from hetrain.models.base import DepthPlanError, get_trainer, resolve_model
from hetrain.models.mlp_dvr import MLPConfigError, MLPTrainer

EXACT = 1e-9


def data(n=20, d=8, c=3, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.arange(n) % c
    return X, np.eye(c)[y]


def run_sim(trainer, X, Y, preset, refresh=None, noise=0.0):
    n, d = X.shape
    plan = trainer.plan(n, d, Y.shape[1], ckks.get_params(preset))
    eng = ckks.create_engine("sim", preset, rotations=plan.rotation_steps, noise=noise, seed=0)
    inputs, job = trainer.client_encrypt(eng, X, Y, refresh=refresh is not None)
    job["data_shape"] = [n, d, Y.shape[1]]
    out = trainer.server_train(eng, inputs, job, refresh=refresh(eng) if refresh else None)
    return eng, out, trainer.client_decrypt(eng, out, job), plan


def max_diff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in b)


def test_registered_and_resolved():
    assert get_trainer("mlp-dvr") is MLPTrainer
    assert resolve_model("mlp", "auto", 400) == "mlp-dvr"


@pytest.mark.parametrize("hidden,preset", [([4], "n16384-deep"), ([4, 4], "n32768"), ([6, 5], "n32768")])
def test_sim_matches_twin(hidden, preset):
    X, Y = data()
    tr = MLPTrainer(hidden=hidden, iterations=1, momentum="none")
    eng, out, W, plan = run_sim(tr, X, Y, preset)
    twin = tr.twin(X, Y)
    assert max_diff(W, twin) < EXACT
    # training moved the weights (the comparison is not trivially between two initial states)
    assert max_diff(twin, tr.initial_weights(8, 3)) > 1e-2
    # the plan's level accounting is the circuit's
    assert eng.max_level - min(ct.level for v in out.values() for ct in v) == plan.levels_needed


def test_several_groups_padding_and_feature_blocks():
    # P = 16, at most 64 samples per ciphertext: 100 samples -> 2 groups, the second one padded;
    # 37 features -> 3 feature blocks, the last one padded
    X, Y = data(n=100, d=37, c=5)
    tr = MLPTrainer(hidden=[16, 9], iterations=1, momentum="none")
    lay = tr.layout(100, 37, 5, ckks.get_params("n32768").slots)
    assert (lay.P, lay.groups, lay.feature_blocks) == (16, 2, 3)
    _, _, W, _ = run_sim(tr, X, Y, "n32768")
    assert max_diff(W, tr.twin(X, Y)) < EXACT


def client_refresh(eng):
    """Client-aided refresh: decrypt and re-encrypt at the top level (what protocol/refresh does)."""
    calls = []

    def refresh(state, step=None):
        calls.append(1)
        return {k: [eng.encrypt(eng.decrypt(ct)) for ct in v] for k, v in state.items()}
    refresh.calls = calls
    return refresh


def test_refresh_hook_and_nesterov_over_three_iterations():
    X, Y = data()
    # n32768: the first iteration takes 14 levels, a later one 15 (momentum): one fits per chain
    tr = MLPTrainer(hidden=[4, 4], iterations=3, momentum="nesterov", learning_rate=1.0)
    p = ckks.get_params("n32768")
    plan = tr.plan(20, 8, 3, p)
    assert plan.iterations_that_fit == 1 and not plan.fits
    with pytest.raises(DepthPlanError, match="1 iteration"):
        plan.check(p)
    eng = ckks.create_engine("sim", p, rotations=plan.rotation_steps)
    tr_one = MLPTrainer(hidden=[4, 4], iterations=1)
    inputs, job = tr_one.client_encrypt(eng, X, Y)  # the client's plan check passes for one iteration
    job["data_shape"] = [20, 8, 3]
    with pytest.raises(DepthPlanError, match="refresh"):
        tr.server_train(eng, inputs, job)
    refresh = client_refresh(eng)
    out = tr.server_train(eng, inputs, job, refresh=refresh)
    assert len(refresh.calls) == 2
    W = tr.client_decrypt(eng, out, job)
    assert max_diff(W, tr.twin(X, Y)) < EXACT
    # momentum changed the result (else this test would not test it)
    assert max_diff(W, MLPTrainer(hidden=[4, 4], iterations=3, momentum="none", learning_rate=1.0).twin(X, Y)) > 1e-3


def test_iteration_that_cannot_fit_even_after_refresh():
    X, Y = data()
    tr = MLPTrainer(hidden=[4], iterations=2, momentum="nesterov")  # 9 + 10 levels, n16384-deep has 9
    p = ckks.get_params("n16384-deep")
    assert tr.plan(20, 8, 3, p).iterations_that_fit == 1
    eng = ckks.create_engine("sim", p, rotations=tr.plan(20, 8, 3, p).rotation_steps)
    inputs, job = MLPTrainer(hidden=[4], iterations=1).client_encrypt(eng, X, Y)
    job["data_shape"] = [20, 8, 3]
    with pytest.raises(DepthPlanError, match="even in refreshed"):
        tr.server_train(eng, inputs, job, refresh=client_refresh(eng))


def test_sim_with_ckks_noise_stays_close():
    # CKKS-sized noise (1e-7 per operation): the backward pass multiplies it by weights and
    # derivatives (< 1) and sums ~10 terms per output, so 1e-5 leaves a wide margin.
    X, Y = data()
    tr = MLPTrainer(hidden=[4, 4], iterations=1)
    _, _, W, _ = run_sim(tr, X, Y, "n32768", noise="ckks")
    assert max_diff(W, tr.twin(X, Y)) < 1e-5


def test_plan_levels_and_rotation_keys():
    tr = MLPTrainer(hidden=[32, 16], iterations=1)
    p = ckks.get_params("n32768")
    plan = tr.plan(128, 400, 10, p)
    assert plan.fits and plan.levels_needed == 14 and plan.iterations_that_fit == 1
    # traced: forward 3 x (1 + 2), backward 2 x 2, gradient 1; Nesterov's product from the second iteration
    assert plan.levels_per_iteration == {"iteration 1": 14, "each later iteration": 14}
    assert MLPTrainer(hidden=[32, 16], iterations=2).plan(128, 400, 10, p).levels_per_iteration == {
        "iteration 1": 14, "each later iteration": 15}
    # powers of two below 16384 plus the two replication shifts: 16 Galois keys
    assert len(plan.rotation_steps) == 16
    with pytest.raises(DepthPlanError, match="1 iteration"):
        MLPTrainer(hidden=[32, 16], iterations=2).plan(128, 400, 10, p).check(p)
    with pytest.raises(DepthPlanError, match="0 iteration"):
        tr.plan(128, 400, 10, ckks.get_params("n16384")).check(ckks.get_params("n16384"))


def test_layout_roundtrip():
    lay = dvr.GridLayout.choose(4096, n=20, d=11, widths=[5, 3])
    rng = np.random.default_rng(0)
    W1, W2 = rng.normal(size=(5, 11)), rng.normal(size=(3, 5))
    assert np.array_equal(lay.read_weight_blocks(lay.weight_blocks(W1), W1.shape), W1)
    for axis in dvr.AXES:
        assert np.array_equal(lay.read_weight(lay.weight(W2, axis), axis, W2.shape), W2)
    with pytest.raises(LayoutError):
        dvr.GridLayout.choose(4096, n=20, d=11, widths=[100])


def test_twin_momentum_schedule():
    mus = mlp_dvr_twin.nesterov_mu(4)
    assert mus[0] == 0.0 and 0 < mus[1] < mus[2] < mus[3] < 1


# ---------------------------------------------------------------------- bad inputs
def test_bad_config():
    with pytest.raises(MLPConfigError, match="unknown"):
        MLPTrainer(hiden=[3])
    with pytest.raises(HetrainUserError):
        MLPTrainer(hidden=[0])
    with pytest.raises(HetrainUserError):
        MLPTrainer(momentum="adam")
    with pytest.raises(HetrainUserError, match="sigmoid_layers"):
        MLPTrainer(hidden=[4], sigmoid_layers=["published"])
    with pytest.raises(HetrainUserError, match="sigmoid"):
        MLPTrainer(sigmoid="tanh")


def test_bad_data():
    tr = MLPTrainer(hidden=[4])
    eng = ckks.create_engine("sim", "n16384-deep", rotations=tr.plan(20, 8, 3, ckks.get_params("n16384-deep")).rotation_steps)
    X, Y = data()
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        tr.client_encrypt(eng, Xn, Y)
    with pytest.raises(DataError, match="n × d"):
        tr.client_encrypt(eng, X[:5], Y)
    with pytest.raises(DataError, match="one-hot"):
        tr.client_encrypt(eng, X, Y * 2)


def test_pre_activations_outside_interval_are_refused():
    X, Y = data()
    tr = MLPTrainer(hidden=[4], init_scale=1.0)
    eng = ckks.create_engine("sim", "n16384-deep", rotations=tr.plan(20, 8, 3, ckks.get_params("n16384-deep")).rotation_steps)
    with pytest.raises(DataError, match="interval"):
        tr.client_encrypt(eng, X * 50.0, Y)


def test_minibatches_and_label_smoothing_match_twin():
    # n16384-deep, hidden 9 -> P = 16: 32 samples per ciphertext, 100 rows -> 4 groups; batches of 64 rows = 2 groups,
    # the second batch 36 rows (its own step lr / 36); 3 iterations: batch 0, batch 1, batch 0 again
    X, Y = data(n=100, d=8, c=3)
    tr = MLPTrainer(hidden=[9], iterations=3, momentum="none", batch_size=64, label_smoothing=0.1, learning_rate=4.0)
    p = ckks.get_params("n16384-deep")
    plan = tr.plan(100, 8, 3, p)
    assert any("mini-batches of 2" in n for n in plan.notes)
    eng, out, W, _ = run_sim(tr, X, Y, "n16384-deep", refresh=client_refresh)
    twin = tr.twin(X, Y)
    assert max_diff(W, twin) < EXACT
    # the batches, their order and the smoothing all matter (else this test would not test them)
    for other in ({"batch_size": None}, {"label_smoothing": 0.0}, {"seed": 1}):
        cfg = {**tr.config, **other}
        assert max_diff(W, MLPTrainer(**cfg).twin(X, Y)) > 1e-3
    # the twin's mini-batches are the documented consecutive slices of the permuted rows
    Xp, Yp = tr.prepare(X, Y)
    assert np.allclose(Yp.max(1), 0.9) and np.allclose(Yp.min(1), 0.1)
    assert sorted(map(tuple, Xp)) == sorted(map(tuple, X))
    with pytest.raises(MLPConfigError, match="multiple of the 32 samples"):
        MLPTrainer(hidden=[9], batch_size=48).plan(100, 8, 3, p)
    with pytest.raises(MLPConfigError, match="label_smoothing"):
        MLPTrainer(label_smoothing=0.5)


def test_nesterov_refused_before_keys_when_a_refreshed_iteration_does_not_fit():
    # n16384-deep holds the first iteration (9 levels, μ_0 = 0) but not a later one (10): the plan must say so
    # before any key is made, and choose_preset(refresh=True) must pick a preset where every iteration fits
    from hetrain.protocol import fit
    from hetrain.protocol.planning import choose_preset

    X, Y = data()
    tr = MLPTrainer(hidden=[4], iterations=3, momentum="nesterov")
    p = ckks.get_params("n16384-deep")
    plan = tr.plan(20, 8, 3, p)
    assert plan.iterations_that_fit == 1 and not plan.fits_with_refresh()
    with pytest.raises(DepthPlanError, match="later one does not fit even in freshly refreshed"):
        plan.check(p, refresh=True)
    assert MLPTrainer(hidden=[4], iterations=1, momentum="nesterov").plan(20, 8, 3, p).fits_with_refresh()
    assert MLPTrainer(hidden=[4], iterations=3, momentum="none").plan(20, 8, 3, p).fits_with_refresh()
    chosen = choose_preset(tr, 20, 8, 3, refresh=True)
    assert chosen.levels > p.levels and tr.plan(20, 8, 3, chosen).fits_with_refresh()
    # end to end: refused by the client (no keygen, no server) with the explicit preset
    import hetrain.ckks as ckks_mod
    made = []
    orig = ckks_mod.create_engine
    try:
        ckks_mod.create_engine = lambda *a, **k: made.append(1) or orig(*a, **k)
        with pytest.raises(DepthPlanError, match="freshly refreshed"):
            fit(X, Y.argmax(1), "mlp", {"layout": "dvr", "hidden": [4], "iterations": 3, "momentum": "nesterov"},
                preset="n16384-deep", backend="sim", refresh="client", progress=False)
    finally:
        ckks_mod.create_engine = orig
    assert not made
