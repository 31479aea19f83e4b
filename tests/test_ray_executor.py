"""Every machine: the executor on Ray (hetrain.ckks.ray_executor) gives the serial run's results and
operation counts, under the sim and under real SEAL; the CLI and the service reach it; a dead actor
or a missing Ray is a clear error; an actor that dies is restarted and its chunk run again. One local Ray of 2 CPUs serves the module (tests needing it are
skipped where Ray is not installed: the Python 3.10 suite)."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import sys

import numpy as np
import pytest

from hetrain import ckks
from hetrain.ckks.errors import ExecutorUnavailable, WorkerFailed
from hetrain.ckks.executor import SerialExecutor, make_executor
from hetrain.cli.main import main as cli_main
from hetrain.models.mlr import MLRTrainer
from hetrain.protocol import files, server

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install 'hetrain[ray]'; the Python 3.10 test command leaves it out)")
STORE_BYTES = 300 * 2 ** 20


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray of 2 CPUs, a 300 MB object store, no dashboard, no log forwarding; stopped after the module."""
    ray = pytest.importorskip("ray")
    from hetrain.ckks.ray_executor import connect

    assert connect("local", num_cpus=2, object_store_bytes=STORE_BYTES)
    yield ray
    ray.shutdown()


def _data(n=128, d=60, c=3, seed=0):  # 2 sample groups x 2 feature blocks at n16384
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.eye(c)[rng.integers(0, c, n)]


def _serial_and_ray(tr, eng, inputs, job):
    runs = {}
    for kind, workers in (("process", 1), ("ray", 2)):
        with make_executor(eng, inputs, workers, kind=kind) as ex:
            eng.counters.reset()
            out = tr.server_train(eng, inputs, job, executor=ex)
            runs[kind] = (eng.counters.snapshot(), {k: [eng.decrypt(ct) for ct in v] for k, v in out.items()},
                          {k: [ct.level for ct in v] for k, v in out.items()}, ex)
    return runs["process"], runs["ray"]


def _assert_identical(serial, on_ray):
    from hetrain.ckks.ray_executor import RayExecutor

    (c1, w1, l1, ex1), (c2, w2, l2, ex2) = serial, on_ray
    assert isinstance(ex1, SerialExecutor) and isinstance(ex2, RayExecutor) and ex2.started_workers == 2
    assert c1 == c2 and c1["rotate"] > 0 and c1["multiply"] > 0
    assert l1 == l2 and w1.keys() == w2.keys()
    for k in w1:
        for a, b in zip(w1[k], w2[k]):  # bit-identical: the same operations on the same ciphertexts
            assert np.array_equal(a, b)
    assert ex2.timing["worker_compute_s"] > 0  # the actor did part of the work


@needs_ray
@pytest.mark.parametrize("backend,preset", [("sim", "n16384"), ("seal", "n16384")])
def test_mlr_on_ray_gives_the_serial_weights_and_counts(ray_cluster, backend, preset):
    X, Y = _data()
    tr = MLRTrainer(iterations=2 if backend == "sim" else 1)
    eng = ckks.create_engine(backend, preset, rotations=tr.plan(*X.shape, Y.shape[1], preset).rotation_steps)
    inputs, job = tr.client_encrypt(eng, X, Y)
    _assert_identical(*_serial_and_ray(tr, eng, inputs, job))


@needs_ray
def test_mlp_dvr_on_ray_gives_the_serial_weights_and_counts(ray_cluster):
    from jobkit import mlp_dvr_tasks_job

    tr, eng, inputs, job = mlp_dvr_tasks_job()
    serial, on_ray = _serial_and_ray(tr, eng, inputs, job)
    _assert_identical(serial, on_ray)
    assert serial[1].keys() == {"W1", "b1", "W2", "b2"}


def _sim_job(tmp_path):
    from jobkit import make_job

    X, Y = _data()
    return make_job(tmp_path, X, Y.argmax(1), "mlr", {"iterations": 2}, backend="sim", preset="n16384")


def _outputs(kit, stats):
    blob = (kit.jobdir / files.OUTPUTS).read_bytes()
    return ([kit.engine.decrypt(ct) for ct in files.unpack_ciphertexts(kit.engine, blob, "out")["W"]],
            {k: v["count"] for k, v in stats["operations"].items()})


@needs_ray
def test_server_on_ray_ships_the_job_files_and_writes_the_serial_outputs(ray_cluster, tmp_path):
    kit = _sim_job(tmp_path)
    outs = {}
    for kind, workers in (("process", 1), ("ray", 2)):
        for name in files.SERVER_FILES:
            (kit.jobdir / name).unlink(missing_ok=True)
        stats = server.run_job(kit.jobdir, workers=workers, executor=kind)
        assert stats["workers"] == workers
        outs[kind] = _outputs(kit, stats)
    assert stats["executor"] == "RayExecutor" and stats["ray_nodes"] == 1
    assert outs["process"][1] == outs["ray"][1]
    for a, b in zip(outs["process"][0], outs["ray"][0]):
        assert np.array_equal(a, b)
    assert ray_cluster.is_initialized()  # the server joined the test's Ray: it did not stop it


