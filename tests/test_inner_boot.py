"""Bootstrapping inside an iteration (models/inner_boot.py): an mlp-dvr iteration deeper than the levels a
bootstrap restores trains with --refresh bootstrap, with the bootstraps the traced plan counts; with
refresh client or none it is refused, naming the fix. Sim (INSECURE) here; OpenFHE end to end in
tests/test_openfhe_training.py."""
from __future__ import annotations

import numpy as np
import pytest

from hetrain import ckks
from hetrain.ckks.errors import DepthExhausted
from hetrain.ckks.sim_backend import SimEngine
from hetrain.data import load_builtin
from hetrain.models import trace
from hetrain.models.base import DepthPlanError
from hetrain.models.inner_boot import consumed, ensure_levels
from hetrain.models.mlp_dvr import MLPTrainer
from hetrain.protocol.refresh_channel import ChannelStats
from hetrain.protocol.server import BootstrapRefresh

PRESET = "n16384-deep"  # 9 levels; the engine's bootstraps restore BOOT_LEVEL
BOOT_LEVEL = 6
TWO_HIDDEN = {"hidden": [8, 4], "iterations": 3, "learning_rate": 1.0, "sigmoid": "deg3:16"}


@pytest.fixture(autouse=True)
def _fresh_traces():
    trace.clear_cache()
    yield
    trace.clear_cache()


def _iris(n=None):
    X, y = load_builtin("iris")
    if n is not None:
        idx = np.random.default_rng(0).permutation(len(y))[:n]
        X, y = X[idx], y[idx]
    X = (X - X.mean(0)) / X.std(0)
    return X, y, np.eye(3)[y]


def _sim(boot=BOOT_LEVEL, rotations=(), noise=0.0):
    return SimEngine(ckks.get_params(PRESET), rotations, force_insecure=True, bootstrap_level=boot, noise=noise, seed=1)


def test_ensure_levels_bootstraps_only_a_ciphertext_short_of_its_need():
    eng = _sim()
    ct = eng.encrypt(np.ones(eng.slots), level=3)
    assert ensure_levels(eng, ct, 3) is ct  # enough: untouched, no bootstrap
    assert eng.counters.counts.get("bootstrap", 0) == 0
    up = ensure_levels(eng, ct, 4, "z")
    assert up.level == BOOT_LEVEL and eng.counters.counts["bootstrap"] == 1
    assert np.allclose(eng.decrypt(up), 1.0)


def test_ensure_levels_refuses_what_no_bootstrap_can_give():
    with pytest.raises(DepthExhausted, match="layer 2's pre-activation needs 7 levels but a bootstrap restores only 6"):
        eng = _sim()
        ensure_levels(eng, eng.encrypt(0.0, level=0), 7, "layer 2's pre-activation")
    eng = _sim(boot=None)
    with pytest.raises(DepthExhausted, match="cannot bootstrap: use --refresh bootstrap"):
        ensure_levels(eng, eng.encrypt(0.0, level=0), 2, "δ")


def test_a_segments_need_is_traced_from_its_code():
    """A degree-3 polynomial then one product: 3 levels; a product of products: 2 (cached per key)."""
    from hetrain.circuits.masked_poly import eval_poly_masked
    from hetrain.ckks import PlainVector

    p = ckks.get_params(PRESET)
    ones = PlainVector(np.ones(p.slots))
    assert consumed("cubic", p, lambda e, top: [e.mul(eval_poly_masked(e, top(), (0.5, 0.2, 0.0, -0.01), ones),
                                                      top())]) == 3
    assert consumed("two", p, lambda e, top: [e.mul(e.mul(top(), top()), top())]) == 2


