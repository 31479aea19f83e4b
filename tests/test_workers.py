"""Every core: the circuits' independent tasks on worker processes (hetrain.ckks.executor), with the
same results and the same operation counts as the serial run, under the sim and under real SEAL."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hetrain import ckks
from hetrain.ckks.executor import ProcessExecutor, SerialExecutor, make_executor
from hetrain.cli.main import main as cli_main
from hetrain.models.base import DepthPlanError
from hetrain.models.mlr import MLRTrainer
from hetrain.protocol import files, server


def _data(n=128, d=60, c=3, seed=0):  # 2 sample groups x 2 feature blocks at n16384
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.eye(c)[rng.integers(0, c, n)]


def _serial_and_parallel(backend, preset, iterations):
    X, Y = _data()
    tr = MLRTrainer(iterations=iterations)
    eng = ckks.create_engine(backend, preset, rotations=tr.plan(*X.shape, Y.shape[1], preset).rotation_steps)
    inputs, job = tr.client_encrypt(eng, X, Y)
    runs = {}
    for workers in (1, 2):
        with make_executor(eng, inputs, workers) as ex:
            eng.counters.reset()
            out = tr.server_train(eng, inputs, job, executor=ex)
            runs[workers] = (eng.counters.snapshot(), [eng.decrypt(ct) for ct in out["W"]],
                             [ct.level for ct in out["W"]], ex)
    return runs


@pytest.mark.parametrize("backend,preset", [("sim", "n16384"), ("seal", "n16384")])
def test_two_workers_give_the_serial_results_and_counts(backend, preset):
    runs = _serial_and_parallel(backend, preset, iterations=2)
    (c1, w1, l1, ex1), (c2, w2, l2, ex2) = runs[1], runs[2]
    assert isinstance(ex1, SerialExecutor) and isinstance(ex2, ProcessExecutor) and ex2.started_workers == 2
    assert c1 == c2 and c1["rotate"] > 0 and c1["multiply"] > 0
    assert l1 == l2
    for a, b in zip(w1, w2):  # bit-identical: the same SEAL operations on the same ciphertexts
        assert np.array_equal(a, b)
    assert ex2.timing["worker_compute_s"] > 0


def test_executor_refuses_bad_worker_counts():
    eng = ckks.create_engine("sim", "n8192")
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        make_executor(eng, {}, 0)
    with pytest.raises(ValueError, match="at least 2 workers, got 1"):
        ProcessExecutor(eng, {}, 1)


def test_executor_maps_in_task_order_and_passes_inputs_by_reference():
    eng = ckks.create_engine("sim", "n8192", rotations=[1])
    xs = [eng.encrypt(np.full(4, float(i))) for i in range(5)]
    with make_executor(eng, {"x": xs}, 2) as ex:
        got = ex.map(_scaled_rotation, [(x, 10.0 * i) for i, x in enumerate(xs)], shared=(1,))
        again = ex.map(_scaled_rotation, [(g, 1.0) for g in got], shared=(0,))  # results sent back as received
    assert ex._encode(xs[3]) == ("in", "x", 3)
    for i, ct in enumerate(again):
        expect = np.roll(np.pad(np.full(4, float(i)), (0, eng.slots - 4)), -1) * 10.0 * i
        np.testing.assert_allclose(eng.decrypt(ct), expect, atol=1e-9)
    assert eng.counters.counts["rotate"] == 5 and eng.counters.counts["multiply_scalar"] == 10


def _scaled_rotation(engine, step, ct, factor):
    return engine.mul_scalar(engine.rotate(ct, step), factor)


def _sim_job(tmp_path):
    from jobkit import make_job

    X, Y = _data()
    return make_job(tmp_path, X, Y.argmax(1), "mlr", {"iterations": 2}, backend="sim", preset="n16384")


def test_server_with_two_workers_writes_the_serial_outputs(tmp_path):
    kit = _sim_job(tmp_path)
    outs = {}
    for workers in (1, 2):
        for name in files.SERVER_FILES:
            (kit.jobdir / name).unlink(missing_ok=True)
        stats = server.run_job(kit.jobdir, workers=workers)
        assert stats["workers"] == workers
        outs[workers] = ((kit.jobdir / files.OUTPUTS).read_bytes(),
                         {k: v["count"] for k, v in stats["operations"].items()})
    assert outs[1][1] == outs[2][1]
    dec = {w: [kit.engine.decrypt(ct) for ct in files.unpack_ciphertexts(kit.engine, o[0], "out")["W"]]
           for w, o in outs.items()}
    for a, b in zip(dec[1], dec[2]):
        assert np.array_equal(a, b)


def test_server_starts_its_workers_loading_before_it_loads_its_own_keys(tmp_path, monkeypatch):
    """The workers' loading overlaps the server's: the executor is made (its workers spawned and loading)
    before the server process loads its engine, and is given that engine afterwards; a job the server
    then refuses stops the workers it started."""
    kit = _sim_job(tmp_path)
    order = []
    real_make, real_load = server.make_executor, ckks.load_engine_file

    def make(engine, *args, **kwargs):
        order.append(("executor", engine))
        return real_make(engine, *args, **kwargs)

    def load(*args, **kwargs):
        order.append(("engine", None))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(server, "make_executor", make)
    monkeypatch.setattr(ckks, "load_engine_file", load)
    stats = server.run_job(kit.jobdir, workers=2)
    assert order == [("executor", None), ("engine", None)] and stats["workers"] == 2
    assert stats["executor_timing"]["worker_compute_s"] > 0  # it got the engine and its workers computed

    closed = []
    monkeypatch.setattr(server, "_check_plan", lambda *a: (_ for _ in ()).throw(DepthPlanError("refused here")))
    real_close = ProcessExecutor.close
    monkeypatch.setattr(ProcessExecutor, "close", lambda self: (closed.append(True), real_close(self)))
    for name in files.SERVER_FILES:
        (kit.jobdir / name).unlink(missing_ok=True)
    with pytest.raises(DepthPlanError, match="refused here"):
        server.run_job(kit.jobdir, workers=2)
    assert closed


def test_cli_train_workers_must_be_positive(tmp_path, capsys):
    kit = _sim_job(tmp_path)
    rc = cli_main(["train", "--job", str(kit.jobdir), "--workers", "0", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "--workers" in err[0] and "at least 1" in err[0]
    assert not (kit.jobdir / files.OUTPUTS).exists()


def test_server_process_refuses_workers_zero(tmp_path):
    kit = _sim_job(tmp_path)
    cmd = server.server_argv(kit.jobdir, progress=False) + ["--workers", "zero"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--workers must be a whole number of at least 1, got 'zero'" in res.stderr


def test_cli_train_passes_workers_to_the_server(tmp_path, capsys):
    kit = _sim_job(tmp_path)
    assert cli_main(["train", "--job", str(kit.jobdir), "--workers", "2", "--quiet"]) == 0
    stats = json.loads((kit.jobdir / files.SERVER_STATS).read_text())
    assert stats["workers"] == 2
    assert sys.executable  # the server ran as its own process (server_argv), reading only JOBDIR


def test_service_shares_the_cores_among_its_concurrent_jobs(tmp_path):
    import os

    from hetrain.service.jobs import JobQueue

    with pytest.raises(ValueError, match="job_workers must be at least 1"):
        JobQueue(tmp_path / "a", workers=1, job_workers=0)
    q = JobQueue(tmp_path / "b", workers=2)
    assert q.job_workers == max(1, (os.cpu_count() or 1) // 2)
    assert JobQueue(tmp_path / "c", workers=1, job_workers=3).job_workers == 3


@pytest.mark.parametrize("backend", ["sim", pytest.param("seal", marks=pytest.mark.slow)])
def test_mlp_two_workers_give_the_serial_results_and_counts(backend):
    """Its tasks' shared arguments hold the weights as a dict of ciphertext lists: they travel in the
    wire format (on SEAL they failed to pickle, on the sim they were pickled with a copy of the engine)."""
    from jobkit import mlp_dvr_tasks_job

    tr, eng, inputs, job = mlp_dvr_tasks_job(backend)
    runs = {}
    for workers in (1, 2):
        with make_executor(eng, inputs, workers) as ex:
            eng.counters.reset()
            out = tr.server_train(eng, inputs, job, executor=ex)
            runs[workers] = (eng.counters.snapshot(), {k: [eng.decrypt(ct) for ct in v] for k, v in out.items()})
    assert runs[1][0] == runs[2][0] and runs[1][0]["rotate"] > 0
    assert runs[1][1].keys() == runs[2][1].keys() == {"W1", "b1", "W2", "b2"}
    for k in runs[1][1]:
        for a, b in zip(runs[1][1][k], runs[2][1][k]):
            assert np.array_equal(a, b)


def test_workers_load_an_engine_its_data_owner_forced_below_128_bits():
    """A worker loads the server's public engine as the server did: an INSECURE ring the data owner forced
    (recorded in the context) loads there too, instead of the worker dying at start-up."""
    eng = ckks.create_engine("seal", "n4096-test", rotations=[1], force_insecure=True)
    xs = [eng.encrypt(np.full(4, float(i))) for i in range(3)]
    with make_executor(eng, {"x": xs}, 2) as ex:
        got = ex.map(_rotate_by_one, [(x,) for x in xs])
    assert ex.started_workers == 2
    for g, x in zip(got, xs):
        assert np.allclose(eng.decrypt(g)[:4], eng.decrypt(eng.rotate(x, 1))[:4], atol=1e-3)


def _rotate_by_one(engine, ct):
    return engine.rotate(ct, 1)


def test_a_ciphertext_does_not_pickle():
    """Ciphertexts cross processes only in a backend's serialisation; pickling one (which would copy a
    simulator's whole engine, or fail on SEAL's objects deep inside a worker pool) is refused at once."""
    import pickle

    eng = ckks.create_engine("sim", "n8192", rotations=[1])
    with pytest.raises(TypeError, match="a Ciphertext does not pickle"):
        pickle.dumps({"W": [eng.encrypt(np.ones(4))]})


def test_a_worker_that_dies_is_a_clear_error_not_a_traceback(monkeypatch):
    """A worker killed mid-run (e.g. out of memory under the service's limit): WorkerFailed, whose
    message says what to do (fewer workers, a higher limit)."""
    from hetrain.ckks.errors import WorkerFailed

    import os

    monkeypatch.setenv("HETRAIN_TEST_MAIN_PID", str(os.getpid()))  # spawned workers inherit it
    eng = ckks.create_engine("sim", "n8192", rotations=[1])
    xs = [eng.encrypt(np.full(4, float(i))) for i in range(4)]
    with make_executor(eng, {"x": xs}, 2) as ex:
        with pytest.raises(WorkerFailed, match="--workers 1"):
            ex.map(_die, [(x,) for x in xs])


def _die(engine, ct):
    import os

    if os.getpid() != int(os.environ["HETRAIN_TEST_MAIN_PID"]):
        os._exit(1)
    return ct


def test_a_backend_that_keeps_its_tasks_in_one_process_gets_the_serial_executor(monkeypatch):
    """OpenFHE (and desilo) run each operation on every core themselves, and their ciphertexts do not
    cross processes through the executor: ``process_workers`` False gives the serial executor."""
    eng = ckks.create_engine("sim", "n8192", rotations=[1])
    monkeypatch.setattr(type(eng), "process_workers", False)
    with make_executor(eng, {}, 2) as ex:
        assert isinstance(ex, SerialExecutor) and not isinstance(ex, ProcessExecutor) and ex.workers == 1


def test_a_killed_server_takes_its_worker_processes_with_it(tmp_path):
    """SIGKILL of the server process (an OOM kill, a killed service) leaves no worker holding the job's
    keys and inputs: each pool worker dies with the server (hetrain._proc.die_with_parent)."""
    import os
    import pathlib
    import signal
    import time

    psutil = pytest.importorskip("psutil")
    from hetrain.protocol.events import parse_progress

    kit = _sim_job(tmp_path)
    tests_dir = pathlib.Path(__file__).resolve().parent
    env = {**os.environ, "HETRAIN_TEST_PAUSE_AFTER": "1",
           "PYTHONPATH": os.pathsep.join([str(pathlib.Path(server.__file__).resolve().parents[2]), str(tests_dir)])}
    cmd = server.server_argv(kit.jobdir, trainer_modules=["resume_pause_hook"]) + ["--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:  # the server pauses after its first progress line: its workers are up
            if parse_progress(line) is not None:
                break
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers, "the server started no worker process"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
        time.sleep(0.1)
    alive = [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"worker processes {alive} outlived their server"
