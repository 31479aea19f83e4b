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