def test_two_hidden_layers_train_past_the_bootstrap_level_with_the_planned_bootstraps():
    """14-15 levels per iteration, 6 after a bootstrap: the server bootstraps inside iterations, the engine's
    count equals the traced plan's, no client, and the weights are the twin's (the sim without noise)."""
    X, _, Y = _iris()
    tr = MLPTrainer(**TWO_HIDDEN)
    plan = tr.plan(150, 4, 3, PRESET, bootstrap_level=BOOT_LEVEL)
    assert plan.levels_per_later_iteration > BOOT_LEVEL and not plan.refreshed_iteration_fits
    assert plan.bootstraps_in_iterations > 0
    eng = _sim(rotations=plan.rotation_steps)
    inputs, job = tr.client_encrypt(eng, X, Y, refresh="bootstrap")
    job["data_shape"] = [150, 4, 3]
    stats = ChannelStats()
    before = eng.counters.snapshot()
    out = tr.server_train(eng, inputs, job, refresh=BootstrapRefresh(eng, stats))
    counted = eng.counters.diff(before).get("bootstrap", 0)
    assert counted == plan.bootstrap_ops["bootstrap"] == stats.bootstraps
    assert tr.run_stats["bootstraps_in_iterations"] == plan.bootstraps_in_iterations
    W, twin = tr.client_decrypt(eng, out, job), tr.twin(X, Y)
    assert max(float(np.max(np.abs(W[k] - twin[k]))) for k in twin) < 1e-9


def test_the_plan_printed_before_keygen_and_the_estimate_name_the_bootstraps():
    import dataclasses

    from hetrain.protocol.estimate import estimate
    from hetrain.protocol.planning import plan_lines

    tr = MLPTrainer(**TWO_HIDDEN)
    p = ckks.get_params(PRESET)
    plan = tr.plan(150, 4, 3, p, bootstrap_level=BOOT_LEVEL)
    inside, state = sum(plan.bootstraps["in_iteration"]), sum(plan.bootstraps["state"])
    assert any(f"{inside} intermediate ciphertext(s) and {state} of the state" in line
               for line in plan_lines(tr, plan, p, None))
    est = dataclasses.replace(estimate(p, plan.rotation_steps, 10), bootstraps=inside + state,
                              bootstraps_in_iterations=inside)
    assert f"{inside + state} bootstrap(s) planned, {inside} of them inside iterations" in est.line()


def test_without_bootstrapping_the_same_job_is_refused_naming_the_fix():
    tr = MLPTrainer(**TWO_HIDDEN)
    plan = tr.plan(150, 4, 3, PRESET)
    plan.check(ckks.get_params(PRESET), refresh="bootstrap")  # fits: bootstraps inside iterations
    for refresh in (True, "client", False, "none"):
        with pytest.raises(DepthPlanError, match=r"--refresh bootstrap on a backend that bootstraps \(.*openfhe"):
            plan.check(ckks.get_params(PRESET), refresh=refresh)


def test_an_iteration_that_a_bootstrap_cannot_help_is_refused():
    """Degree-7 sigmoids need 4 levels per activation (+1 product): more than 3 after a bootstrap."""
    tr = MLPTrainer(**{**TWO_HIDDEN, "sigmoid": "deg7:16"})
    plan = tr.plan(150, 4, 3, PRESET, bootstrap_level=3)
    assert plan.bootstraps is None and "does not fit even with bootstraps" in plan.notes[-1]
    with pytest.raises(DepthPlanError, match="Use a preset with more levels"):
        plan.check(ckks.get_params(PRESET), refresh="bootstrap")