def test_job_files_that_do_not_match_the_manifest_are_refused_by_the_bytes_loader(tmp_path):
    from hetrain.protocol.errors import BundleError

    kit = _sim_job(tmp_path)
    public, inputs, sha = files.job_public_bytes(kit.jobdir)
    engine, loaded = files.load_job_public_bytes(public, inputs, sha)
    assert not engine.has_secret_key and {k: len(v) for k, v in loaded.items()} == {
        k: len(v) for k, v in files.load_job_public(kit.jobdir)[1].items()}
    tampered = inputs[:-1] + bytes([inputs[-1] ^ 1])
    with pytest.raises(BundleError, match="inputs.bin does not match the manifest"):
        files.load_job_public_bytes(public, tampered, sha)


@needs_ray
def test_cli_train_on_a_local_ray_end_to_end(ray_cluster, tmp_path, capsys):
    """`hetrain train --executor ray --ray-address local`: the server process starts a Ray of its own
    (this machine's CPUs), trains, stops it; the data owner decrypts the serial run's weights."""
    kit = _sim_job(tmp_path)
    serial = _outputs(kit, server.run_job(kit.jobdir, workers=1))
    for name in files.SERVER_FILES:
        (kit.jobdir / name).unlink(missing_ok=True)
    assert cli_main(["train", "--job", str(kit.jobdir), "--executor", "ray", "--ray-address", "local",
                     "--workers", "2", "--quiet"]) == 0
    assert "trained in" in capsys.readouterr().out
    stats = json.loads((kit.jobdir / files.SERVER_STATS).read_text())
    assert stats["executor"] == "RayExecutor" and stats["workers"] == 2
    got = _outputs(kit, stats)
    assert got[1] == serial[1]
    for a, b in zip(got[0], serial[0]):
        assert np.array_equal(a, b)
    assert kit.decrypt().twin_max_abs_diff < 1e-3  # the data owner releases it: decrypted beside its twin


@needs_ray
def test_a_dead_actor_is_a_clear_error(ray_cluster):
    eng = ckks.create_engine("sim", "n8192", rotations=[1])
    xs = [eng.encrypt(np.full(4, float(i))) for i in range(4)]
    with make_executor(eng, {"x": xs}, 2, kind="ray") as ex:
        assert ex.wait_started() == 2
        ray_cluster.kill(ex._actors[0])
        with pytest.raises(WorkerFailed, match=r"a Ray actor of this server died during training .*--workers 1"):
            ex.map(_rotate, [(x,) for x in xs])


def _rotate(engine, ct):
    return engine.rotate(ct, 1)


@needs_ray
def test_an_actor_that_dies_is_restarted_and_its_chunk_run_again(ray_cluster, tmp_path):
    """The actor running the second chunk dies in it; Ray restarts the actor (it loads the job
    again) and runs the chunk again: the map returns what the serial run returns. The killed
    process really was an actor (its pid is not this one's) and the restarted one is another."""
    def _die_once(engine, marker, here, ct):  # defined here: Ray sends it by value (actors cannot import tests)
        """Rotate ``ct`` by 1; the first call on an actor (a process other than ``here``, the test's)
        kills that actor's process instead (``marker``: a file that records the death)."""
        path = pathlib.Path(marker)
        if os.getpid() != here and not path.exists():
            path.write_text(str(os.getpid()))
            os._exit(1)
        return engine.rotate(ct, 1)

    eng = ckks.create_engine("sim", "n8192", rotations=[1])
    xs = [eng.encrypt(np.full(4, float(i))) for i in range(4)]
    marker = tmp_path / "died"
    with make_executor(eng, {"x": xs}, 2, kind="ray") as ex:
        before = {pid for pid, _ in ray_cluster.get([a.started.remote() for a in ex._actors])}
        got = ex.map(_die_once, [(x,) for x in xs], shared=(str(marker), os.getpid()))  # chunk 1 runs here
        after = {pid for pid, _ in ray_cluster.get([a.started.remote() for a in ex._actors])}
    assert marker.exists() and int(marker.read_text()) in before and int(marker.read_text()) != os.getpid()
    assert before.isdisjoint(after)
    for g, x in zip(got, xs):
        assert np.array_equal(eng.decrypt(g), eng.decrypt(eng.rotate(x, 1)))


