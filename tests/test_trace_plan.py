"""Plans from the circuit (models/trace.py): each trainer's plan is its own server iteration traced on
zeros, and it says what a real SEAL run does: levels per iteration, rotation steps, operation counts."""
from __future__ import annotations

import numpy as np
import pytest

from hetrain import ckks
from hetrain.circuits import blocked_matmul
from hetrain.errors import DataError
from hetrain.models import trace
from hetrain.models.base import DepthPlanError, check_training_arrays, choose_preset
from hetrain.models.mlr_minibatch import MiniBatchMLR
from hetrain.models.mlp_dvr import MLPTrainer
from hetrain.models.mlp_diagonal import DiagonalMLPTrainer
from hetrain.models.mlr import MLRTrainer

PLACEMENT = {"encrypt", "decrypt", "encode", "mod_switch", "zero_result"}


@pytest.fixture(autouse=True)
def _fresh_traces():
    trace.clear_cache()  # a monkeypatched circuit must be traced anew
    yield
    trace.clear_cache()


def _data(n, d, c, seed=0):
    rng = np.random.default_rng(seed)
    X = np.clip(rng.normal(size=(n, d)), -2, 2) * 0.5
    return X, np.eye(c)[np.arange(n) % c]


class _Recorder:
    """A checkpoint hook that keeps the lowest level of the state after every iteration."""

    def __init__(self):
        self.levels = []

    def load(self):
        return None

    def save(self, state, meta):
        self.levels.append(min(ct.level for v in state.values() for ct in (v if isinstance(v, list) else [v])))


def _run(trainer, X, Y, engine, state_name, job_extra=None):
    """client_encrypt + server_train on ``engine``; returns (levels: state level before and after each
    iteration, operation counts of server_train without placement kinds, rotation steps used)."""
    inputs, job = trainer.client_encrypt(engine, X, Y)
    inputs = {k: list(v) for k, v in inputs.items()}  # lazy encryptions (mini-batches) encrypted here
    job.update(job_extra or {})
    used, rotate = set(), engine.rotate

    def recording(a, step):
        used.add(engine.normalize_step(step))
        return rotate(a, step)

    engine.rotate = recording
    rec = _Recorder()
    before = engine.counters.snapshot()
    trainer.server_train(engine, inputs, job, checkpoint=rec)
    ops = {k: v for k, v in engine.counters.diff(before).items() if k not in PLACEMENT}
    start = min(ct.level for ct in inputs[state_name])
    return [start, *rec.levels], ops, used - {0}


def _check_against(plan, levels, ops, used, slots):
    per = [a - b for a, b in zip(levels, levels[1:])]
    assert per == plan.chain_levels
    # the depth of the run (the mini-batch client encrypts its batches lower: the state drops further)
    assert plan.levels_needed <= levels[0] - levels[-1]
    assert plan.ops == ops
    assert used <= {s % slots for s in plan.rotation_steps}


CASES = {
    # name: (trainer, shape (n, d, c), preset, the state's input name, job extras)
    "mlr": (lambda: MLRTrainer(iterations=2), (20, 5, 3), "n4096-test", "Y", None),
    "mlr-minibatch": (lambda: MiniBatchMLR(epochs=1, batch_size=32), (20, 5, 3), "n4096-test", "W", None),
    "mlp-dvr": (lambda: MLPTrainer(hidden=[4], momentum="none", iterations=1), (20, 8, 3), "n16384-deep", "W1",
                {"data_shape": [20, 8, 3]}),
    "mlp-diagonal": (lambda: DiagonalMLPTrainer(sigmoid="deg3:8", iterations=2), (20, 4, 3), "n16384-deep", "w1",
                     None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_traced_plan_is_what_the_sim_run_does(name):
    make, (n, d, c), preset, state, extra = CASES[name]
    trainer = make()
    params = ckks.get_params(preset)
    plan = trainer.plan(n, d, c, params)
    assert plan.fits and plan.ops
    X, Y = _data(n, d, c)
    engine = ckks.create_engine("sim", preset, rotations=plan.rotation_steps, force_insecure=True)
    levels, ops, used = _run(trainer, X, Y, engine, state, extra)
    _check_against(plan, levels, ops, used, params.slots)
    if name != "mlr-minibatch":
        assert plan.levels_needed == levels[0] - levels[-1]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if CASES[n][2] != "n4096-test" else n
                                  for n in sorted(CASES)])  # N = 16384 runs: 5-8 s each on 2 cores
