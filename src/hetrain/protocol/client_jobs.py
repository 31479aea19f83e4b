"""The data owner's half of a training job, from plaintext rows to a released model.

One class per kind of job, one interface (the steps of ``hetrain.protocol.steps``):

    job = prepare_job(X, y, model, config, refresh=..., backend=..., preset=...)  # before any key
    engine = keys.job_engine(job.rotations)                                  # this job's evaluation keys
    inputs, bundle = job.encrypt(engine, on_ciphertext)                      # the job bundle's contents
    job.save(KEYS/jobs/<id>/)                                                # the private record
    ... the server trains; job.handler(engine, record_dir) answers its refresh requests ...
    result = job.finish(engine, outputs, server_stats, record_dir)           # decrypt, twin, check, release

* ``TrainerJob``: any registered trainer through the Trainer contract (models/base.py): full-batch
  ``mlr``, ``mlp`` (dvr/diagonal layouts); with refresh "client" the client re-encrypts the state
  between iterations (ClientRefresher), with "bootstrap" the server bootstraps.
* ``MiniBatchJob``: ``mlr`` with refresh (the default): a stratified validation split, the planner
  on the plaintext (models/mlr_minibatch_plan.py), mini-batch epochs, the client's retraction at each
  refresh, validation per epoch, early stopping and the best epoch released; partial results when
  the time budget or a failure stops it.

Everything here runs in the data owner's process; the server process never imports this module.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np

from hetrain.errors import DataError, HetrainUserError
from hetrain.models.base import DepthPlanError, server_hooks

from .client import DEFAULT_RELEASE_DECIMALS, check_twin, release
from .model import TrainedModel, model_info
from .preprocess import Preprocessor

RECORD = "record.json"
ARRAYS = "arrays.npz"
REFRESH_CHOICES = ("auto", "none", "client", "bootstrap")


@dataclasses.dataclass
class FitResult:
    """What every training path returns: the released model and the run's statistics.

    ``twin``: the plaintext twin's final state (name -> array); ``twin_max_abs_diff``: max |decrypted
    final state − twin| (NaN for a partial run that ended without a final state)."""
    model: TrainedModel
    stats: dict
    twin: dict
    twin_max_abs_diff: float
    plan: object = None

    @property
    def partial(self) -> bool:
        """Whether the run stopped early (time budget or a failure) and the model is the best state so far."""
        return bool(self.stats.get("partial"))


def resolve_refresh(refresh: str, model: str, config: dict | None, backend: str, n_features: int) -> str:
    """What ``--refresh auto`` means, the same for the CLI, ``protocol.fit`` and the estimators:
    ``none`` for full-batch ``mlr`` (``iterations`` given) and for trainers that cannot refresh; else
    ``bootstrap`` on a backend that bootstraps (desilo) and ``client`` elsewhere.
    Raises DepthPlanError for a refresh not in REFRESH_CHOICES.
    """
    if refresh not in REFRESH_CHOICES:
        raise DepthPlanError(f"refresh must be one of {', '.join(REFRESH_CHOICES)}, got {refresh!r}")
    if refresh != "auto":
        return refresh
    config = config or {}
    if model == "mlr":
        return "none" if config.get("iterations") is not None else default_refresh(backend)
    from .planning import make_trainer

    trainer = make_trainer(model, config, n_features)
    return default_refresh(backend) if "refresh" in server_hooks(trainer) else "none"


def default_refresh(backend: str) -> str:
    """The refresh of a trainer that can refresh: the server bootstraps on a backend registered with a
    ``bootstrap_preset`` (desilo, openfhe), else the client re-encrypts."""
    from hetrain.ckks import registry

    return "bootstrap" if registry.get(backend).bootstrap_preset is not None else "client"


def prepare_job(X, y, model: str = "mlr", config: dict | None = None, *, refresh: str = "auto",
                backend: str = "seal", preset="auto", log=None, **options) -> "ClientJob":
    """Preprocess and plan a job on the client's plaintext rows, before any key exists.

    ``preset``: a preset name, CKKSParams, or "auto" (the smallest that fits; with a key directory
    the caller passes the keys' parameters). ``options``: scale, seed, release_decimals, noise_std,
    force_insecure; for mini-batch mlr also validation_fraction, max_epochs, time_limit, plan.
    Raises DepthPlanError / IntervalError / DataError (with checked advice) for what cannot run."""
    X = np.asarray(X, dtype=np.float64) if not isinstance(X, np.ndarray) else X
    refresh = resolve_refresh(refresh, model, config, backend, np.shape(X)[1] if np.ndim(X) == 2 else 0)
    cls = MiniBatchJob if (model == "mlr" and refresh != "none") else TrainerJob
    return cls.prepare(X, y, model, dict(config or {}), refresh=refresh, backend=backend, preset=preset,
                       log=log or (lambda msg: None), **options)


class ClientJob:
    """Common part of the client's job halves (see module docstring)."""

    kind = "abstract"
    log = None  # the client's log lines (a callable taking one str), where a job kind writes any

    def __init__(self) -> None:
        self.job_id: str | None = None
        self.timings: dict[str, float] = {}
        self.upload: dict = {}
        self.settings: dict = {}  # the user's options by command ({"fit": {...}}), for the model file

    # -------------------------------------------------------------- to be provided
    trainer = None
    refresh: str = "none"
    backend: str = "seal"
    params = None
    pre: Preprocessor
    options: dict

    @property
    def rotations(self) -> list[int]:
        """The Galois (rotation) steps the job's server half needs, sorted: the evaluation keys to make for it."""
        raise NotImplementedError

    def encrypt(self, engine, on_ciphertext=None) -> tuple[dict, dict]:
        """Encrypt the job's inputs under ``engine`` (the job engine with the secret key).

        Returns ``(inputs, bundle)``: inputs name -> list of ciphertexts (possibly a lazy iterable, encrypted as
        the bundle is written) and the job description for job.json (shapes, layout, config: nothing secret).
        ``on_ciphertext()`` is called after each encryption (a progress display). Sets ``timings["encrypt_s"]``.
        """
        raise NotImplementedError

    @property
    def wants_channel(self) -> bool:
        """Whether the data owner answers this job's server while it trains (``handler`` is not None)."""
        return self.refresh == "client"

    def handler(self, engine, record_dir: pathlib.Path | None, log=None, verify: bool = True, on_epoch=None):
        """The refresh channel's handler (refresh/evaluate) of this job, or None (refresh none/bootstrap
        without monitoring). ``verify``: compare every decrypted state with the twin (TwinMismatch).
        ``on_epoch(entry)``: each epoch's validation as it is evaluated (a progress display), in place of
        its log line."""
        return None

    @property
    def twin_bound(self) -> float | None:
        """The largest |decrypted − twin| an honest run of this job shows (twin_bound.py; None for a
        job recorded by an older hetrain: check_twin's relative rule then)."""
        return (self.options.get("twin_bound") or {}).get("bound")

    levels_used: int = 0  # levels the run consumes (the floor of twin_bound); 0: the preset's

    def rehearse(self, sim) -> float:
        """Run this job on the simulation engine ``sim`` (noise of the job's CKKS parameters) in this
        process: encrypt, the trainer's server half with the refreshes and evaluations answered here
        as the data owner answers them, decrypt; returns max |decrypted − twin| (twin_bound.py)."""
        from hetrain.models.base import get_trainer

        from .refresh_channel import ChannelStats
        from .server import training_hooks

        inputs, bundle = self.encrypt(sim)
        inputs = {k: v if isinstance(v, list) else list(v) for k, v in inputs.items()}  # lazy encryptions
        bundle = {**bundle, "refresh": self.refresh}
        trainer = get_trainer(bundle["model"]).from_job(bundle)
        # the server's hooks, with this process's handler in place of the refresh channel
        hooks = training_hooks(trainer, self.refresh, sim, self.handler(sim, None, verify=False), ChannelStats())
        outputs = trainer.server_train(sim, inputs, bundle, None, **hooks)
        # quiet: the rehearsal's validation lines are not the user's run
        result = self.finish(sim, outputs, {"trainer": dict(getattr(trainer, "run_stats", {}) or {})}, None,
                             force_unverified=True, quiet=True)
        return float(result.stats.get("twin_max_abs_diff", float("nan")))

    def finish(self, engine, outputs, server_stats: dict | None, record_dir: pathlib.Path | None,
               force_unverified: bool = False, quiet: bool = False) -> FitResult:
        """Decrypt, compare with the twin, release. ``force_unverified``: release even a model that
        disagrees with its twin (TwinMismatch otherwise), marked ``verified: false`` in the stats and
        the model file's info. ``quiet``: write nothing to the client's log (the twin-bound rehearsal).
        Raises HetrainUserError when the server wrote no result (``outputs`` None) and nothing else can be
        released, TwinMismatch (unless ``force_unverified``) when the decryption disagrees with the twin.
        """
        raise NotImplementedError

    # -------------------------------------------------------------- persistence
    def _record(self) -> tuple[dict, dict]:
        raise NotImplementedError

    def save(self, record_dir: pathlib.Path) -> None:
        """Write the client's private record of the job to ``record_dir``: record.json (options, preprocessing,
        parameters, timings) and arrays.npz (the preprocessed rows, labels, validation split), both mode 0600,
        atomically. Both stay with the data owner (KEYS/jobs/<id>/); OSError if the directory is not writable.
        """
        from .files import atomic_write

        record, arrays = self._record()
        record = {"kind": self.kind, "job_id": self.job_id, "refresh": self.refresh, "backend": self.backend,
                  "params": self.params.to_dict(), "preprocessing": self.pre.to_dict(), "options": self.options,
                  "timings": self.timings, "upload": self.upload, "settings": self.settings, **record}
        import io

        buf = io.BytesIO()
        np.savez(buf, **{k: v for k, v in arrays.items() if v is not None})
        atomic_write(record_dir / ARRAYS, buf.getvalue(), mode=0o600)
        atomic_write(record_dir / RECORD, json.dumps(record, indent=1), mode=0o600)

    @staticmethod
    def load(record_dir: pathlib.Path) -> "ClientJob":
        """The job ``save`` wrote to ``record_dir``, of the kind it recorded (TrainerJob or MiniBatchJob).
        Raises HetrainUserError when the record is missing, unreadable or not a job record of this hetrain.
        """
        from hetrain import ckks

        try:
            record = json.loads((record_dir / RECORD).read_bytes())
            with np.load(record_dir / ARRAYS) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as exc:
            raise HetrainUserError(f"the client's record of this job in {record_dir} is unreadable: {exc}") from None
        cls = {"trainer": TrainerJob, "minibatch": MiniBatchJob}.get(record.get("kind"))
        if cls is None:
            raise HetrainUserError(f"{record_dir / RECORD} is not a job record of this hetrain")
        job = cls._from_record(record, arrays)
        job.job_id, job.refresh, job.backend = record["job_id"], record["refresh"], record["backend"]
        job.params = ckks.CKKSParams.from_dict(record["params"])
        job.pre = Preprocessor.from_dict(record["preprocessing"])
        job.options, job.timings, job.upload = record["options"], record["timings"], record.get("upload", {})
        job.settings = record.get("settings", {})
        return job

    # -------------------------------------------------------------- shared by finish()
    def _release(self, weights: dict) -> dict:
        return release(weights, self.options.get("release_decimals", DEFAULT_RELEASE_DECIMALS),
                       self.options.get("noise_std", 0.0), np.random.default_rng(self.options.get("seed")))

    def _base_stats(self, engine, server_stats: dict | None) -> dict:
        """The statistics every path reports (same keys on every path)."""
        s = server_stats or {}
        r = dict(s.get("refresh") or {"mode": self.refresh})
        client = s.get("client_channel")
        # the client timed its own share when it answered in this process; the server only saw the wait
        r["client_seconds"] = client.get("client_seconds", 0.0) if client else None
        return {"backend": self.backend, "params": self.params.name, "params_record": self.params.to_dict(),
                "model": self.trainer.name, "job_id": self.job_id, "key_id": engine.key_id,
                "keygen_s": self.timings.get("keygen_s"), "encrypt_s": self.timings.get("encrypt_s"),
                "write_job_s": self.timings.get("write_job_s"),
                "server_train_s": s.get("server_train_s"), "server_load_s": s.get("server_load_s"),
                "server_peak_rss_bytes": s.get("server_peak_rss_bytes"),
                "upload_key_bytes": self.upload.get("public_context.bin"),
                "upload_key_parts": self.upload.get("key_parts"),
                "upload_data_bytes": (self.upload.get("inputs.bin") or 0) + (self.upload.get("job.json") or 0),
                "download_bytes": s.get("download_bytes"), "server_operations": s.get("operations"),
                "server_engine_has_secret_key": s.get("engine_has_secret_key"),
                "run": s.get("trainer") or {}, "refresh": r, "partial": False, "stop_reason": None,
                "twin_bound": self.twin_bound, "rehearsal_s": self.timings.get("rehearsal_s")}


# ====================================================================== any trainer
class TrainerJob(ClientJob):
    """A registered trainer through the Trainer contract (full-batch mlr, mlp-dvr, mlp-diagonal, ...)."""

    kind = "trainer"

    @classmethod
    def prepare(cls, X, y, model, config, *, refresh, backend, preset, log, scale: float = 1.0, seed=None,
                release_decimals: int = DEFAULT_RELEASE_DECIMALS, noise_std: float = 0.0,
                force_insecure: bool = False, advise_presets: bool = True, **unused) -> "TrainerJob":
        """Preprocess ``X`` (n × d) and ``y`` (n,), choose the parameters and plan the trainer ``model`` with
        ``config``; logs the plan's lines through ``log``. Options as ``prepare_job``'s.

        Raises HetrainUserError for mini-batch options given to a job without refresh, DepthPlanError when the
        backend cannot bootstrap (refresh bootstrap), the trainer cannot refresh, or the plan does not fit the
        parameters; DataError/IntervalError from the preprocessing and planning.
        """
        from hetrain import ckks

        from .planning import plan_lines, prepare

        extra = sorted(k for k, v in unused.items() if v is not None and k not in _MINIBATCH_DEFAULTS_OK)
        if model == "mlr":  # the mini-batch trainer's own options, given to the full-batch one
            extra += sorted(k for k in _MINIBATCH_CONFIG if k in config)
        if extra:
            raise HetrainUserError(f"{', '.join(o.replace('_', ' ') for o in extra)} appl"
                                   f"{'ies' if len(extra) == 1 else 'y'} to mlr with refresh (mini-batches); this "
                                   f"job is {model} with refresh {refresh}")
        if refresh == "bootstrap" and backend not in ckks.BOOTSTRAP_BACKENDS:
            raise DepthPlanError(f"backend {backend} cannot bootstrap: use refresh client (or a backend that "
                                 f"bootstraps: {ckks.registry.bootstrapping_backends()})")
        self = cls()
        self.refresh, self.backend = refresh, backend
        self.pre = Preprocessor.fit(X, y, scale=scale)
        self.Xp, self.Y = self.pre.transform(X), self.pre.one_hot(y)
        chosen: dict = {}
        self.trainer, self.params = prepare(model, config, self.Xp, self.Y, preset=preset, refresh=refresh,
                                            scale=scale, report=chosen, advise_presets=advise_presets)
        self.defaults = chosen.get("defaults")
        if refresh != "none" and "refresh" not in server_hooks(self.trainer):
            raise DepthPlanError(f"model {self.trainer.name} cannot refresh its state between iterations "
                                 f"(refresh {refresh}); use refresh none")
        # refresh "bootstrap": the plan also traces the bootstraps inside iterations (a bootstrap restores the
        # preset's levels; keys that restore fewer are planned again at encryption)
        inside = {"bootstrap_level": self.params.levels} if refresh == "bootstrap" and self.trainer.bootstraps_inside else {}
        self.plan = self.trainer.plan(*self.Xp.shape, self.Y.shape[1], self.params, **inside)
        self.plan.check(self.params, refresh=refresh)  # "bootstrap": also inside iterations (Plan.check)
        self.options = {"scale": scale, "seed": seed, "release_decimals": release_decimals, "noise_std": noise_std,
                        "force_insecure": force_insecure}
        for line in plan_lines(self.trainer, self.plan, self.params, self.defaults):
            log(line)
        return self

    @property
    def rotations(self) -> list[int]:
        return sorted(self.plan.rotation_steps)

    @property
    def n_input_ciphertexts(self) -> int | None:
        """Ciphertexts inputs.bin will hold according to the trainer's plan (None when the plan does not say)."""
        return self.plan.n_input_ciphertexts or None

    def encrypt(self, engine, on_ciphertext=None):
        from .client import _count_calls

        t0 = time.perf_counter()
        with _count_calls(engine, "encrypt", on_ciphertext):
            # refresh: True, or "bootstrap" (also truthy): its plan check may bootstrap inside iterations too
            inputs, job = self.trainer.client_encrypt(engine, self.Xp, self.Y, refresh=(
                "bootstrap" if self.refresh == "bootstrap" else self.refresh != "none"))
        self.timings["encrypt_s"] = time.perf_counter() - t0
        boots = getattr(self.plan, "bootstraps", None)
        if (self.refresh == "bootstrap" and self.trainer.bootstraps_inside and engine.can_bootstrap
                and engine.bootstrap_level != (boots or {}).get("level")):
            # the keys bootstrap to fewer levels than the preset's top (the sim's bootstrap_level): plan as they do
            self.plan = self.trainer.plan(*self.Xp.shape, self.Y.shape[1], self.params,
                                          bootstrap_level=engine.bootstrap_level)
        job = dict(job)
        job.setdefault("model", self.trainer.name)
        job.setdefault("config", self.trainer.config)
        job["data_shape"] = [int(self.Xp.shape[0]), int(self.Xp.shape[1]), int(self.Y.shape[1])]
        self.bundle = job  # what the trainer's client_decrypt reads back (shapes, layout: nothing secret)
        return inputs, job

    @property
    def levels_used(self) -> int:
        return int(self.plan.levels_needed or 0)

    def handler(self, engine, record_dir, log=None, verify: bool = True, on_epoch=None):
        from .refresh import ClientRefresher

        if self.refresh != "client":
            return None
        return ClientRefresher(engine, check=self._verify_state if verify else None)

    def _verify_state(self, vectors: dict, step: int | None) -> None:
        """The refresh hook: the decrypted state after ``step`` iterations against the twin after as many
        (trainers that can say both: Trainer.state_weights, Trainer.twin_after); TwinMismatch stops the
        run, and the server hears only the fixed code client_refused."""
        if step is None:
            return None
        weights = self.trainer.state_weights(vectors, self.bundle)
        twin = self.trainer.twin_after(self.Xp, self.Y, int(step)) if weights is not None else None
        if twin is None:
            return None
        from .planning import twin_max_abs_diff

        check_twin(twin_max_abs_diff(weights, twin), twin, what=f"the state after iteration {step}",
                   bound=self.twin_bound)
        return None

    def finish(self, engine, outputs, server_stats, record_dir, force_unverified: bool = False,
               quiet: bool = False) -> FitResult:
        from .planning import twin_max_abs_diff

        if outputs is None:
            raise HetrainUserError("the server has not written this job's encrypted result (outputs.bin): "
                                   "train it first (`hetrain train --job JOB`)")
        t0 = time.perf_counter()
        raw = {k: np.asarray(v, dtype=np.float64)
               for k, v in self.trainer.client_decrypt(engine, outputs, self.bundle).items()}
        decrypt_s = time.perf_counter() - t0
        weights = self._release(raw)
        t0 = time.perf_counter()
        twin = {k: np.asarray(v, dtype=np.float64) for k, v in self.trainer.twin(self.Xp, self.Y).items()}
        twin_s = time.perf_counter() - t0
        # the headline measures encryption fidelity (raw decryption); release rounding adds <= 0.5e-{decimals}
        diff = twin_max_abs_diff(raw, twin)
        verified = _checked(diff, twin, force_unverified, self.twin_bound)  # before anything is released
        stats = self._base_stats(engine, server_stats)
        stats["verified"] = verified
        stats.update({"decrypt_s": decrypt_s, "twin_s": twin_s, "twin_max_abs_diff": diff,
                      "released_max_abs_diff": twin_max_abs_diff(weights, twin),
                      "rotation_steps": self.rotations, "levels_needed": self.plan.levels_needed,
                      "levels_available": self.plan.levels_available,
                      "levels_per_iteration": self.plan.levels_per_iteration,
                      "iterations": self.plan.iterations, "defaults": self.defaults, "stop_reason": "done",
                      # refresh "bootstrap": the traced plan of the state's and the in-iteration bootstraps
                      "bootstraps_planned": getattr(self.plan, "bootstraps", None)})
        info = model_info(self.backend, self.params, release={"decimals": self.options["release_decimals"],
                                                              "noise_std": self.options["noise_std"]},
                          refresh=self.refresh, n_train=int(self.Xp.shape[0]), twin_max_abs_diff=diff,
                          twin_bound=self.twin_bound,
                          verified=verified)
        model = TrainedModel(self.trainer.name, dict(self.trainer.config), weights, self.pre, engine.key_id, info)
        return FitResult(model, stats, twin, diff, self.plan)

    def _record(self):
        return ({"model": self.trainer.name, "config": self.trainer.config, "defaults": self.defaults,
                 "bundle": self.bundle}, {"Xp": self.Xp, "Y": self.Y})

    @classmethod
    def _from_record(cls, record, arrays):
        from hetrain.models.base import get_trainer

        self = cls()
        self.trainer = get_trainer(record["model"])(**record["config"])
        self.defaults, self.bundle = record.get("defaults"), record["bundle"]
        self.Xp, self.Y = arrays["Xp"], arrays["Y"]
        self.plan = None
        return self

    def after_load(self) -> None:
        """Rebuild the trainer's plan once ``ClientJob.load`` has set the parameters (the plan is not recorded)."""
        self.plan = self.trainer.plan(*self.Xp.shape, self.Y.shape[1], self.params)


def _checked(diff: float, twin, force: bool, bound: float | None = None) -> bool:
    """check_twin against the job's ``bound`` (twin_bound.py); with ``force`` a mismatch is returned as
    False (the release is marked unverified)."""
    from .errors import TwinMismatch

    try:
        check_twin(diff, twin, bound=bound)
        return True
    except TwinMismatch:
        if not force:
            raise
        return False


# options of mini-batch mlr that other jobs accept only at their default (None)
_MINIBATCH_DEFAULTS_OK = ("validation_fraction", "plan")
# config keys of the mini-batch trainer that full-batch mlr does not have
_MINIBATCH_CONFIG = ("epochs", "batch_size", "patience", "weight_decay", "whitening")


# ====================================================================== mini-batch mlr
class MiniBatchJob(ClientJob):
    """``mlr`` with refresh: planned mini-batch epochs, validation, the best epoch released."""

    kind = "minibatch"

    @classmethod
    def prepare(cls, X, y, model, config, *, refresh, backend, preset, log, scale: float = 1.0, seed=None,
                release_decimals: int = DEFAULT_RELEASE_DECIMALS, noise_std: float = 0.0,
                force_insecure: bool = False, validation_fraction: float | None = None,
                max_epochs: int | None = None, time_limit: float | None = None, plan: bool = True,
                advise_presets: bool = True) -> "MiniBatchJob":
        """Preprocess ``X`` (n × d) and ``y`` (n,), split off a stratified validation set (``validation_fraction``,
        default 0.2), plan the mini-batch epochs (with ``plan``: models/mlr_minibatch_plan.py, which may whiten the
        features) on the plaintext and choose the parameters; logs the plan through ``log``. ``time_limit``:
        seconds of training before the best epoch so far is released; ``max_epochs``: the most epochs the
        planner may choose.

        Raises HetrainUserError for ``iterations`` (a full-batch option), epochs given twice or a scale other than
        1, DataError for a validation fraction outside [0, 1) or a non-positive time limit, DepthPlanError when one
        step does not fit the parameters or the backend cannot bootstrap, and the planner's refusals with advice.
        """
        from sklearn.model_selection import train_test_split

        from hetrain import ckks
        from hetrain.circuits.approx import IntervalError
        from hetrain.models.mlr_minibatch import MiniBatchMLR
        from hetrain.models.mlr_minibatch_plan import DEFAULT_MAX_EPOCHS, plan_minibatch

        from .refresh import twin_long

        if config.get("iterations") is not None:
            raise HetrainUserError("iterations counts full-batch iterations of refresh none; with refresh, mlr "
                                   "trains in mini-batch epochs: use epochs (or refresh none with iterations)")
        if config.get("epochs") is not None:  # the config's epochs is the most the planner may run
            if max_epochs is not None and int(max_epochs) != int(config["epochs"]):
                raise HetrainUserError(f"epochs is given twice ({config['epochs']} in the config, {max_epochs} as "
                                       "max_epochs): give one")
            max_epochs = int(config["epochs"])
        if scale != 1.0:
            raise HetrainUserError("scale applies to refresh none only (the mini-batch step is invariant to the "
                                   "feature scale)")
        validation_fraction = 0.2 if validation_fraction is None else float(validation_fraction)
        if not 0.0 <= validation_fraction < 1.0:
            raise DataError(f"validation fraction must be in [0, 1), got {validation_fraction}")
        if time_limit is not None and not time_limit > 0:
            raise DataError(f"time limit must be a positive number of seconds, got {time_limit}")
        if refresh == "bootstrap" and backend not in ckks.BOOTSTRAP_BACKENDS:
            raise DepthPlanError(f"backend {backend} cannot bootstrap: use refresh client (or a backend that "
                                 f"bootstraps: {ckks.registry.bootstrapping_backends()})")
        self = cls()
        self.refresh, self.backend = refresh, backend
        self.log = log  # the client's log lines (finish: the final epoch's validation); not in the record
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        idx = np.arange(len(y))
        n_val = int(round(validation_fraction * len(y)))
        tr, va = idx, idx[:0]
        if n_val:
            _, counts = np.unique(y, return_counts=True)
            strat = y if counts.min() >= 2 and n_val >= len(counts) else None
            tr, va = train_test_split(idx, test_size=n_val, stratify=strat, random_state=0 if seed is None else seed)
        self.pre = pre = Preprocessor.fit(X[tr], y[tr])
        self.Xp, self.Y = pre.transform(X[tr]), pre.one_hot(y[tr])
        self.Xv = pre.transform(X[va]) if n_val else None
        self.yv = pre.label_index(y[va]) if n_val else None
        n, d = self.Xp.shape
        c = self.Y.shape[1]
        if preset == "auto":
            preset = (ckks.registry.get(backend).bootstrap_preset or "n16384") if refresh == "bootstrap" else "n16384"
        if ckks.registry.get(backend).preset_needs_engine and not isinstance(preset, ckks.CKKSParams):
            probe = ckks.create_engine(backend, preset, ())  # desilo picks its ring: learn slots and levels
            self.params = probe.params
            del probe
        else:
            self.params = preset if isinstance(preset, ckks.CKKSParams) else ckks.get_params(preset)
        levels, slots = self.params.levels, self.params.slots
        self.P, self.plan_text, self.whitening = None, [], None
        if plan:  # before any key: the planner rehearses the run on the plaintext (models/mlr_minibatch_plan.py)
            planned = plan_minibatch(self.Xp, self.Y, self.Xv, self.yv, fixed=config,
                                     max_epochs=DEFAULT_MAX_EPOCHS if max_epochs is None else max_epochs,
                                     levels=levels, retract=refresh == "client", slots=slots, time_budget=time_limit)
            config = planned.config
            self.plan_text = planned.lines()
            self.whitening = planned.whitening
            for line in self.plan_text:
                log(line)
            if planned.transform is not None:  # whitened features: the client encrypts X·P
                self.P = planned.transform
                self.Xp = self.Xp @ self.P
                self.Xv = None if self.Xv is None else self.Xv @ self.P
        self.trainer = t = MiniBatchMLR(**config)
        per = t.levels_per_step
        if levels < per:
            raise DepthPlanError(f"one step needs {per} levels, parameters {self.params.name} have {levels}")
        # the client retracts the weights at each of its refreshes; a bootstrapping server cannot
        self.steps_per_refresh = levels // per if refresh == "client" else None
        if refresh != "client":
            # nobody sees the weights before the end: the twin raises IntervalError first if a sigmoid
            # input would leave the approximation's interval (garbage, unseen), with checked advice
            try:
                twin_long(t, self.Xp, self.Y, t.config["epochs"] * len(t.batches_of(n)))
            except IntervalError as exc:
                from hetrain.models import advice

                def build(cfg, Xc, _preset):
                    tr_ = MiniBatchMLR(**cfg)
                    twin_long(tr_, Xc, self.Y, tr_.config["epochs"] * len(tr_.batches_of(len(Xc))))

                text = advice.interval_advice(build, self.Xp, dict(t.config), kinds=("sigmoid", "learning_rate"),
                                              scale_invariant=True)
                raise advice.refusal_with_advice(exc, text) from None
        self.options = {"seed": seed, "release_decimals": release_decimals, "noise_std": noise_std,
                        "force_insecure": force_insecure, "validation_fraction": validation_fraction,
                        "time_limit": time_limit, "n_train": int(n), "n_validation": int(n_val),
                        "n_features": int(d), "n_classes": int(c)}
        return self

    @property
    def rotations(self) -> list[int]:
        return sorted(self.trainer.packing(self.Xp.shape[1], self.Y.shape[1], self.params.slots).rotation_steps())

    @property
    def n_input_ciphertexts(self) -> int | None:
        """The ciphertexts the bundle holds (batches, encrypted lazily while it is written, and the state)."""
        return self.trainer.plan(*self.Xp.shape, self.Y.shape[1], self.params).n_input_ciphertexts or None

    def encrypt(self, engine, on_ciphertext=None):
        from .client import _count_calls

        t0 = time.perf_counter()
        with _count_calls(engine, "encrypt", on_ciphertext):
            inputs, job = self.trainer.client_encrypt(engine, self.Xp, self.Y)
        self.timings["encrypt_s"] = time.perf_counter() - t0  # lazily encrypted batches: see write_job_s
        job["data_shape"] = [int(self.Xp.shape[0]), int(self.Xp.shape[1]), int(self.Y.shape[1])]
        self.n_batches = int(job["n_batches"])
        return inputs, job

    def validation(self, engine, record_dir: pathlib.Path | None, log=None, verify: bool = True, on_epoch=None):
        """The client's monitor of this job (refresh checks, validation, best model), its state kept in
        ``record_dir`` so a data owner who comes back (or ``hetrain decrypt``) continues it."""
        from .refresh import MLRValidation, twin_long

        def twin_at(step: int) -> np.ndarray:  # the twin after ``step`` steps, retractions replayed
            return twin_long(self.trainer, self.Xp, self.Y, step, self.steps_per_refresh)

        return MLRValidation(self.trainer, self.Xv, self.yv, self.Xp.shape[1], self.Y.shape[1], engine.slots,
                             X_train=self.Xp, retract=self.refresh == "client",
                             time_limit=self.options.get("time_limit"), log=log,
                             state_dir=record_dir, twin_at=twin_at if verify else None, twin_bound=self.twin_bound,
                             on_epoch=on_epoch)

    @property
    def wants_channel(self) -> bool:
        return self.refresh == "client" or self.Xv is not None

    def handler(self, engine, record_dir, log=None, verify: bool = True, on_epoch=None):
        from .refresh import ClientRefresher

        v = self.validation(engine, record_dir, log, verify=verify, on_epoch=on_epoch)
        if self.refresh != "client" and self.Xv is None:
            return None
        return ClientRefresher(engine, check=v.check if self.refresh == "client" else None,
                               evaluate=v.evaluate if self.Xv is not None else None)

    def finish(self, engine, outputs, server_stats, record_dir, failure: str | None = None,
               force_unverified: bool = False, quiet: bool = False) -> FitResult:
        from hetrain.models.mlr_minibatch_plan import unwhiten

        from .refresh import twin_long

        v = self.validation(engine, record_dir, None if quiet else self.log, verify=not force_unverified)
        stats = self._base_stats(engine, server_stats)
        verified = True
        decimals = self.options.get("release_decimals", DEFAULT_RELEASE_DECIMALS)
        twin: dict = {}
        if outputs is None:  # the server or the channel died: release the best validated epoch, if any
            if v.best is None or self.Xv is None:
                raise HetrainUserError(failure or "the server has not written this job's encrypted result "
                                       "(outputs.bin) and no epoch was validated: nothing to release")
            epochs = sum(1 for h in v.history if h.get("kind") == "epoch")
            reason = (failure or "training did not finish").splitlines()[0].rstrip(": ")
            stats.update({"partial": True, "stop_reason": f"{reason} (after {epochs} validated epoch(s))",
                          "twin_max_abs_diff": float("nan")})
            best = v.best[1]
            diff = float("nan")
        else:
            run = stats["run"]
            t0 = time.perf_counter()
            last = self.trainer.client_decrypt(engine, outputs, {"d": self.Xp.shape[1], "c": self.Y.shape[1]})["W"]
            stats["decrypt_s"] = time.perf_counter() - t0
            steps = int(run.get("steps", 0))
            nb = len(self.trainer.batches_of(self.Xp.shape[0]))
            if self.Xv is not None and not run.get("stopped_early"):  # the final epoch's evaluation, on download
                v.evaluate({"W": [engine.decrypt(ct) for ct in outputs["W"]]}, steps, -(-steps // nb))
            best = v.final_weights(last)
            t0 = time.perf_counter()
            twin_final = twin_long(self.trainer, self.Xp, self.Y, steps, self.steps_per_refresh)
            twin_best = twin_final
            if v.best is not None and self.Xv is not None and v.best_step is not None:
                twin_best = twin_long(self.trainer, self.Xp, self.Y, v.best_step, self.steps_per_refresh)
            stats["twin_s"] = time.perf_counter() - t0
            diff = float(np.max(np.abs(last - twin_final)))
            stats["partial"] = bool(v.stop_reason and v.stop_reason != "early stopping")
            stats["stop_reason"] = v.stop_reason or "planned epochs done"
            stats["steps"] = steps
            stats["released_step"] = v.best_step if self.Xv is not None else steps
            stats["twin_max_abs_diff"] = diff
            stats["twin_best_max_abs_diff"] = float(np.max(np.abs(best - twin_best)))
            # nothing is released that disagrees with the plaintext twin (a wrong server computation)
            verified = _checked(diff, twin_final, force_unverified, self.twin_bound)
            verified = _checked(stats["twin_best_max_abs_diff"], twin_best, force_unverified,
                                self.twin_bound) and verified
            # on the standardised features like the released model (bench/fidelity.py compares them)
            stats["twin_weights"] = unwhiten(twin_final, self.P)
            stats["twin_best_weights"] = unwhiten(twin_best, self.P)
            twin = {"W": stats["twin_weights"]}
        stats["plan"] = list(self.plan_text)
        stats["history"] = v.history
        r = stats["refresh"]
        for k in ("round_trips", "refreshes", "evaluations", "bootstraps", "bytes_to_client", "bytes_to_server"):
            stats[k] = r.get(k, 0)
        stats["client_refresh_s"] = r.get("client_seconds")
        stats["train_s"] = stats["server_train_s"]
        weights = release({"W": unwhiten(best, self.P)}, decimals, 0.0, np.random.default_rng(self.options.get("seed")))
        # the released (best) epoch against the twin replayed to that epoch's step, on the same features
        stats["released_max_abs_diff"] = (float(np.max(np.abs(weights["W"] - stats["twin_best_weights"])))
                                          if twin else float("nan"))
        info = model_info(self.backend, self.params, release={"decimals": decimals, "noise_std": 0.0},
                          refresh=self.refresh, training={"trainer": "mlr-minibatch", **self.trainer.config,
                                                          "whitening": self.whitening},
                          history=v.history, n_train=self.options["n_train"],
                          n_validation=self.options["n_validation"], twin_max_abs_diff=diff,
                          twin_bound=self.twin_bound,
                          partial=stats["partial"], stop_reason=stats["stop_reason"], verified=verified)
        stats["verified"] = verified
        # the released weights are a plain logistic-regression model: "mlr" predicts with them
        model = TrainedModel("mlr", {}, weights, self.pre, engine.key_id, info)
        return FitResult(model, stats, twin, diff, None)

    def _record(self):
        return ({"config": self.trainer.config, "plan_text": self.plan_text, "whitening": self.whitening,
                 "steps_per_refresh": self.steps_per_refresh},
                {"Xp": self.Xp, "Y": self.Y, "Xv": self.Xv, "yv": self.yv, "P": self.P})

    @classmethod
    def _from_record(cls, record, arrays):
        from hetrain.models.mlr_minibatch import MiniBatchMLR

        self = cls()
        self.trainer = MiniBatchMLR(**record["config"])
        self.plan_text, self.whitening = record["plan_text"], record["whitening"]
        self.steps_per_refresh = record["steps_per_refresh"]
        self.Xp, self.Y = arrays["Xp"], arrays["Y"]
        self.Xv, self.yv, self.P = arrays.get("Xv"), arrays.get("yv"), arrays.get("P")
        return self

    def after_load(self) -> None:
        """Nothing to rebuild: a mini-batch job's record holds its plan."""
        pass
