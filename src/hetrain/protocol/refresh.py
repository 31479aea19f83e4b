"""Training past the depth limit: the client's side of the refresh, and the mini-batch MLR job.

Refresh modes (``--refresh``):
* ``none``: the job must fit in one modulus chain (a clear DepthPlanError otherwise);
* ``client``: the server process (``python -m hetrain.protocol.server_main``, public material only)
  sends its state over the refresh channel (refresh_channel.py) when the next iteration would not
  fit; this process (the client, with the secret key) decrypts every ciphertext, lets the trainer
  check the values (optional hook), re-encrypts them at the top level and sends them back;
* ``bootstrap``: the server calls ``engine.bootstrap`` itself (desilo backend), no interaction.

Why no rounding or noise flooding here (DESIGN §5 asks for it on *released* decryptions): the
decrypted values never leave the client. The server receives fresh encryptions, which are
semantically secure whatever they encrypt, so it learns nothing new from a refresh. The only thing
derived from decryptions that the server sees is the continue/stop bit of early stopping.

``ClientRefresher`` is trainer-agnostic (all three trainers use it). The mini-batch MLR job adds
client-side validation: at every epoch end the server sends the state for evaluation (the
``monitor`` hook), the client measures accuracy and loss on its own held-out rows, keeps the best
model and answers continue/stop; when a refresh is due at the same time, one round trip does both.

    r = fit_long(X, y, X_val, y_val, {"epochs": 16, "batch_size": 128}, backend="seal", preset="n16384")
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil
import tempfile
import time
from typing import Callable

import numpy as np

from hetrain.ckks import CKKSError
from hetrain.models.base import DepthPlanError

from . import files
from .server import CHECKPOINT, REFRESH_MODES

# hook signatures on decrypted vectors: name -> list of slot vectors
Check = Callable[[dict, int], None]
Evaluate = Callable[[dict, int, int], bool]


class ClientRefresher:
    """The client's answers on the refresh channel: decrypt everything, check, re-encrypt at the top.

    ``check(vectors, step)``: optional trainer hook that may raise (e.g. the next sigmoid inputs
    would leave the polynomial's interval); ``evaluate(vectors, step, epoch) -> stop``: optional
    epoch-end hook (validation, early stopping). Without an evaluator, epochs never stop early.
    """

    def __init__(self, engine, check: Check | None = None, evaluate: Evaluate | None = None) -> None:
        if not engine.has_secret_key:
            raise CKKSError("the refresh client needs the engine with the secret key")
        self.engine, self.check, self.evaluator = engine, check, evaluate

    def _decrypt(self, state: dict) -> dict:
        return {k: [self.engine.decrypt(ct) for ct in (v if isinstance(v, list) else [v])] for k, v in state.items()}

    def _encrypt(self, state: dict, vectors: dict) -> dict:
        # a fresh encryption at max_level of exactly what was decrypted (unused slots included):
        # to the trainer it is the same state with its levels restored
        fresh = {k: [self.engine.encrypt(v) for v in vs] for k, vs in vectors.items()}
        return {k: (fresh[k] if isinstance(v, list) else fresh[k][0]) for k, v in state.items()}

    def refresh(self, state: dict, step: int | None) -> dict:
        vectors = self._decrypt(state)
        if self.check is not None:
            self.check(vectors, step)
        return self._encrypt(state, vectors)

    def evaluate(self, state: dict, step: int, epoch: int, refresh: bool = False) -> tuple[dict | None, bool]:
        vectors = self._decrypt(state)
        stop = bool(self.evaluator(vectors, step, epoch)) if self.evaluator is not None else False
        if not refresh or stop:
            return None, stop
        if self.check is not None:
            self.check(vectors, step)
        return self._encrypt(state, vectors), stop


def validation_metrics(trainer, W: np.ndarray, X: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy and mean binary cross-entropy (true sigmoid) of W on labelled rows."""
    scores = np.concatenate([np.ones((X.shape[0], 1)), X], axis=1) @ W.T
    acc = float(np.mean(np.argmax(scores, axis=1) == y))
    p = np.clip(1.0 / (1.0 + np.exp(-scores)), 1e-12, 1 - 1e-12)
    Y = np.eye(W.shape[0])[y]
    loss = float(-np.mean(np.sum(Y * np.log(p) + (1 - Y) * np.log(1 - p), axis=1)))
    return {"val_accuracy": acc, "val_loss": loss}


class MLRValidation:
    """Mini-batch MLR on the client: interval check of each refreshed state, validation per epoch,
    the best model so far, early stopping (the trainer's ``patience``)."""

    def __init__(self, trainer, X_val, y_val, n_features: int, n_classes: int, slots: int, X_train=None) -> None:
        self.trainer, self.d, self.c, self.slots = trainer, n_features, n_classes, slots
        self.X_val = None if X_val is None else np.asarray(X_val, dtype=np.float64)
        self.y_val = None if y_val is None else np.asarray(y_val)
        self.X_train = None if X_train is None else np.asarray(X_train, dtype=np.float64)
        self.history: list[dict] = []  # one entry per decryption: step, kind, epoch, val accuracy/loss
        self.best: tuple[float, np.ndarray] | None = None
        self.epochs_without_improvement = 0

    def weights(self, vectors: dict) -> np.ndarray:
        return self.trainer.unpack(vectors["W"], self.d, self.c, self.slots)

    def _record(self, W: np.ndarray, step: int, kind: str) -> dict:
        entry = {"step": step, "kind": kind}
        if self.X_val is not None:
            entry.update(validation_metrics(self.trainer, W, self.X_val, self.y_val))
        self.history.append(entry)
        return entry

    def check(self, vectors: dict, step: int) -> None:
        W = self.weights(vectors)
        if not self.history or self.history[-1]["step"] != step:
            self._record(W, step, "refresh")
        if self.X_train is not None:  # garbage (unseen by anyone) if the next sigmoid inputs leave the interval
            self.trainer.check_weights(W, self.X_train)

    def evaluate(self, vectors: dict, step: int, epoch: int) -> bool:
        W = self.weights(vectors)
        entry = self._record(W, step, "epoch")
        entry["epoch"] = epoch
        score = entry.get("val_accuracy", 0.0)
        if self.best is None or score > self.best[0]:
            self.best, self.epochs_without_improvement = (score, W), 0
        else:
            self.epochs_without_improvement += 1
        patience = self.trainer.config["patience"]
        return patience > 0 and self.epochs_without_improvement >= patience

    def final_weights(self, W_last: np.ndarray) -> np.ndarray:
        """The released model: the best validation epoch (the last state if there is no validation)."""
        if self.best is not None and self.X_val is not None:
            return self.best[1]
        return W_last


@dataclasses.dataclass
class LongFitResult:
    weights: np.ndarray            # released model (best validation epoch), classes × (1 + features)
    last_weights: np.ndarray       # decrypted final state
    twin_weights: np.ndarray       # the plaintext twin after the same number of steps
    history: list[dict]            # the client's validation metrics per decryption
    stats: dict
    preprocessor: object


class LongJob:
    """A mini-batch MLR job: the client here, the server in its own process, the channel between.

    Construction preprocesses, makes keys and refuses what cannot run (before any encryption);
    ``write(jobdir)`` encrypts and writes the bundle; ``train()`` runs (or resumes, from the
    server's JOBDIR/state.ckpt) the server process, answers its refresh and evaluation requests,
    then decrypts and compares with the twin. Call ``train()`` again after a crash to resume.
    """

    def __init__(self, X, y, X_val=None, y_val=None, config: dict | None = None, *, backend: str = "seal",
                 preset="n16384", refresh_mode: str = "client", engine_options: dict | None = None) -> None:
        from hetrain import ckks
        from hetrain.models.minibatch import MiniBatchMLR

        from .preprocess import Preprocessor

        if refresh_mode not in REFRESH_MODES:
            raise DepthPlanError(f"--refresh must be one of {', '.join(REFRESH_MODES)}, got {refresh_mode!r}")
        self.trainer = t = MiniBatchMLR(**(config or {}))
        self.refresh_mode, self.backend = refresh_mode, backend
        self.pre = pre = Preprocessor.fit(X, y)
        self.Xp, self.Y = pre.transform(X), pre.one_hot(y)
        self.Xv = None if X_val is None else pre.transform(X_val)
        self.yv = None if y_val is None else pre.label_index(y_val)
        n, d = self.Xp.shape
        c = self.Y.shape[1]
        params = preset if backend == "desilo" else ckks.get_params(preset)
        t0 = time.perf_counter()
        if backend != "desilo":
            rotations = t.packing(d, c, params.slots).rotation_steps()
        else:  # desilo picks its ring: build once to learn the slot count
            probe = ckks.create_engine(backend, params, (), **(engine_options or {}))
            rotations = t.packing(d, c, probe.slots).rotation_steps()
            del probe
        self.engine = eng = ckks.create_engine(backend, params, rotations, **(engine_options or {}))
        self.keygen_s = time.perf_counter() - t0
        if refresh_mode == "bootstrap" and not eng.can_bootstrap:
            raise DepthPlanError(f"backend {eng.backend_name} cannot bootstrap: use --refresh client "
                                 "(or the desilo backend)")
        per = t.levels_per_step
        if eng.max_level < per:
            raise DepthPlanError(f"one step needs {per} levels, parameters {eng.params.name} have {eng.max_level}")
        plan = t.plan(n, d, c, eng.params)
        if refresh_mode == "none" and plan.iterations > plan.iterations_that_fit:
            raise DepthPlanError(f"{plan.iterations} steps need {plan.iterations * per} levels without refresh; "
                                 f"{eng.params.name} fits {plan.iterations_that_fit}: "
                                 "use --refresh client or --refresh bootstrap")
        if refresh_mode != "client":
            # nobody sees the weights before the end: the client runs the twin first, which raises
            # DataError if a sigmoid input would leave the approximation's interval (garbage, unseen)
            twin_long(t, self.Xp, self.Y, plan.iterations)
        self.validation = MLRValidation(t, self.Xv, self.yv, d, c, eng.slots, X_train=self.Xp)
        self.jobdir: pathlib.Path | None = None
        self.sizes: dict = {}

    def write(self, jobdir) -> None:
        """Encrypt the batches and W₀ and write the job bundle (public material only)."""
        t0 = time.perf_counter()
        inputs, job = self.trainer.client_encrypt(self.engine, self.Xp, self.Y)
        self.encrypt_s = time.perf_counter() - t0
        job["data_shape"] = [int(self.Xp.shape[0]), int(self.Xp.shape[1]), int(self.Y.shape[1])]
        job["refresh"] = self.refresh_mode
        self.job = job
        self.jobdir = pathlib.Path(jobdir)
        self.sizes = files.write_job(self.jobdir, self.engine, inputs, job)
        (self.jobdir / CHECKPOINT).unlink(missing_ok=True)  # a new bundle is a new job: no stale state

    def train(self, on_step=None, env: dict | None = None, handler_wrapper=None) -> LongFitResult:
        """Run the server process on the bundle (resuming from its checkpoint if there is one).

        ``handler_wrapper(handler) -> handler``: tests wrap the client's answers (e.g. to kill the
        server in the middle of a refresh)."""
        from .pipeline import run_server

        v = self.validation
        handler = ClientRefresher(self.engine, check=v.check, evaluate=v.evaluate if self.Xv is not None else None)
        if handler_wrapper is not None:
            handler = handler_wrapper(handler)
        s = run_server(self.jobdir, self.trainer, False, refresh_handler=handler, client_engine=self.engine,
                       on_progress=on_step, env=env)
        outputs = files.unpack_ciphertexts(self.engine, files.read_bytes(self.jobdir / files.OUTPUTS, "server outputs"),
                                           "server outputs")
        last = self.trainer.client_decrypt(self.engine, outputs, self.job)["W"]
        run = s["trainer"]
        nb = int(self.job["n_batches"])
        if self.Xv is not None and not run["stopped_early"]:  # the final epoch's evaluation, on download
            v.evaluate({"W": [self.engine.decrypt(ct) for ct in outputs["W"]]}, run["steps"], -(-run["steps"] // nb))
        weights = v.final_weights(last)
        tw = twin_long(self.trainer, self.Xp, self.Y, run["steps"])
        ch = s["refresh"]
        stats = {"backend": self.backend, "params": self.engine.params.name,
                 "params_record": self.engine.params.to_dict(), "refresh": self.refresh_mode,
                 "key_id": self.engine.key_id, "steps": run["steps"], "resumed_from": run["resumed_from"],
                 "stopped_early": run["stopped_early"], "keygen_s": self.keygen_s, "encrypt_s": self.encrypt_s,
                 "train_s": s["server_train_s"], "step_s": run["step_s"], "refresh_s": run["refresh_s"],
                 "refresh_before_step_s": run["refresh_before_step_s"],
                 "round_trips": ch["round_trips"], "refreshes": ch["refreshes"], "evaluations": ch["evaluations"],
                 "bootstraps": ch["bootstraps"], "bytes_to_client": ch["bytes_to_client"],
                 "bytes_to_server": ch["bytes_to_server"],
                 "client_refresh_s": s.get("client_channel", {}).get("client_seconds", 0.0),
                 "server_wait_s": ch["wait_seconds"],
                 "upload_bytes": self.sizes[files.PUBLIC_CONTEXT] + self.sizes[files.INPUTS],
                 "download_bytes": s["download_bytes"], "server_operations": s["operations"],
                 "server_peak_rss_bytes": s["server_peak_rss_bytes"],
                 "server_engine_has_secret_key": s["engine_has_secret_key"],
                 "twin_max_abs_diff": float(np.max(np.abs(last - tw))), "levels_per_step": run["levels_per_step"]}
        return LongFitResult(weights, last, tw, v.history, stats, self.pre)


def fit_long(X, y, X_val=None, y_val=None, config: dict | None = None, *, backend: str = "seal",
             preset="n16384", refresh_mode: str = "client", workdir=None, engine_options: dict | None = None,
             on_step=None) -> LongFitResult:
    """Mini-batch MLR past the depth limit: client here, server in its own process (see LongJob).

    ``workdir``: the job directory (kept, with the server's checkpoint state.ckpt); default a
    temporary one, removed afterwards. ``on_step(done, total)`` follows the server's steps."""
    job = LongJob(X, y, X_val, y_val, config, backend=backend, preset=preset, refresh_mode=refresh_mode,
                  engine_options=engine_options)
    tmp = None if workdir is not None else tempfile.mkdtemp(prefix="hetrain-long-")
    try:
        job.write(workdir if workdir is not None else tmp)
        return job.train(on_step=on_step)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def twin_long(trainer, X: np.ndarray, Y: np.ndarray, steps: int) -> np.ndarray:
    """The plaintext twin: the same steps over the same batches, in the same order."""
    return trainer.twin(X, Y, steps)["W"]


def fit_long_model(X, y, refresh_mode: str, config: dict, *, backend: str = "seal", preset: str = "auto",
                   validation_fraction: float = 0.2, seed: int | None = None, workdir=None,
                   release_decimals: int | None = None, on_step=None):
    """`hetrain fit --model mlr --refresh client|bootstrap`: hold out validation rows (client side),
    train the mini-batch trainer through the server process, release the best epoch's model as a
    TrainedModel ("mlr" weights). Returns (model, stats)."""
    from hetrain.errors import DataError

    from .client import DEFAULT_RELEASE_DECIMALS, release
    from .model import TrainedModel, model_info

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    idx = np.random.default_rng(seed).permutation(len(y))
    n_val = int(round(validation_fraction * len(y)))
    tr, va = idx[n_val:], idx[:n_val]
    if preset == "auto":
        preset = "desilo-boot" if refresh_mode == "bootstrap" and backend == "desilo" else "n16384"
    r = fit_long(X[tr], y[tr], X[va] if n_val else None, y[va] if n_val else None, config, backend=backend,
                 preset=preset, refresh_mode=refresh_mode, workdir=workdir, on_step=on_step)
    decimals = DEFAULT_RELEASE_DECIMALS if release_decimals is None else release_decimals
    weights = release({"W": r.weights}, decimals, 0.0, np.random.default_rng(seed))
    info = model_info(backend, r.stats["params_record"], release={"decimals": decimals, "noise_std": 0.0},
                      refresh=refresh_mode, training={"trainer": "mlr-minibatch", **config}, history=r.history,
                      n_train=int(len(tr)), n_validation=int(n_val), twin_max_abs_diff=r.stats["twin_max_abs_diff"])
    # the released weights are a plain logistic-regression model: "mlr" predicts with them
    return TrainedModel("mlr", {}, weights, r.preprocessor, r.stats["key_id"], info), r.stats