def test_traced_plan_is_what_a_seal_run_does(name):
    make, (n, d, c), preset, state, extra = CASES[name]
    trainer = make()
    params = ckks.get_params(preset)
    plan = trainer.plan(n, d, c, params)
    X, Y = _data(n, d, c)
    engine = ckks.create_engine("seal", preset, rotations=plan.rotation_steps, force_insecure=True)
    levels, ops, used = _run(trainer, X, Y, engine, state, extra)
    _check_against(plan, levels, ops, used, params.slots)
    # the trace's rotation steps are exactly those the encrypted run used (not merely enough of them)
    first = trace.step(trainer, (n, d, c), params, None, trainer.trace_flavor(0, 0.0, trainer.batches(
        trainer.layout(n, d, c, params.slots))) if name == "mlp-dvr" else trainer.trace_flavor(0))
    assert {s % params.slots for s in first.rotation_steps} <= used


def test_a_steps_depth_and_where_the_client_puts_its_batch():
    """A mini-batch step is 4 levels deep (degree 3); the client encrypts the batch at the last multiple of
    4 below the top, so the first step of a fresh state drops it from the top (7) to 0 in n4096-test."""
    plan = MiniBatchMLR(epochs=1, batch_size=32).plan(20, 5, 3, "n4096-test")
    assert plan.levels_per_iteration == {"iteration 1": 4, "each later iteration": 4} and plan.chain_levels == [7]
    assert MiniBatchMLR(epochs=1, batch_size=32).data_levels(7) == (4, 1)


def test_the_plans_match_the_measured_depths_of_the_seed_shapes():
    # RegNet seed shapes (128 rows, 400 features, 10 classes): the levels the circuits were measured at
    assert MLRTrainer(iterations=3).plan(128, 400, 10, "n16384-deep").levels_needed == 9
    p = ckks.get_params("n32768")
    two = MLPTrainer(hidden=[32, 16], iterations=2).plan(128, 400, 10, p)
    assert (two.levels_needed, two.iterations_that_fit) == (29, 1)  # 14, then 15 with Nesterov's product
    assert MiniBatchMLR(sigmoid="deg15:16").levels_per_step == 6


def test_a_changed_sigmoid_changes_the_plan_with_no_other_edit():
    p = ckks.get_params("n32768")
    deg3 = MLRTrainer(iterations=2).plan(40, 7, 3, p).levels_per_later_iteration
    deg7 = MLRTrainer(iterations=2, sigmoid="deg7:8").plan(40, 7, 3, p).levels_per_later_iteration
    assert deg7 == deg3 + 1  # depth 3 instead of 2
    dvr3 = MLPTrainer(hidden=[4], iterations=1).plan(20, 8, 3, p).levels_needed
    dvr7 = MLPTrainer(hidden=[4], iterations=1, sigmoid="deg7:8").plan(20, 8, 3, p).levels_needed
    assert dvr7 == dvr3 + 2  # one level more in each of the two activations


def test_a_changed_circuit_changes_plan_and_refresh_decisions(monkeypatch):
    """One more product in the gradient (a circuit edit, no planner edit): every plan follows, and so
    does the server's choice of when to refresh."""
    p = ckks.get_params("n32768")
    before = MiniBatchMLR().levels_per_step, MLRTrainer(iterations=3).plan(40, 7, 3, p).levels_needed
    block = blocked_matmul.gradient_block  # each feature block's gradient (mlr and mlr-minibatch alike)

    def costlier(engine, packing, E, Xth):
        return engine.mul_scalar(block(engine, packing, E, Xth), 1.0)

    monkeypatch.setattr(blocked_matmul, "gradient_block", costlier)
    trace.clear_cache()
    after = MiniBatchMLR().levels_per_step, MLRTrainer(iterations=3).plan(40, 7, 3, p).levels_needed
    assert after == (before[0] + 1, before[1] + 3)  # one more level per step / per iteration


