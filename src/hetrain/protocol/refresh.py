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

from hetrain.circuits.approx import IntervalError
from hetrain.ckks import CKKSError
from hetrain.models.base import DepthPlanError
from hetrain.models.early_stopping import EarlyStopping, validation_metrics
from hetrain.models.minibatch_plan import unwhiten

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
            vectors = self.check(vectors, step) or vectors
        return self._encrypt(state, vectors)

    def evaluate(self, state: dict, step: int, epoch: int, refresh: bool = False) -> tuple[dict | None, bool]:
        vectors = self._decrypt(state)
        stop = bool(self.evaluator(vectors, step, epoch)) if self.evaluator is not None else False
        if not refresh or stop:
            return None, stop
        if self.check is not None:
            vectors = self.check(vectors, step) or vectors
        return self._encrypt(state, vectors), stop


class MLRValidation:
    """Mini-batch MLR on the client: the checks at each refresh, validation per epoch, the best
    model so far, early stopping (models/early_stopping.py) and the wall-time budget.

    At each refresh (``check``) the client *retracts* the weights when the next step's sigmoid
    inputs would come within 10% of the interval's end (MiniBatchMLR.retraction: each class's W
    and D scaled so that max |x·w_c| = 0.9·bound over the training rows): the run adapts instead
    of dying, says so in ``log`` and the history, and the twin replays the same retraction. The
    server only ever receives fresh encryptions: no decrypted-derived number crosses to it, and
    the continue/stop bit of ``evaluate`` is the only answer it reads.
    """

    def __init__(self, trainer, X_val, y_val, n_features: int, n_classes: int, slots: int, X_train=None, *,
                 retract: bool = True, time_limit: float | None = None, log=None) -> None:
        self.trainer, self.d, self.c, self.slots = trainer, n_features, n_classes, slots
        self.X_val = None if X_val is None else np.asarray(X_val, dtype=np.float64)
        self.y_val = None if y_val is None else np.asarray(y_val)
        self.X_train = None if X_train is None else np.asarray(X_train, dtype=np.float64)
        self.retract, self.time_limit, self.log = retract, time_limit, log or (lambda msg: None)
        self.history: list[dict] = []  # one entry per decryption: step, kind, epoch, val accuracy/loss
        self.best: tuple[float, np.ndarray] | None = None
        self.best_step: int | None = None  # the step count of ``best`` (its twin: twin_long(..., best_step))
        self.stopper = EarlyStopping(trainer.config["patience"])
        self.started = time.monotonic()
        self.stop_reason: str | None = None  # why training ended before its planned epochs

    def weights(self, vectors: dict) -> np.ndarray:
        return self.trainer.unpack(vectors["W"], self.d, self.c, self.slots)

    def _record(self, W: np.ndarray, step: int, kind: str) -> dict:
        entry = {"step": step, "kind": kind}
        if self.X_val is not None:
            entry.update(validation_metrics(W, self.X_val, self.y_val))
        self.history.append(entry)
        return entry

    def check(self, vectors: dict, step: int) -> dict:
        """The refresh hook: record, retract if the next step would come near the interval's end
        (or refuse when retraction is off), return the vectors to re-encrypt."""
        W = self.weights(vectors)
        if not self.history or self.history[-1]["step"] != step:
            self._record(W, step, "refresh")
        if self.X_train is None:
            return vectors
        if self.retract:
            s = self.trainer.retraction(W, self.X_train)
            if np.any(s < 1.0):
                pk = self.trainer.packing(self.d, self.c, self.slots)
                factors = pk.pack_weights(np.repeat(s[:, None], self.d + 1, axis=1))
                vectors = {k: [v * f for v, f in zip(vs, factors)] for k, vs in vectors.items()}
                W = self.weights(vectors)
                self.history.append({"step": step, "kind": "retract", "classes": int(np.sum(s < 1.0)),
                                     "min_factor": round(float(s.min()), 4)})
                self.log(f"step {step}: weights of {int(np.sum(s < 1.0))} class(es) scaled by down to "
                         f"{float(s.min()):.3f} to keep the next sigmoid inputs inside the interval")
        # garbage (unseen by anyone) if the next sigmoid inputs leave the interval
        self.trainer.check_weights(W, self.X_train)
        return vectors

    def evaluate(self, vectors: dict, step: int, epoch: int) -> bool:
        W = self.weights(vectors)
        entry = self._record(W, step, "epoch")
        entry["epoch"] = epoch
        best, stop = self.stopper.update(entry.get("val_accuracy", 0.0), entry.get("val_loss", 0.0), epoch)
        if best or self.best is None:
            self.best = (entry.get("val_accuracy", 0.0), W)
            self.best_step = step
        self.log(f"epoch {epoch}: validation accuracy {entry.get('val_accuracy', float('nan')):.4f}, loss "
                 f"{entry.get('val_loss', float('nan')):.4f}{' (best so far)' if best else ''}; "
                 f"{time.monotonic() - self.started:.0f} s")
        if stop:
            self.stop_reason = "early stopping"
        elif self.time_limit is not None and time.monotonic() - self.started > self.time_limit:
            self.stop_reason = f"time limit of {self.time_limit:g} s reached"
            stop = True
        return stop

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
                 preset="n16384", refresh_mode: str = "client", engine_options: dict | None = None,
                 plan: bool = False, max_epochs: int | None = None, time_limit: float | None = None,
                 log=None) -> None:
        from hetrain import ckks
        from hetrain.models.minibatch import MiniBatchMLR
        from hetrain.models.minibatch_plan import DEFAULT_MAX_EPOCHS, plan_minibatch

        from .preprocess import Preprocessor

        if refresh_mode not in REFRESH_MODES:
            raise DepthPlanError(f"--refresh must be one of {', '.join(REFRESH_MODES)}, got {refresh_mode!r}")
        say = log or (lambda msg: None)
        if refresh_mode == "bootstrap" and backend not in ckks.BOOTSTRAP_BACKENDS:
            raise DepthPlanError(f"backend {backend} cannot bootstrap: use --refresh client (or the desilo backend)")
        self.refresh_mode, self.backend = refresh_mode, backend
        self.pre = pre = Preprocessor.fit(X, y)
        self.Xp, self.Y = pre.transform(X), pre.one_hot(y)
        self.Xv = None if X_val is None else pre.transform(X_val)
        self.yv = None if y_val is None else pre.label_index(y_val)
        n, d = self.Xp.shape
        c = self.Y.shape[1]
        probe = None
        if backend != "desilo":
            params = ckks.get_params(preset)
            levels, slots = params.levels, params.slots
        else:  # desilo picks its ring: build once to learn the slot count and levels
            params = preset
            probe = ckks.create_engine(backend, params, (), **(engine_options or {}))
            levels, slots = probe.max_level, probe.slots
            del probe
        self.plan = None
        if plan:  # before any key: the planner rehearses the run on the plaintext (models/minibatch_plan.py)
            self.plan = plan_minibatch(self.Xp, self.Y, self.Xv, self.yv, fixed=config,
                                       max_epochs=DEFAULT_MAX_EPOCHS if max_epochs is None else max_epochs, levels=levels,
                                       retract=refresh_mode == "client", slots=slots, time_budget=time_limit)
            config = self.plan.config
            for line in self.plan.lines():
                say(line)
            if self.plan.transform is not None:  # whitened features: the client encrypts X·P
                self.Xp = self.Xp @ self.plan.transform
                self.Xv = None if self.Xv is None else self.Xv @ self.plan.transform
        self.trainer = t = MiniBatchMLR(**(config or {}))
        per = t.levels_per_step
        if levels < per:
            raise DepthPlanError(f"one step needs {per} levels, parameters {getattr(params, 'name', params)} have "
                                 f"{levels}")
        steps = t.config["epochs"] * len(t.batches_of(n))
        if refresh_mode == "none" and steps > levels // per:
            raise DepthPlanError(f"{steps} steps need {steps * per} levels without refresh; "
                                 f"{getattr(params, 'name', params)} fits {levels // per}: "
                                 "use --refresh client or --refresh bootstrap")
        # the client retracts the weights at each of its refreshes; a bootstrapping server cannot
        self.steps_per_refresh = levels // per if refresh_mode == "client" else None
        if refresh_mode != "client":
            # nobody sees the weights before the end: the client runs the twin first, which raises
            # IntervalError if a sigmoid input would leave the approximation's interval (garbage,
            # unseen), with options checked to fit (models/advice.py)
            try:
                twin_long(t, self.Xp, self.Y, steps)
            except IntervalError as exc:
                from hetrain.models import advice

                def build(cfg, Xc, _preset):
                    tr = MiniBatchMLR(**cfg)
                    twin_long(tr, Xc, self.Y, tr.config["epochs"] * len(tr.batches_of(len(Xc))))

                text = advice.interval_advice(build, self.Xp, dict(t.config), kinds=("sigmoid", "learning_rate"),
                                              scale_invariant=True)
                raise advice.refusal_with_advice(exc, text) from None
        t0 = time.perf_counter()
        rotations = t.packing(d, c, slots).rotation_steps()
        self.engine = eng = ckks.create_engine(backend, params, rotations, **(engine_options or {}))
        self.keygen_s = time.perf_counter() - t0
        if refresh_mode == "bootstrap" and not eng.can_bootstrap:
            raise DepthPlanError(f"backend {eng.backend_name} cannot bootstrap: use --refresh client "
                                 "(or the desilo backend)")
        self.validation = MLRValidation(t, self.Xv, self.yv, d, c, eng.slots, X_train=self.Xp,
                                        retract=refresh_mode == "client", time_limit=time_limit, log=say)
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
        tw = twin_long(self.trainer, self.Xp, self.Y, run["steps"], self.steps_per_refresh)
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
             on_step=None, **job_options) -> LongFitResult:
    """Mini-batch MLR past the depth limit: client here, server in its own process (see LongJob;
    ``job_options``: its plan, max_epochs, time_limit, log).

    ``workdir``: the job directory (kept, with the server's checkpoint state.ckpt); default a
    temporary one, removed afterwards. ``on_step(done, total)`` follows the server's steps."""
    job = LongJob(X, y, X_val, y_val, config, backend=backend, preset=preset, refresh_mode=refresh_mode,
                  engine_options=engine_options, **job_options)
    return _write_and_train(job, workdir, on_step)


