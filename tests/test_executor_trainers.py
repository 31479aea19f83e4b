"""Every trainer on every core: mlr-minibatch's per-group and per-feature-block tasks run on worker
processes (hetrain.ckks.executor) with the serial run's results (bit for bit), levels and operation counts,
under the sim and under real SEAL, in process and through `hetrain train`; mlp-diagonal stays in the
server process."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hetrain.ckks.executor import ProcessExecutor, SerialExecutor, make_executor
from hetrain.cli.main import main as cli_main
from hetrain.models.base import server_hooks
from hetrain.protocol import files

from jobkit import iris_rows, random_rows, tasks_job, write_bundle

# 2 batches of 32 rows (2 sample groups x 3 feature blocks each at 8,192 slots), momentum and weight decay
# on: every branch of the step; one epoch = 2 steps, which n16384-deep holds without a refresh, so the
# second step starts from the state the workers returned
MINIBATCH = {"epochs": 1, "batch_size": 32, "momentum": 0.5, "weight_decay": 0.01, "learning_rate": 1.0,
             "patience": 0}


def _serial_and_two_workers(tr, eng, inputs, job) -> dict:
    """{workers: (operation counts, decrypted outputs, output levels, executor)} for 1 and 2 workers."""
    runs = {}
    for workers in (1, 2):
        with make_executor(eng, inputs, workers) as ex:
            eng.counters.reset()
            out = tr.server_train(eng, inputs, job, executor=ex)
            runs[workers] = (eng.counters.snapshot(), {k: [eng.decrypt(ct) for ct in v] for k, v in out.items()},
                             {k: [ct.level for ct in v] for k, v in out.items()}, ex)
    return runs


def _assert_identical(runs: dict, names: set) -> None:
    (c1, w1, l1, ex1), (c2, w2, l2, ex2) = runs[1], runs[2]
    assert isinstance(ex1, SerialExecutor) and isinstance(ex2, ProcessExecutor) and ex2.started_workers == 2
    assert c1 == c2 and c1["rotate"] > 0 and c1["multiply"] > 0  # the workers' counts merged into the server's
    assert w1.keys() == w2.keys() == names and l1 == l2
    for k in w1:  # the same operations on the same ciphertexts: bit for bit
        assert len(w1[k]) == len(w2[k]) > 0
        for a, b in zip(w1[k], w2[k]):
            assert np.array_equal(a, b)
    assert ex2.timing["worker_compute_s"] > 0  # the second worker did compute


def test_minibatch_declares_the_executor_and_mlp_diagonal_does_not():
    """mlp-diagonal's only independent work (its W1 and W2 updates) cost more in transfers than it moved
    off the server's core at Iris sizes (measured: README, "Every core"): the server keeps it in one process."""
    from hetrain.models.mlp_diagonal import DiagonalMLPTrainer
    from hetrain.models.mlr_minibatch import MiniBatchMLR

    assert "executor" in server_hooks(MiniBatchMLR) and "executor" not in server_hooks(DiagonalMLPTrainer)


@pytest.mark.parametrize("backend", ["sim", pytest.param("seal", marks=pytest.mark.slow)])  # SEAL: ~10 s
def test_minibatch_two_workers_give_the_serial_weights_levels_and_counts(backend):
    tr, eng, inputs, job = tasks_job("mlr-minibatch", MINIBATCH, backend, "n16384-deep")
    packing = tr.packing(job["d"], job["c"], eng.slots)
    assert packing.n_groups == 2 and packing.n_fblocks == 3 and job["n_batches"] == 2
    runs = _serial_and_two_workers(tr, eng, inputs, job)
    _assert_identical(runs, {"W", "D"})
    assert tr.run_stats["steps"] == 2
    # and the result is the plaintext twin's (the client's check), not merely the same on both sides
    W = tr.unpack(runs[2][1]["W"], job["d"], job["c"], eng.slots)
    twin = tr.twin(*random_rows(64, 64, 10))["W"]
    assert np.abs(W - twin).max() < (1e-9 if backend == "sim" else 1e-3)
    assert np.abs(twin).max() > 1e-3


def test_minibatch_step_without_an_executor_is_the_serial_executors():
    """``executor=None`` (the tracer's and the serial path) runs the very same tasks in order."""
    tr, eng, inputs, job = tasks_job("mlr-minibatch", MINIBATCH, "sim", "n16384-deep")
    eng.counters.reset()
    out_none = tr.server_train(eng, inputs, job)
    counts = eng.counters.snapshot()
    eng.counters.reset()
    out_serial = tr.server_train(eng, inputs, job, executor=SerialExecutor(eng))
    assert eng.counters.snapshot() == counts
    for a, b in zip(out_none["W"], out_serial["W"]):
        assert np.array_equal(eng.decrypt(a), eng.decrypt(b))


def _train(jobdir, workers: int) -> tuple[bytes, dict, dict]:
    for name in files.SERVER_FILES:
        (jobdir / name).unlink(missing_ok=True)
    assert cli_main(["train", "--job", str(jobdir), "--workers", str(workers), "--quiet"]) == 0
    stats = json.loads((jobdir / files.SERVER_STATS).read_text())
    return (jobdir / files.OUTPUTS).read_bytes(), {k: v["count"] for k, v in stats["operations"].items()}, stats


def test_hetrain_train_workers_2_runs_minibatch_on_two_processes_with_the_serial_outputs(tmp_path):
    """`hetrain train --workers 2` end to end (the server process, its workers loading JOBDIR): 2 batches x
    2 epochs, the sim bootstrapping the state before every step but the first."""
    X, Y = random_rows(64, 64, 10)
    cfg = {**MINIBATCH, "epochs": 2}
    tr, eng, job = write_bundle(tmp_path / "job", "mlr-minibatch", cfg, X, Y, "n16384", refresh="bootstrap",
                                bootstrap_level=7)
    out1, ops1, st1 = _train(tmp_path / "job", 1)
    out2, ops2, st2 = _train(tmp_path / "job", 2)
    assert (st1["workers"], st2["workers"]) == (1, 2) and st2["executor"] == "ProcessExecutor"
    assert st2["executor_timing"]["worker_compute_s"] > 0
    assert st1["trainer"]["steps"] == st2["trainer"]["steps"] == 4 and st2["refresh"]["bootstraps"] > 0
    assert ops1 == ops2 and ops1["rotate"] > 0
    dec = [tr.client_decrypt(eng, files.unpack_ciphertexts(eng, o, "outputs"), job)["W"] for o in (out1, out2)]
    assert np.array_equal(dec[0], dec[1])
    assert np.abs(dec[1] - tr.twin(X, Y, steps=4)["W"]).max() < 1e-9


def test_hetrain_train_workers_2_keeps_mlp_diagonal_in_the_server_process(tmp_path):
    X, Y = iris_rows()
    write_bundle(tmp_path / "job", "mlp-diagonal", {"iterations": 2}, X, Y, "n16384-deep")
    _, ops, stats = _train(tmp_path / "job", 2)
    assert stats["workers"] == 1 and stats["executor"] is None and ops["rotate"] > 0