def test_refreshes_fall_where_the_traced_circuit_runs_out(monkeypatch):
    X, Y = _data(20, 8, 3)
    preset = "n32768"  # 19 levels: two 9-level iterations per chain, one when an iteration costs 10

    def refreshes():
        trainer = MLPTrainer(hidden=[4], iterations=3, momentum="none")
        plan = trainer.plan(20, 8, 3, ckks.get_params(preset))
        engine = ckks.create_engine("sim", preset, rotations=plan.rotation_steps)
        inputs, job = trainer.client_encrypt(engine, X, Y, refresh=True)
        job["data_shape"] = [20, 8, 3]
        calls = []

        def refresh(state, t):
            calls.append(t)
            return {k: [engine.encrypt(engine.decrypt(ct)) for ct in v] for k, v in state.items()}

        trainer.server_train(engine, inputs, job, refresh=refresh)
        return calls

    assert refreshes() == [2]
    iteration = MLPTrainer._iteration

    def costlier(self, engine, ctx, W, V, t, mu):
        W, V = iteration(self, engine, ctx, W, V, t, mu)
        W = {k: [engine.mul_scalar(ct, 1.0) for ct in v] for k, v in W.items()}
        return W, W

    monkeypatch.setattr(MLPTrainer, "_iteration", costlier)
    trace.clear_cache()
    assert refreshes() == [1, 2]


def test_layout_rotation_count_is_the_traced_count():
    """mlp-dvr's time model counts rotations from the layout; the trace counts what the circuit does."""
    p = ckks.get_params("n16384-deep")
    for cfg, shape in [({"hidden": [16]}, (128, 400, 10)), ({"hidden": [32, 16]}, (100, 37, 5)),
                       ({"hidden": [16], "batch_size": 128}, (700, 64, 10))]:
        tr = MLPTrainer(momentum="none", **cfg)
        lay = tr.layout(*shape, p.slots)
        s = trace.step(tr, shape, trace.deeper(p, 40), None, tr.trace_flavor(0, 0.0, tr.batches(lay)))
        assert s.ops["rotate"] == tr.rotations_per_iteration(lay)


def test_one_preset_search():
    tr = MLRTrainer(iterations=3)
    assert choose_preset(tr, 128, 400, 10).name == "n16384-deep"
    assert choose_preset(MiniBatchMLR(), 128, 400, 10, refresh=True).name == "n16384"
    with pytest.raises(DepthPlanError, match="not even one mlp-dvr iteration fits in any preset"):
        choose_preset(MLPTrainer(hidden=[64, 64, 64, 64], iterations=2), 20, 8, 3, refresh=True)
    from hetrain.protocol import planning

    assert planning.choose_preset is choose_preset


def test_a_trace_holds_no_data_and_refuses_nothing_but_depth():
    tr = MLRTrainer(iterations=9)
    plan = tr.plan(128, 400, 10, "n16384")
    assert not plan.fits and plan.iterations_that_fit == 2 and plan.ops is None
    assert plan.levels_needed == 1 + 8 * 4  # past the chain: every later iteration costs what the last traced one did
    with pytest.raises(DepthPlanError, match=r"2 iteration\(s\) fit"):
        plan.check(ckks.get_params("n16384"))


@pytest.mark.parametrize("X,Y,match", [
    (np.zeros((3, 2)), np.eye(2)[[0, 1]], "same n"),
    (np.zeros((0, 2)), np.zeros((0, 2)), "same n"),
    (np.zeros((2, 0)), np.eye(2), "d ≥ 1"),
    (np.array([[np.nan, 0.0], [0.0, 0.0]]), np.eye(2), "NaN or infinite"),
    (np.zeros((2, 2)), np.array([[0.5, 0.5], [1.0, 0.0]]), "one-hot"),
    (np.zeros((2, 2)), np.array([[np.nan, 0.0], [1.0, 0.0]]), "one-hot"),
])
def test_one_input_check(X, Y, match):
    with pytest.raises(DataError, match=match):
        check_training_arrays(X, Y, trainer="mlp-dvr", min_features=1)
    with pytest.raises(DataError, match="mlp-dvr: "):
        check_training_arrays(X, Y, trainer="mlp-dvr", min_features=1)
