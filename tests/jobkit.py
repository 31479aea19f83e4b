"""Test helper: a job bundle written by the data owner's own steps (protocol/steps.py).

    kit = make_job(tmp_path, X, y, "mlr", {"iterations": 1}, backend="sim", preset="n16384")
    kit.jobdir        # the bundle (what the server gets)
    kit.engine        # the data owner's engine (secret key): decrypt, answer the channel
    kit.handler       # the job's refresh-channel handler (None when it asks nothing)
    kit.job           # the client's half (client_jobs.ClientJob)
    kit.keys          # the key directory (protocol/keys.KeyDir)
    kit.decrypt()     # steps.decrypt on the bundle: a FitResult (twin-checked, released)
"""
from __future__ import annotations

import dataclasses
import pathlib

from hetrain.protocol import steps
from hetrain.protocol.keys import KeyDir


@dataclasses.dataclass
class JobKit:
    keys: KeyDir
    jobdir: pathlib.Path
    job: object
    engine: object

    @property
    def handler(self):
        return self.job.handler(self.engine, self.keys.job_dir(self.job.job_id))

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def decrypt(self, **kw):
        return steps.decrypt(self.keys, self.jobdir, engine=self.engine, job=self.job, **kw)


def make_job(root, X, y, model: str = "mlr", config: dict | None = None, *, backend: str = "sim",
             preset: str = "n16384", refresh: str = "none", jobdir=None, seed: int | None = 0,
             **options) -> JobKit:
    """Keys under ROOT/keys (made once per ROOT and preset), the bundle in ``jobdir`` (default ROOT/job)."""
    root = pathlib.Path(root)
    kdir = root / f"keys-{backend}-{preset}"
    keys = KeyDir.open(kdir) if (kdir / "key.json").exists() else KeyDir.create(kdir, backend, preset, seed=seed)
    jobdir = pathlib.Path(jobdir) if jobdir is not None else root / "job"
    job, engine = steps.encrypt(keys, X, y, jobdir, model=model, config=config, refresh=refresh, progress=False,
                                seed=seed, **options)
    return JobKit(keys, jobdir, job, engine)



def after_rehearsal(monkeypatch) -> list:
    """A list that becomes non-empty once the job's twin bound has been rehearsed on the client
    (protocol/twin_bound.py runs the job's circuit in-process on the sim backend first): hooks that
    mean to act on the real run check it."""
    from hetrain.protocol import twin_bound

    real, done = twin_bound.twin_bound, []

    def bound(job, engine=None):
        b = real(job, engine)
        done.append(True)
        return b

    monkeypatch.setattr(twin_bound, "twin_bound", bound)
    return done


def tamper_decryptions_after_rehearsal(monkeypatch, trainer_cls, delta: float = 0.5) -> None:
    """What a server returning well-formed encryptions of wrong values gives: ``trainer_cls``'s
    decryptions come back + ``delta`` — but only in the real run, not in the rehearsal of the job's
    twin bound, which must see the honest circuit."""
    import numpy as np

    real, real_run = trainer_cls.client_decrypt, after_rehearsal(monkeypatch)

    def tampered(self, engine, outputs, job):
        out = real(self, engine, outputs, job)
        return {k: np.asarray(v) + delta for k, v in out.items()} if real_run else out

    monkeypatch.setattr(trainer_cls, "client_decrypt", tampered)


def run_cli(capsys, *argv, lines: bool = False):
    """(exit status, stdout, stderr) of `hetrain ARGV` run in this process; ``lines``: stdout as a list
    of its stripped lines."""
    from hetrain.cli.main import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, (out.strip().splitlines() if lines else out), err


def mlp_dvr_tasks_job(backend: str = "sim"):
    """An mlp-dvr job with several tasks of each kind for the executors (2 data groups x 5 input blocks
    at n16384-deep, ``backend`` sim or seal): (trainer, engine with the secret key, inputs, job)."""
    import numpy as np

    from hetrain import ckks
    from hetrain.models.mlp_dvr import MLPTrainer

    rng = np.random.default_rng(0)
    n, d, c = 256, 40, 3
    X, Y = rng.normal(size=(n, d)) * 0.3, np.eye(c)[rng.integers(0, c, n)]
    tr = MLPTrainer(hidden=[8], iterations=1)
    eng = ckks.create_engine(backend, "n16384-deep", rotations=tr.plan(n, d, c, "n16384-deep").rotation_steps)
    inputs, job = tr.client_encrypt(eng, X, Y)
    job["data_shape"] = [n, d, c]
    return tr, eng, inputs, job


def random_rows(n: int, d: int, c: int, scale: float = 0.3):
    """n rows of d Gaussian features (standard deviation ``scale``, seed 0) and one-hot labels cycling
    through c classes."""
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)) * scale, np.eye(c)[np.arange(n) % c]


def iris_rows():
    """120 standardised Iris rows (a fixed permutation) and their one-hot labels (3 classes)."""
    import numpy as np
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:120]
    X, y = X[idx], y[idx]
    return (X - X.mean(0)) / X.std(0), np.eye(3)[y]


def tasks_job(model: str, config: dict, backend: str = "sim", preset: str = "n16384", data=None, **engine_options):
    """A job of ``model`` encrypted in this process for the executor tests: (trainer, engine with the
    secret key, inputs as lists, job). ``data``: (X, Y), default 64 rows x 64 features x 10 classes
    (mlr-minibatch with batch_size 32: 2 sample groups x 3 feature blocks per batch at 8,192 slots)."""
    from hetrain import ckks
    from hetrain.models.base import get_trainer

    X, Y = data if data is not None else random_rows(64, 64, 10)
    tr = get_trainer(model)(**config)
    plan = tr.plan(*X.shape, Y.shape[1], ckks.get_params(preset))
    eng = ckks.create_engine(backend, preset, rotations=plan.rotation_steps, **engine_options)
    inputs, job = tr.client_encrypt(eng, X, Y)
    job["data_shape"] = [int(X.shape[0]), int(X.shape[1]), int(Y.shape[1])]
    return tr, eng, {k: list(v) for k, v in inputs.items()}, job


def write_bundle(jobdir, model: str, config: dict, X, Y, preset: str, *, refresh: str = "none",
                 bootstrap_level: int | None = None, engine=None):
    """A job bundle written straight from the trainer on the sim backend (INSECURE), without a refresh
    channel: refresh "none" or "bootstrap" (the sim bootstraps at ``bootstrap_level``); ``engine``: an
    earlier bundle's (the same keys), else a new one. Returns (trainer, engine with the secret key, job)."""
    from hetrain import ckks
    from hetrain.models.base import get_trainer
    from hetrain.protocol import files

    tr = get_trainer(model)(**config)
    eng = engine
    if eng is None:
        plan = tr.plan(*X.shape, Y.shape[1], ckks.get_params(preset))
        opts = {"bootstrap_level": bootstrap_level} if bootstrap_level else {}
        eng = ckks.create_engine("sim", preset, rotations=plan.rotation_steps, seed=0, **opts)
    inputs, job = tr.client_encrypt(eng, X, Y, refresh=refresh != "none")
    job["data_shape"] = [int(X.shape[0]), int(X.shape[1]), int(Y.shape[1])]
    job["refresh"] = refresh
    files.write_job(jobdir, eng, inputs, job)
    return tr, eng, job
