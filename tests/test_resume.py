"""Every trainer checkpoints and resumes after a kill (issue 12), and declares its capabilities.

Each case writes a job bundle (sim backend: INSECURE, same arithmetic), starts the server process,
SIGKILLs it after its k-th progress line (the server pauses there: tests/resume_pause_hook.py),
starts it again with --resume and checks that the outputs decrypt to exactly those of an
uninterrupted run of the same bundle, and that the server's stats say where it resumed."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess

import numpy as np
import pytest
from sklearn.datasets import load_iris

from hetrain import ckks
from hetrain.models.base import SERVER_HOOKS, Trainer, get_trainer, server_hooks
from hetrain.protocol import files
from hetrain.protocol.events import parse_progress
from hetrain.protocol.server import CHECKPOINT, server_argv

from jobkit import write_bundle

TESTS = pathlib.Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
PAUSE_MODULE = "resume_pause_hook"


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]), **extra}


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:120]
    X, y = X[idx], y[idx]
    return (X - X.mean(0)) / X.std(0), np.eye(3)[y]


def _small(n=20, d=8, c=3):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, d)), np.eye(c)[np.arange(n) % c]


# name: (model, config, preset, refresh, bootstrap_level, data, kill after this many progress lines,
#        the iteration/step the resumed run starts from)
CASES = {
    # one chain, no refresh: progress "0 3" before the first iteration, then "t 3" after iteration t
    "mlr": ("mlr", {"iterations": 3, "sigmoid": "deg3:16"}, "n16384-deep", "none", None, "iris", 3, 2),
    # 2 batches x 3 epochs, a step takes 4 of 7 levels: a bootstrap before every step but the first
    "mlr-minibatch": ("mlr-minibatch", {"epochs": 3, "batch_size": 64, "learning_rate": 0.5, "patience": 0},
                      "n16384", "bootstrap", 7, "iris", 3, 3),
    # Nesterov: the look-ahead V is state too; two iterations (9 + 10 levels) per n32768 chain
    "mlp-dvr": ("mlp-dvr", {"hidden": [4], "iterations": 4, "momentum": "nesterov"}, "n32768", "bootstrap", 19,
                "small", 3, 3),
    # the first (W2-only) step and one full iteration per n16384-deep chain
    "mlp-diagonal": ("mlp-diagonal", {"iterations": 4}, "n16384-deep", "bootstrap", 9, "iris", 2, 2),
}


def _bundle(jobdir, case, iris, engine=None, X=None):
    model, config, preset, refresh, boot, data, _, _ = CASES[case]
    Xd, Y = iris if data == "iris" else _small()
    X = Xd if X is None else X
    return write_bundle(jobdir, model, config, X, Y, preset, refresh=refresh, bootstrap_level=boot, engine=engine)


def _server(jobdir, *, resume=False, pause_after=None, check=True):
    """Run the server process to the end; returns (returncode, stderr)."""
    cmd = server_argv(jobdir, progress=False, resume=resume)
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r.returncode, r.stderr


def _kill_after(jobdir, k: int) -> list[str]:
    """Start the server, SIGKILL it once it has printed its k-th progress line; returns those lines."""
    cmd = server_argv(jobdir, trainer_modules=[PAUSE_MODULE])
    proc = subprocess.Popen(cmd, env=_env(HETRAIN_TEST_PAUSE_AFTER=str(k)), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in proc.stdout:
            if parse_progress(line) is not None:
                lines.append(line.strip())
                if len(lines) == k:
                    break
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # our own child, like an OOM kill
        proc.wait()
        proc.stdout.close()
    assert len(lines) == k, f"the server finished after {lines} before its progress line {k}"
    assert proc.returncode == -signal.SIGKILL
    return lines


def _decrypted(trainer, engine, jobdir, job) -> dict:
    outputs = files.unpack_ciphertexts(engine, (jobdir / files.OUTPUTS).read_bytes(), "outputs")
    return trainer.client_decrypt(engine, outputs, job)


def _stats(jobdir) -> dict:
    return json.loads((jobdir / files.SERVER_STATS).read_text())


@pytest.mark.parametrize("case", list(CASES))
def test_killed_server_resumes_to_the_uninterrupted_result(case, iris, tmp_path):
    *_, kill_after, resumed_from = CASES[case]
    first = tmp_path / "killed"
    trainer, engine, job = _bundle(first, case, iris)
    whole = tmp_path / "whole"
    shutil.copytree(first, whole)  # the same bundle (same ciphertexts) trained without interruption

    _server(whole)
    expected = _decrypted(trainer, engine, whole, job)
    assert _stats(whole)["trainer"]["resumed_from"] == 0
    if CASES[case][3] == "bootstrap":
        assert _stats(whole)["refresh"]["bootstraps"] > 0  # the run needs more than one chain

    lines = _kill_after(first, kill_after)
    assert (first / CHECKPOINT).exists() and not (first / files.OUTPUTS).exists(), lines
    _server(first, resume=True)
    stats = _stats(first)
    assert stats["trainer"]["resumed_from"] == resumed_from > 0
    got = _decrypted(trainer, engine, first, job)
    assert got.keys() == expected.keys()
    for k in expected:  # the same arithmetic in the same order: bit for bit on the noiseless sim
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)


def test_a_checkpoint_without_resume_is_refused_before_any_work(iris, tmp_path):
    trainer, engine, job = _bundle(tmp_path, "mlp-diagonal", iris)
    _kill_after(tmp_path, 2)
    before = (tmp_path / CHECKPOINT).read_bytes()
    audit = tmp_path.parent / f"{tmp_path.name}.audit"
    env = _env(HETRAIN_SERVER_AUDIT=str(audit))
    r = subprocess.run(server_argv(tmp_path, progress=False), env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "--resume" in line and f"delete {tmp_path / CHECKPOINT}" in line and "start over" in line, r.stderr
    err = json.loads((tmp_path / files.SERVER_ERROR).read_text())
    assert err["type"] == "BundleError" and err["user_error"]
    opened = {pathlib.Path(p).name for p in audit.read_text().split()}
    assert files.INPUTS not in opened and files.PUBLIC_CONTEXT not in opened  # refused before reading the job
    assert (tmp_path / CHECKPOINT).read_bytes() == before and not (tmp_path / files.OUTPUTS).exists()
    # the fix the message names works: --resume continues
    _server(tmp_path, resume=True)
    assert _stats(tmp_path)["trainer"]["resumed_from"] == 2


def test_resume_without_a_checkpoint_starts_from_the_beginning_and_says_so(iris, tmp_path):
    trainer, engine, job = _bundle(tmp_path, "mlr", iris)
    rc, err = _server(tmp_path, resume=True)
    said = [ln for ln in err.splitlines() if "--resume" in ln]
    assert len(said) == 1 and "no checkpoint" in said[0] and "starting from the beginning" in said[0], err
    assert _stats(tmp_path)["trainer"]["resumed_from"] == 0
    np.testing.assert_allclose(_decrypted(trainer, engine, tmp_path, job)["W"], trainer.twin(*iris)["W"], atol=1e-9)


def test_a_checkpoint_of_other_keys_or_another_job_is_refused(iris, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _, engine_a, _ = _bundle(a, "mlr", iris)
    _kill_after(a, 2)
    _bundle(b, "mlr", iris)  # the same job under other keys
    shutil.copy(a / CHECKPOINT, b / CHECKPOINT)
    rc, err = _server(b, resume=True, check=False)
    assert rc == 2 and "written under key" in err and "delete it" in err, err
    assert not (b / files.OUTPUTS).exists()
    # same keys, other data: a checkpoint binds to its bundle, not only to its key
    _bundle(c, "mlr", iris, engine=engine_a, X=iris[0][::-1].copy())
    shutil.copy(a / CHECKPOINT, c / CHECKPOINT)
    rc, err = _server(c, resume=True, check=False)
    assert rc == 2 and "another job bundle" in err, err


# ---------------------------------------------------------------------- capabilities
def test_server_hooks_reads_the_declared_capabilities_not_the_signature():
    class Declared(Trainer):
        name = "caps-declared"
        capabilities = frozenset({"checkpoint"})

        def plan(self, *a): ...
        def client_encrypt(self, engine, X, Y, *, refresh=False): ...
        def client_decrypt(self, *a): ...
        def twin(self, *a): ...
        def predict_scores(self, *a): ...

        def server_train(self, engine, inputs, job, progress=None, *, refresh=None, monitor=None, checkpoint=None):
            ...

    class Undeclared(Declared):  # inherits the declaration, whatever its signature says
        def server_train(self, engine, inputs, job, progress=None):
            ...

    assert server_hooks(Declared()) == server_hooks(Declared) == {"checkpoint"}
    assert server_hooks(Undeclared()) == {"checkpoint"}
    assert Trainer.capabilities == frozenset()
    with pytest.raises(TypeError, match="capabilities must be a frozenset"):
        type("Bad", (Declared,), {"capabilities": frozenset({"teleport"})})
    with pytest.raises(TypeError, match="capabilities must be a frozenset"):
        type("Bad", (Declared,), {"capabilities": {"refresh"}})
    expected = {"mlr": {"checkpoint", "executor"}, "mlr-minibatch": {"refresh", "monitor", "checkpoint", "executor"},
                "mlp-dvr": {"refresh", "checkpoint", "executor"}, "mlp-diagonal": {"refresh", "checkpoint"}}
    for model, caps in expected.items():
        cls = get_trainer(model)
        assert "capabilities" in cls.__dict__ and server_hooks(cls) == caps <= SERVER_HOOKS, model


def test_the_context_variable_is_gone():
    import hetrain.models.base as base

    assert not hasattr(base, "refresh_available") and not hasattr(base, "_REFRESH")


@pytest.mark.parametrize("model,cfg", [("mlp-diagonal", {"iterations": 4}),
                                       ("mlp-dvr", {"hidden": [4], "iterations": 3, "momentum": "none"})])
def test_client_encrypt_takes_the_refresh_flag_explicitly(model, cfg, iris):
    from hetrain.models.base import DepthPlanError

    X, Y = iris if model == "mlp-diagonal" else _small()
    tr = get_trainer(model)(**cfg)
    plan = tr.plan(*X.shape, Y.shape[1], ckks.get_params("n16384-deep"))
    eng = ckks.create_engine("sim", "n16384-deep", rotations=plan.rotation_steps)
    with pytest.raises(DepthPlanError):
        tr.client_encrypt(eng, X, Y)  # default: the whole run must fit one chain
    inputs, job = tr.client_encrypt(eng, X, Y, refresh=True)
    assert inputs


# ---------------------------------------------------------------------- real SEAL (one small case)
def test_mlr_resumes_on_seal(iris, tmp_path):
    """SEAL's evaluation is deterministic given its input ciphertexts, and a checkpoint stores them
    exactly: the resumed run's result equals the uninterrupted one's up to CKKS decryption noise."""
    X, Y = iris
    trainer = get_trainer("mlr")(iterations=2, sigmoid="deg3:16")
    plan = trainer.plan(*X.shape, Y.shape[1], ckks.get_params("n16384"))
    engine = ckks.create_engine("seal", "n16384", rotations=plan.rotation_steps)
    inputs, job = trainer.client_encrypt(engine, X, Y)
    job["data_shape"], job["refresh"] = [*X.shape, Y.shape[1]], "none"
    first, whole = tmp_path / "killed", tmp_path / "whole"
    files.write_job(first, engine, inputs, job)
    del inputs
    shutil.copytree(first, whole)
    _server(whole)
    _kill_after(first, 2)  # "0 2", then "1 2" after the first iteration's checkpoint
    _server(first, resume=True)
    assert _stats(first)["trainer"]["resumed_from"] == 1
    got, expected = (_decrypted(trainer, engine, d, job)["W"] for d in (first, whole))
    assert np.abs(got - expected).max() <= 1e-6
    assert np.abs(got - trainer.twin(X, Y)["W"]).max() < 1e-3