def test_the_server_without_the_client_through_the_protocol(tmp_path):
    """fit with refresh bootstrap on sim keys that bootstrap to 6 levels: 0 round trips, the in-iteration
    bootstraps reported, the client's twin check passes; a tampered result still fails it."""
    from hetrain.protocol import files, fit
    from hetrain.protocol.errors import TwinMismatch
    from hetrain.protocol.keys import KeyDir
    from hetrain.protocol.report import depth_words
    from hetrain.protocol.steps import decrypt

    X, y = load_builtin("iris")
    KeyDir.create(tmp_path / "K", "sim", PRESET, seed=0, bootstrap_level=BOOT_LEVEL)  # INSECURE: planning only
    r = fit(X, y, "mlp-dvr", TWO_HIDDEN, backend="sim", refresh="bootstrap", keys=tmp_path / "K", progress=False,
            workdir=tmp_path / "JOB")
    s = r.stats
    assert s["refresh"]["round_trips"] == 0 and s["refresh"]["bytes_to_client"] == 0
    inside = s["run"]["bootstraps_in_iterations"]
    assert 0 < inside < s["refresh"]["bootstraps"]  # the state's refreshes are counted too
    planned = s["bootstraps_planned"]  # the traced plan, at the keys' bootstrap level
    assert planned["level"] == BOOT_LEVEL and sum(planned["in_iteration"]) == inside
    assert sum(planned["in_iteration"]) + sum(planned["state"]) == s["refresh"]["bootstraps"]
    assert s["verified"] is True and s["twin_max_abs_diff"] <= s["twin_bound"]
    assert f"{inside} intermediate ciphertext(s) were bootstrapped inside iterations" in depth_words(s)
    # a server that returns other values: 3 x the bound on every weight is refused
    keys = KeyDir.open(tmp_path / "K")
    engine = keys.job_engine(())
    out = tmp_path / "JOB" / files.OUTPUTS
    outputs = files.read_ciphertext_map(out, engine, "outputs")
    delta = 3 * s["twin_bound"]
    files.write_ciphertext_map(out, engine, {k: [engine.add(ct, delta) for ct in v] for k, v in outputs.items()})
    with pytest.raises(TwinMismatch, match="could not be verified"):
        decrypt(keys, tmp_path / "JOB")


@pytest.mark.parametrize("refresh", ["client", "none"])
def test_refresh_client_or_none_on_the_same_job_is_refused_before_keygen(tmp_path, refresh):
    from hetrain.protocol import fit

    X, y = load_builtin("iris")
    with pytest.raises(DepthPlanError, match="--refresh bootstrap on a backend that bootstraps"):
        fit(X, y, "mlp-dvr", TWO_HIDDEN, backend="sim", preset=PRESET, refresh=refresh, progress=False,
            workdir=tmp_path / "JOB")
    assert not (tmp_path / "JOB").exists() or not any((tmp_path / "JOB").iterdir())  # refused before any key


@pytest.mark.parametrize("transpose", ["packed", "repacked"])
def test_mlp_diagonal_full_iterations_past_the_bootstrap_level(transpose):
    """mlp-diagonal (Iris design): a full iteration needs 8 levels (9 re-packed), a bootstrap restores 6 here:
    the server bootstraps z1 / δ2 / δ1 inside iterations where needed, as many as the traced plan says."""
    from hetrain.models.mlp_diagonal import DiagonalMLPTrainer

    X, _, Y = _iris(120)
    tr = DiagonalMLPTrainer(iterations=4, transpose=transpose)
    plan = tr.plan(120, 4, 3, PRESET, bootstrap_level=BOOT_LEVEL)
    assert plan.levels_per_later_iteration > BOOT_LEVEL and plan.bootstraps_in_iterations > 0
    eng = _sim(rotations=plan.rotation_steps)
    inputs, job = tr.client_encrypt(eng, X, Y, refresh="bootstrap")
    stats = ChannelStats()
    before = eng.counters.snapshot()
    out = tr.server_train(eng, inputs, job, refresh=BootstrapRefresh(eng, stats))
    assert eng.counters.diff(before).get("bootstrap", 0) == plan.bootstrap_ops["bootstrap"] == stats.bootstraps
    assert tr.run_stats["bootstraps_in_iterations"] == plan.bootstraps_in_iterations
    W, twin = tr.client_decrypt(eng, out, job), tr.twin(X, Y, iterations=4)
    for k in ("W1", "W2"):
        np.testing.assert_allclose(W[k], twin[k], atol=1e-9)
