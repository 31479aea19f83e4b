"""A whole encrypted fit on one machine: the client here, the server in a separate process.

    result = fit(X, y, model="mlr", config={"iterations": 2}, preset="n16384", backend="seal")
    result.model.save("model.json")

The server is ``python -m hetrain.protocol.server JOBDIR`` in a subprocess that receives only
the job bundle (public context, ciphertexts, job json): no secret key ever crosses. Progress
bars (tqdm) follow encryption, the server's training iterations and decryption.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

import hetrain
from hetrain.ckks import CKKSParams
from hetrain.models.base import Plan, get_trainer, resolve_model

from . import files
from .client import DEFAULT_RELEASE_DECIMALS, Client, release
from .errors import ServerError
from .model import TrainedModel
from .monitor import PeakRSS
from .preprocess import Preprocessor
from .server import PROGRESS_PREFIX
from .transport import make_transport


@dataclasses.dataclass
class FitResult:
    model: TrainedModel
    twin: dict[str, np.ndarray]
    twin_max_abs_diff: float
    plan: Plan
    stats: dict


def make_trainer(model: str, config: dict | None, n_features: int):
    """The trainer for ``--model`` (``mlp`` resolves through its ``layout`` to mlp-dvr/mlp-diagonal)."""
    config = dict(config or {})
    if model == "mlp":
        name = resolve_model(model, config.pop("layout", "auto"), n_features)
    else:
        name = model
    return get_trainer(name)(**config)


def fit(X, y, model: str = "mlr", config: dict | None = None, *, preset: str | CKKSParams = "n16384",
        backend: str = "seal", scale: float = 1.0, seed: int | None = None, progress: bool = True,
        workdir: str | os.PathLike | None = None, release_decimals: int = DEFAULT_RELEASE_DECIMALS,
        noise_std: float = 0.0, force_insecure: bool = False, log=None, server=None) -> FitResult:
    """Preprocess, plan, keygen, encrypt, train in a server process, decrypt, release, compare with the twin.

    ``workdir``: where the job bundle goes (kept); default a temporary directory removed afterwards.
    ``log``: callable for status lines (e.g. the INSECURE warning); default silent.
    ``server``: None (a server subprocess here), the URL of a `hetrain serve` service, or a Transport.
    """
    say = log or (lambda msg: None)
    transport = make_transport(server)
    transport.preflight()  # a wrong --server URL fails now, not after keygen and encryption
    pre = Preprocessor.fit(X, y, scale=scale)
    Xp, Y = pre.transform(X), pre.one_hot(y)
    trainer = make_trainer(model, config, Xp.shape[1])
    client = Client(trainer, backend, preset, force_insecure=force_insecure, seed=seed)
    plan = client.plan(*Xp.shape, Y.shape[1])  # refuses before any key is made
    if backend == "sim":
        say("WARNING: backend 'sim' is an INSECURE simulation: nothing is encrypted (tests/planning only)")

    tmp = None if workdir is not None else tempfile.mkdtemp(prefix="hetrain-job-")
    jobdir = pathlib.Path(workdir if workdir is not None else tmp)
    try:
        with PeakRSS() as mem:
            engine = client.keygen(plan)
            with tqdm(total=plan.n_input_ciphertexts or None, desc="encrypt", unit="ct", disable=not progress) as bar:
                inputs, job = client.encrypt(Xp, Y, on_ciphertext=lambda: bar.update(1))
            client_ops = engine.counters.as_dict()
            t0 = time.perf_counter()
            sizes = files.write_job(jobdir, engine, inputs, job)
            write_s = time.perf_counter() - t0
            del inputs
            t0 = time.perf_counter()
            sstats = transport.run(jobdir, trainer, progress, mem)
            server_wall_s = time.perf_counter() - t0
            outputs = client.read_outputs(jobdir)
            n_out = sum(len(v) for v in outputs.values())
            with tqdm(total=n_out, desc="decrypt", unit="ct", disable=not progress) as bar:
                raw = client.decrypt(outputs, job, on_ciphertext=lambda: bar.update(1))
        weights = release(raw, release_decimals, noise_std, np.random.default_rng(seed))
        t0 = time.perf_counter()
        twin = {k: np.asarray(v, dtype=np.float64) for k, v in trainer.twin(Xp, Y).items()}
        twin_s = time.perf_counter() - t0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    # the headline measures encryption fidelity (raw decryption); release rounding adds <= 0.5e-{decimals}
    diff = twin_max_abs_diff(raw, twin)
    stats = {
        "backend": backend, "params": client.params.name, "model": trainer.name,
        "keygen_s": client.timings["keygen_s"], "encrypt_s": client.timings["encrypt_s"], "write_job_s": write_s,
        "server_wall_s": server_wall_s, "server_train_s": sstats["server_train_s"],
        "server_load_s": sstats["server_load_s"], "decrypt_s": client.timings["decrypt_s"], "twin_s": twin_s,
        "client_peak_rss_bytes": mem.peaks["client"],
        "server_peak_rss_bytes": max(mem.peaks.get("server", 0), sstats["server_peak_rss_bytes"]),
        "upload_key_bytes": sizes[files.PUBLIC_CONTEXT], "upload_key_parts": sizes["key_parts"],
        "upload_data_bytes": sizes[files.INPUTS] + sizes[files.JOB], "download_bytes": sstats["download_bytes"],
        "rotation_steps": sorted(plan.rotation_steps), "levels_needed": plan.levels_needed,
        "levels_available": plan.levels_available, "levels_per_iteration": plan.levels_per_iteration,
        "server_operations": sstats["operations"], "client_operations": client_ops,
        "twin_max_abs_diff": diff, "released_max_abs_diff": twin_max_abs_diff(weights, twin),
    }
    info = {"backend": backend, "params": client.params.to_dict(), "hetrain_version": hetrain.__version__,
            "release": {"decimals": release_decimals, "noise_std": noise_std},
            "n_train": int(Xp.shape[0]), "twin_max_abs_diff": diff}
    trained = TrainedModel(trainer.name, dict(trainer.config), weights, pre, engine.key_id, info)
    return FitResult(trained, twin, diff, plan, stats)


def twin_max_abs_diff(weights: dict[str, np.ndarray], twin: dict[str, np.ndarray]) -> float:
    """Max |decrypted - twin| over the arrays both name (a twin may return extras, e.g. diagnostics)."""
    common = sorted(set(weights) & set(twin))
    if not common:
        raise ValueError(f"decrypted weights {sorted(weights)} and twin {sorted(twin)} share no array")
    return max(float(np.max(np.abs(weights[k] - np.reshape(twin[k], np.shape(weights[k]))))) for k in common)


def server_command(jobdir, trainer) -> list[str]:
    cmd = [sys.executable, "-m", "hetrain.protocol.server", os.fspath(jobdir), "--progress"]
    module = type(trainer).__module__
    if not module.startswith("hetrain.models."):  # a trainer outside the catalog (tests, plugins)
        cmd += ["--trainer-module", module]
    return cmd


def run_server(jobdir: pathlib.Path, trainer, progress: bool, mem: PeakRSS | None = None) -> dict:
    """Run the server process on ``jobdir``; returns its stats or raises ServerError with its message."""
    env = dict(os.environ)
    # the child imports what this process can (editable installs, test modules), nothing more
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    log_path = jobdir / "server.log"
    with open(log_path, "wb") as log_file, tqdm(desc="server train", unit="it", disable=not progress) as bar:
        proc = subprocess.Popen(server_command(jobdir, trainer), stdout=subprocess.PIPE, stderr=log_file,
                                stdin=subprocess.DEVNULL, env=env, text=True, bufsize=1)
        if mem is not None:
            mem.watch("server", proc.pid)
        for line in proc.stdout:
            if line.startswith(PROGRESS_PREFIX):
                done, total, *msg = line[len(PROGRESS_PREFIX):].split(" ", 2)
                bar.total = int(total)
                bar.n = int(done)
                if msg:
                    bar.set_postfix_str(msg[0].strip(), refresh=False)
                bar.refresh()
        rc = proc.wait()
    if rc != 0:
        err_path = jobdir / files.SERVER_ERROR
        if err_path.exists():
            err = json.loads(err_path.read_text())
            detail = err["message"] if err.get("user_error") else f"{err['type']}: {err['message']}\n{err.get('traceback') or ''}"
            raise ServerError(f"server failed: {detail}")
        tail = log_path.read_text(errors="replace")[-2000:]
        raise ServerError(f"server process exited with status {rc}:\n{tail}")
    return json.loads((jobdir / files.SERVER_STATS).read_text())