def _write_and_train(job: LongJob, workdir, on_step) -> LongFitResult:
    """``job.write`` into ``workdir`` (default a temporary directory, removed afterwards), then train."""
    tmp = None if workdir is not None else tempfile.mkdtemp(prefix="hetrain-long-")
    try:
        job.write(workdir if workdir is not None else tmp)
        return job.train(on_step=on_step)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def twin_long(trainer, X: np.ndarray, Y: np.ndarray, steps: int, steps_per_refresh: int | None = None) -> np.ndarray:
    """The plaintext twin: the same steps over the same batches, in the same order (and the
    client's retraction every ``steps_per_refresh`` steps, as under client refresh)."""
    return trainer.twin(X, Y, steps, steps_per_refresh)["W"]


def default_refresh(backend: str) -> str:
    """What ``--refresh auto`` means for a trainer that can refresh: the server bootstraps on a backend
    that can (desilo; the sim only with parameters made for it), else the client re-encrypts."""
    return "bootstrap" if backend == "desilo" else "client"


def fit_long_model(X, y, refresh_mode: str, config: dict, *, backend: str = "seal", preset: str = "auto",
                   validation_fraction: float = 0.2, seed: int | None = None, workdir=None,
                   release_decimals: int | None = None, on_step=None, plan: bool = True,
                   max_epochs: int | None = None, time_limit: float | None = None, log=None):
    """`hetrain fit --model mlr` (refresh client|bootstrap): hold out a stratified validation split
    (client side), plan the run on the plaintext (``plan``: the options not in ``config``, before
    any key; models/minibatch_plan.py), train the mini-batch trainer through the server process,
    release the best epoch's model as a TrainedModel ("mlr" weights). Returns (model, stats).

    ``max_epochs``: the budget in passes over the data (default 100); ``time_limit``: seconds,
    checked at every epoch end. When the budget stops the run, or the server or the channel fails
    after at least one epoch was evaluated, the best model so far is returned with
    ``stats["partial"] = True`` and the reason in ``stats["stop_reason"]`` (the caller says so and
    exits non-zero); a failure before any evaluation raises."""
    from sklearn.model_selection import train_test_split

    from hetrain.errors import DataError

    from .client import DEFAULT_RELEASE_DECIMALS, check_twin, release
    from .errors import ServerError
    from .model import TrainedModel, model_info

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    if time_limit is not None and not time_limit > 0:
        raise DataError(f"--time-limit must be a positive number of seconds, got {time_limit}")
    idx = np.arange(len(y))
    n_val = int(round(validation_fraction * len(y)))
    tr, va = idx, idx[:0]
    if n_val:
        _, counts = np.unique(y, return_counts=True)
        strat = y if counts.min() >= 2 and n_val >= len(counts) else None
        tr, va = train_test_split(idx, test_size=n_val, stratify=strat, random_state=0 if seed is None else seed)
    if preset == "auto":
        preset = "desilo-boot" if refresh_mode == "bootstrap" and backend == "desilo" else "n16384"
    job = LongJob(X[tr], y[tr], X[va] if n_val else None, y[va] if n_val else None, config, backend=backend,
                  preset=preset, refresh_mode=refresh_mode, plan=plan, max_epochs=max_epochs, time_limit=time_limit,
                  log=log)
    failure = None
    try:
        r = _write_and_train(job, workdir, on_step)
    except (ServerError, CKKSError) as exc:  # the server or the channel died: keep what the client has
        if job.validation.best is None or job.validation.X_val is None:
            raise
        failure = f"training failed after {len(job.validation.history)} decryption(s): {exc}"
    v = job.validation
    decimals = DEFAULT_RELEASE_DECIMALS if release_decimals is None else release_decimals
    if failure is not None:
        stats = {"partial": True, "stop_reason": failure.splitlines()[0], "params_record": job.engine.params.to_dict(),
                 "key_id": job.engine.key_id, "twin_max_abs_diff": float("nan")}
        best = v.best[1]
    else:
        stats = dict(r.stats)
        stats["partial"] = bool(v.stop_reason and v.stop_reason != "early stopping")
        stats["stop_reason"] = v.stop_reason or "planned epochs done"
        best = r.weights
        # the plaintext twins, for fidelity measurements (bench/fidelity.py): of the final state
        # (what twin_max_abs_diff compares) and of the released epoch (the best on validation: the
        # twin replayed for its step count, retractions included; the final state's twin when
        # there is no validation). Both are unwhitened below, like the released weights.
        twin_final, twin_best = r.twin_weights, r.twin_weights
        if v.best is not None and v.X_val is not None and v.best_step is not None:
            twin_best = twin_long(job.trainer, job.Xp, job.Y, v.best_step, job.steps_per_refresh)
        stats["released_step"] = v.best_step if v.X_val is not None else stats["steps"]
        stats["twin_best_max_abs_diff"] = float(np.max(np.abs(best - twin_best)))
        # nothing is released that disagrees with the plaintext twin (a wrong server computation)
        check_twin(stats["twin_max_abs_diff"], twin_final)
        check_twin(stats["twin_best_max_abs_diff"], twin_best)
    stats["plan"] = job.plan.lines() if job.plan is not None else []
    if job.plan is not None:  # trained on whitened features: the released weights act on the standardised ones
        best = unwhiten(best, job.plan.transform)
    if failure is None:  # classes × (1 + features), on the standardised features like the released model
        P = job.plan.transform if job.plan is not None else None
        stats["twin_weights"], stats["twin_best_weights"] = unwhiten(twin_final, P), unwhiten(twin_best, P)
    weights = release({"W": best}, decimals, 0.0, np.random.default_rng(seed))
    info = model_info(backend, stats["params_record"], release={"decimals": decimals, "noise_std": 0.0},
                      refresh=refresh_mode, training={"trainer": "mlr-minibatch", **job.trainer.config,
                                                      "whitening": job.plan.whitening if job.plan else None},
                      history=v.history, n_train=int(len(tr)), n_validation=int(n_val),
                      twin_max_abs_diff=stats["twin_max_abs_diff"], partial=stats["partial"],
                      stop_reason=stats["stop_reason"])
    # the released weights are a plain logistic-regression model: "mlr" predicts with them
    return TrainedModel("mlr", {}, weights, job.pre, stats["key_id"], info), stats