@needs_ray
def test_an_error_in_a_task_on_an_actor_is_raised_as_it_was(ray_cluster):
    """A task's own error (here a rotation without its Galois key) comes back as the serial run raises
    it: the same class and message, without Ray's wrapping."""
    from hetrain.ckks.engine import Engine
    from hetrain.ckks.errors import MissingRotationKey

    eng = ckks.create_engine("sim", "n8192", rotations=[1])
    xs = [eng.encrypt(np.full(4, float(i))) for i in range(4)]
    with make_executor(eng, {"x": xs}, 2, kind="ray") as ex:
        with pytest.raises(MissingRotationKey) as raised:
            ex.map(Engine.rotate, [(x, 1 if i < 2 else 3) for i, x in enumerate(xs)])  # tasks 2, 3: the actor's
    with pytest.raises(MissingRotationKey) as serial:
        eng.rotate(xs[0], 3)
    assert str(raised.value) == str(serial.value)


@needs_ray
def test_more_workers_than_the_cluster_has_cpus_is_refused(ray_cluster):
    eng = ckks.create_engine("sim", "n8192")
    with pytest.raises(ExecutorUnavailable, match=r"--workers 10 needs 9 Ray actors .* free CPU\(s\) of 2"):
        make_executor(eng, {}, 10, kind="ray")


def test_executor_kind_must_be_known():
    eng = ckks.create_engine("sim", "n8192")
    with pytest.raises(ValueError, match="executor must be one of process, ray, got 'dask'"):
        make_executor(eng, {}, 2, kind="dask")


def test_cli_without_ray_names_the_extra_to_install(tmp_path, capsys, monkeypatch):
    kit = _sim_job(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the package
    rc = cli_main(["train", "--job", str(kit.jobdir), "--executor", "ray", "--ray-address", "local", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "pip install 'hetrain[ray]'" in err[0] and "--executor ray" in err[0]
    assert not (kit.jobdir / files.OUTPUTS).exists()


def test_cli_ray_address_needs_the_ray_executor(tmp_path, capsys):
    kit = _sim_job(tmp_path)
    rc = cli_main(["train", "--job", str(kit.jobdir), "--ray-address", "local", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "--ray-address local" in err[0] and "add --executor ray" in err[0]


def test_server_argv_carries_the_executor_options(tmp_path):
    argv = server.server_argv(tmp_path, progress=False, workers=3, executor="ray", ray_address="10.0.0.1:6379")
    assert argv[-6:] == ["--workers", "3", "--executor", "ray", "--ray-address", "10.0.0.1:6379"]
    assert "--executor" not in server.server_argv(tmp_path, progress=False)


def test_service_runs_its_jobs_with_the_ray_executor(tmp_path, monkeypatch):
    """serve --ray-address: each job's server gets --executor ray --ray-address (JobQueue passes them)."""
    from hetrain.cli import serve
    from hetrain.errors import HetrainUserError
    from hetrain.service import jobs

    with pytest.raises(HetrainUserError, match="--ray-address 'local': .*ray start --head"):
        serve.ray_job_workers("local", 1)
    seen = {}

    def fake_start(jobdir, **kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(jobs.ServerProcess, "start", staticmethod(fake_start))
    q = jobs.JobQueue(tmp_path / "w", workers=1, job_workers=3, ray_address="auto")
    try:
        job = jobs.Job(id="j" * 16, dir=tmp_path / "w" / "jobs" / "j", task="train")
        job.dir.mkdir(parents=True)
        (job.dir / files.JOB).write_text("{}")
        try:
            q._run(job)
        except RuntimeError:
            pass
    finally:
        q.close()
    assert seen["executor"] == "ray" and seen["ray_address"] == "auto" and seen["workers"] == 3


@needs_ray
def test_serve_counts_the_cluster_cpus_for_each_job(ray_cluster, monkeypatch):
    from hetrain.cli import serve
    from hetrain.ckks import ray_executor

    monkeypatch.setattr(ray_executor, "connect", lambda address, **kw: False)  # the test's cluster, kept
    assert serve.ray_job_workers("auto", 1) == 3  # the job's server and 2 actors
    assert serve.ray_job_workers("auto", 2) == 2


@needs_ray
def test_mlr_minibatch_on_ray_gives_the_serial_weights_and_counts(ray_cluster):
    from jobkit import tasks_job

    cfg = {"epochs": 1, "batch_size": 32, "momentum": 0.5, "weight_decay": 0.01, "patience": 0}
    tr, eng, inputs, job = tasks_job("mlr-minibatch", cfg, "sim", "n16384-deep")  # 2 steps, 2 groups x 3 blocks
    serial, on_ray = _serial_and_ray(tr, eng, inputs, job)
    _assert_identical(serial, on_ray)
    assert serial[1].keys() == {"W", "D"}
