"""The contract between a trainer and the client/server protocol.

A trainer is configured by JSON-able hyperparameters. The protocol drives it in four steps, on
two machines:

client:  plan = trainer.plan(n, d, c, params)            # depth + rotation keys, before any work
         inputs, job = trainer.client_encrypt(engine, X, Y, refresh=False)
server:  trainer = get_trainer(job["model"]).from_job(job)   # no secret key in this process
         outputs = trainer.server_train(engine, inputs, job, progress)
client:  weights = trainer.client_decrypt(engine, outputs, job)
         twin = trainer.twin(X, Y)                          # same arithmetic in NumPy
         scores = trainer.predict_scores(weights, X_test)

X is already preprocessed by the client (standardised, scaled); Y is one-hot (n x c) in {0, 1}.
``inputs``/``outputs`` map names to lists of ciphertexts; ``job`` is a JSON-able dict that the
server may read (shapes, layout, schedule) and must contain nothing secret.

Capabilities: every trainer class declares ``capabilities``, a frozenset of the optional
keyword-only hooks its ``server_train`` accepts (a subset of ``SERVER_HOOKS``); the server passes
exactly those (``server_hooks(trainer)``), nothing is inferred from signatures:
    refresh(state, step=None)    state: dict name -> ciphertext or list of ciphertexts; returns the
      -> state                   same names/shapes at a high level (client re-encryption or bootstrap).
                                 Called when the next iteration would not fit the state's levels;
                                 ``step`` (optional, iterations done) only labels the client's records.
                                 A hook that bootstraps (``via_client`` False) also lets the trainer
                                 bootstrap inside an iteration (models/inner_boot.py); it reports those
                                 through ``add_bootstraps(n)`` (protocol/server.BootstrapRefresh).
    monitor                      .evaluate(state, step, epoch, refresh=False) -> (state | None, stop):
                                 the client reads its validation metrics and answers continue/stop
                                 (and, with refresh=True, also re-encrypts the state in the same trip).
    checkpoint                   .load() -> (state, meta) | None and .save(state, meta): the server's
                                 encrypted state (dict name -> list of ciphertexts) after every completed
                                 iteration, so a killed job resumes after the last saved one with the
                                 same arithmetic; ``meta`` is JSON-able and public (counters only).
    executor                     hetrain.ckks.executor (SerialExecutor or ProcessExecutor): runs the
                                 circuits' independent tasks on worker processes with the same
                                 operations (``--workers N``); absent, everything runs in this process.
When a refresh is available, a plan only needs one iteration to fit between refreshes: the flag is
explicit, ``plan.check(params, refresh=True)`` and ``client_encrypt(engine, X, Y, refresh=True)``
(which passes it on to its own plan check).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import numpy as np

from hetrain.ckks import CKKSParams, Ciphertext, Engine, smallest_preset_with_levels
from hetrain._format import plain
from hetrain.errors import HetrainUserError

# progress(done, total, message) — the protocol turns it into a progress bar
Progress = Callable[[int, int, str], None]


class DepthPlanError(HetrainUserError):
    """The requested training does not fit in the parameters' levels (raised before any work).

    ``facts``: the message without its generic hint, for callers that append checked advice
    (hetrain.models.advice.depth_advice); None when the whole message is facts."""

    facts: str | None = None


@dataclasses.dataclass
class Plan:
    """What a training job needs, computed before keys are made or data is encrypted."""

    levels_needed: int
    levels_available: int
    rotation_steps: list[int]
    iterations: int
    iterations_that_fit: int
    # iteration -> levels it consumes, traced (models/trace.py): {"iteration 1": 1, "each later iteration": 4}
    levels_per_iteration: dict[str, int]
    n_input_ciphertexts: int
    notes: list[str] = dataclasses.field(default_factory=list)
    # False when the first iteration fits one chain but a later one does not fit even from a refreshed,
    # top-level state (mlp-dvr with Nesterov: its momentum level is spent from the second iteration on)
    refreshed_iteration_fits: bool = True
    # operation kind -> count of the whole planned run's server iterations, traced (placement kinds such
    # as encrypt and mod_switch left out); None: not traced, or a run without refresh that cannot run
    ops: dict | None = None
    # levels each iteration of the planned run consumes from a fresh state, traced (the lowest state
    # ciphertext's drop; as far as they fit one chain)
    chain_levels: list[int] = dataclasses.field(default_factory=list)
    # the run as a bootstrapping job (refresh "bootstrap") runs it, traced (models/trace.bootstrap_run):
    # {"level": the level a bootstrap restores, "state": [state ciphertexts bootstrapped before each
    # iteration], "in_iteration": [ciphertexts bootstrapped inside each iteration]} (models/inner_boot.py);
    # None: not planned (the trainer does not bootstrap inside iterations, or need not), or it does not fit
    bootstraps: dict | None = None
    # operation counts of that run (``ops`` with the bootstraps: kind "bootstrap"); None with ``bootstraps``
    bootstrap_ops: dict | None = None

    @property
    def levels_per_later_iteration(self) -> int:
        """Levels one iteration after the first consumes (the most any iteration does)."""
        return max(self.levels_per_iteration.values(), default=0)

    @property
    def fits(self) -> bool:
        """Whether the whole run fits one modulus chain: levels_needed <= levels_available (no refresh)."""
        return self.levels_needed <= self.levels_available

    def fits_with_refresh(self) -> bool:
        """Every iteration fits between two refreshes (so any number of iterations can run)."""
        return self.iterations_that_fit >= 1 and self.refreshed_iteration_fits

    @property
    def bootstraps_in_iterations(self) -> int | None:
        """Ciphertexts the planned bootstrapping run bootstraps inside its iterations (``bootstraps``);
        None when not planned."""
        return None if self.bootstraps is None else int(sum(self.bootstraps["in_iteration"]))

    def _bootstrap_hint(self) -> str:
        """The fix a refusal names when the run fits as a bootstrapping job (``bootstraps``), else ''."""
        if self.bootstraps is None:
            return ""
        from hetrain.ckks.registry import bootstrapping_backends

        return (f" Or train with --refresh bootstrap on a backend that bootstraps ({bootstrapping_backends()}): the "
                f"server then also bootstraps inside each iteration (at most {max(self.bootstraps['in_iteration'])} "
                f"ciphertexts per iteration when a bootstrap restores {self.bootstraps['level']} levels).")

    def check(self, params: CKKSParams, refresh: bool | str = False) -> None:
        """Raise DepthPlanError with how many iterations fit and which preset would fit.

        ``refresh``: True or "client" when the job's state is refreshed between iterations (then one
        iteration must fit, not all); "bootstrap" when the server bootstraps (then an iteration may also
        bootstrap inside itself: the job fits when ``bootstraps`` is planned, else as with a refresh);
        False or "none": every iteration must fit one modulus chain. A refusal names --refresh bootstrap
        when the run would fit that way.
        """
        if refresh == "bootstrap" and self.bootstraps is not None:
            return
        if refresh and refresh != "none":
            if self.fits_with_refresh():
                return
            if self.iterations_that_fit >= 1:
                raise DepthPlanError(
                    f"the first iteration fits in {params.name} ({self.levels_available} levels), but a later one "
                    f"does not fit even in freshly refreshed ciphertexts; levels per iteration: "
                    f"{plain(self.levels_per_iteration)}. Use a preset with more levels (or momentum 'none')."
                    + self._bootstrap_hint())
            raise DepthPlanError(
                f"not even one iteration fits in {params.name} ({self.levels_available} levels) between two "
                f"refreshes; levels per iteration: {plain(self.levels_per_iteration)}. Use a preset with more levels."
                + self._bootstrap_hint())
        if self.fits:
            return
        better = smallest_preset_with_levels(self.levels_needed)
        hint = f"preset {better!r} has enough levels" if better else "no preset has that many levels: refresh between iterations"
        facts = (f"{self.iterations} iterations need {self.levels_needed} levels but {params.name} offers "
                 f"{self.levels_available}; {self.iterations_that_fit} iteration(s) fit. "
                 f"Levels per iteration: {plain(self.levels_per_iteration)}.")
        exc = DepthPlanError(f"{facts} Hint: {hint}.{self._bootstrap_hint()}")
        exc.facts = facts + self._bootstrap_hint()  # checked advice is appended to the facts: keep the traced fix
        raise exc


def presets_by_size() -> list[CKKSParams]:
    """The presets a search may choose (``hetrain.ckks.PRESETS``, never the INSECURE test ones), smallest
    first: ring degree, then levels."""
    from hetrain.ckks import PRESETS

    return sorted(PRESETS.values(), key=lambda p: (p.poly_modulus_degree, p.levels))


def choose_preset(trainer, n: int, d: int, c: int, refresh: bool = False) -> CKKSParams:
    """The smallest preset (ring degree, then levels; ``hetrain.ckks.PRESETS``, never the INSECURE test
    ones) on which the trainer's plan fits: every iteration in one chain, or with ``refresh`` one
    iteration between two refreshes. The one preset search (``protocol.planning`` re-exports it).

    ``n``, ``d``, ``c``: rows, features and classes of the training data. Returns the CKKSParams; without
    ``refresh`` and when no preset fits, the largest (its ``plan.check`` explains how many iterations
    fit and what would). Raises DepthPlanError when, with ``refresh``, not even one iteration fits any."""
    for p in presets_by_size():
        try:
            plan = trainer.plan(n, d, c, p)
        except HetrainUserError:  # e.g. the data does not fit this ring's slots
            continue
        if plan.fits_with_refresh() if refresh else plan.fits:
            return p
    if refresh:
        raise DepthPlanError(f"not even one {trainer.name} iteration fits in any preset")
    return presets_by_size()[-1]


SERVER_HOOKS = frozenset({"refresh", "monitor", "checkpoint", "executor"})


def server_hooks(trainer) -> frozenset[str]:
    """The optional ``server_train`` hooks (refresh, monitor, checkpoint) that this trainer (class or
    instance) declares in its ``capabilities``."""
    return frozenset(trainer.capabilities)


class Trainer(abc.ABC):
    """Base class of encrypted trainers (see module docstring for the protocol)."""

    name: str = "abstract"
    summary: str = ""  # one line for `hetrain models`
    # the optional server_train hooks this class accepts (module docstring); each trainer declares its own
    capabilities: frozenset[str] = frozenset()
    # True: with a refresh hook that bootstraps, ``server_train`` also bootstraps inside iterations
    # (models/inner_boot.py) and ``plan`` takes ``bootstrap_level`` (the level a bootstrap restores) to plan it
    bootstraps_inside: bool = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        caps = cls.__dict__.get("capabilities", cls.capabilities)
        if not isinstance(caps, frozenset) or not caps <= SERVER_HOOKS:
            raise TypeError(f"{cls.__name__}.capabilities must be a frozenset of {sorted(SERVER_HOOKS)}, got {caps!r}")

    def __init__(self, **config) -> None:
        self.config = config

    @classmethod
    def from_job(cls, job: dict) -> "Trainer":
        """The trainer a job was made with, from its job.json dict (its ``config``); raises the trainer's
        config error (HetrainUserError) when that config is not valid."""
        return cls(**job["config"])

    def merge_config(self, defaults: dict, config: dict, error: type[Exception] = HetrainUserError) -> dict:
        """``defaults`` updated with ``config``; an unknown key raises ``error`` naming the known ones."""
        unknown = set(config) - set(defaults)
        if unknown:
            raise error(f"unknown {self.name} option(s) {sorted(unknown)}; known: {sorted(defaults)}")
        return {**defaults, **config}

    @abc.abstractmethod
    def plan(self, n_samples: int, n_features: int, n_classes: int, params: CKKSParams) -> Plan:
        """What training ``n_samples`` rows of ``n_features`` features into ``n_classes`` classes
        needs under ``params``: levels, rotation steps (Galois keys), iterations that fit, input
        ciphertexts. Runs on the client before any key is made, on the shapes only (no data): the
        built-in trainers trace their own server iteration on zeros (models/trace.py). Raises a
        LayoutError (circuits.errors) or the trainer's config error when the shapes do not fit its
        packing; a plan that does not fit the levels is returned, not raised (``Plan.check`` raises
        DepthPlanError)."""

    @abc.abstractmethod
    def client_encrypt(self, engine: Engine, X: np.ndarray, Y: np.ndarray, *,
                       refresh: bool = False) -> tuple[dict[str, list[Ciphertext]], dict]:
        """Encrypt the training data on the client: returns (inputs, job).

        ``X``: (n_samples, n_features) float64, preprocessed; ``Y``: (n_samples, n_classes) one-hot
        in {0, 1}. ``inputs``: name -> list of ciphertexts (the packing's); ``job``: a JSON-able
        dict of public facts the server needs (shapes, layout, schedule; never anything secret).
        ``refresh``: the job's state will be refreshed between iterations, so a plan check here
        needs one iteration between refreshes to fit, not all of them. Raises DepthPlanError (the
        plan does not fit ``engine.params``), DataError (e.g. IntervalError: the twin's sigmoid
        inputs leave the approximation's interval)."""

    @abc.abstractmethod
    def server_train(self, engine: Engine, inputs: dict[str, list[Ciphertext]], job: dict,
                     progress: Progress | None = None) -> dict[str, list[Ciphertext]]:
        """Train on ciphertexts, on the server (``engine`` holds public material only): returns the
        final state, name -> list of ciphertexts (what ``client_decrypt`` reads).

        ``inputs``, ``job``: what ``client_encrypt`` made. ``progress(done, total, message)``:
        called after each iteration. The optional keyword hooks of ``capabilities`` (module
        docstring: refresh, monitor, checkpoint) are passed only when declared. Raises
        DepthPlanError when the job's plan does not fit ``engine.params``."""

    @abc.abstractmethod
    def client_decrypt(self, engine: Engine, outputs: dict[str, list[Ciphertext]], job: dict) -> dict[str, np.ndarray]:
        """Decrypt the server's ``outputs`` (client, secret key) into the weights: name -> float64
        array in the units of ``twin`` (public scale factors of the schedule applied), shapes as
        ``weight_shapes`` says. Compared with ``twin(X, Y)`` before anything is released."""

    @abc.abstractmethod
    def twin(self, X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
        """The plaintext twin: the same training, same polynomial approximations and schedule, in
        NumPy float64 on the client's plaintext (``X``, ``Y`` as in ``client_encrypt``). Returns
        the weights as ``client_decrypt`` does; the client compares them (protocol/client.py
        check_twin). Raises DataError (IntervalError) when a sigmoid input leaves its interval."""

    def state_weights(self, vectors: dict[str, list[np.ndarray]], job: dict) -> dict[str, np.ndarray] | None:
        """The weights held by a *decrypted* state that ``server_train`` passed to its ``refresh`` hook
        (name -> slot vectors, as the client decrypted them), in the units of ``twin``; None when this
        trainer cannot say (its refreshed states are then not checked against the twin mid-run)."""
        return None

    def twin_after(self, X: np.ndarray, Y: np.ndarray, iterations: int) -> dict[str, np.ndarray] | None:
        """The plaintext twin after ``iterations`` iterations (the state the server holds when it asks
        for a refresh before iteration ``iterations`` + 1); None when this trainer cannot say."""
        return None

    def client_check(self, X: np.ndarray, Y: np.ndarray) -> None:
        """The plaintext checks of ``client_encrypt`` that need no keys (e.g. the twin's interval check,
        circuits.approx.IntervalError), so the client can refuse before keygen. Default: none."""

    @abc.abstractmethod
    def predict_scores(self, weights: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
        """Per-class scores, shape (n_samples, n_classes) float64, of the plaintext model ``weights``
        (``client_decrypt``'s or ``twin``'s) on preprocessed ``X`` (n_samples, n_features); the
        predicted class is the argmax of a row."""

    # ------------------------------------------------------------------ tracing (models/trace.py)
    # A trainer whose ``plan`` is traced implements these four; the plan and the server's "refresh now?"
    # then come from running ``trace_iteration`` (the function ``server_train`` loops over) on zeros.
    def trace_key(self):
        """Hashable: the config entries that shape the circuit (not values it computes on); part of the
        trace cache's key."""
        raise NotImplementedError(f"{self.name} is not traced")

    def trace_setup(self, engine: Engine, n: int, d: int, c: int):
        """(ctx, state): the server's fixed inputs for ``n`` rows, ``d`` features, ``c`` classes, zeros
        packed as ``client_encrypt`` packs them, and the fresh state (name -> list of ciphertexts)."""
        raise NotImplementedError(f"{self.name} is not traced")

    def trace_flavor(self, t: int, *args):
        """Hashable: what distinguishes iteration ``t``'s circuit from the others'."""
        raise NotImplementedError(f"{self.name} is not traced")

    def trace_iteration(self, engine: Engine, ctx, state: dict, flavor) -> dict:
        """One server iteration of ``flavor`` on ``state``: the next state (same names as it holds)."""
        raise NotImplementedError(f"{self.name} is not traced")

    def weight_shapes(self, n_features: int, n_classes: int) -> dict[str, tuple[int, ...]] | None:
        """Name -> shape of every released weight array for this config, or None (not declared: a
        model file's weights are then only checked for finiteness). Model files are checked against it."""
        return None


def check_training_arrays(X, Y, *, trainer: str | None = None, min_features: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The one check of a trainer's training arrays: X (n × d, finite) and one-hot Y (n × c in {0, 1},
    hence finite), returned as float64 arrays. ``trainer``: named in the messages; ``min_features``:
    the fewest columns X may have (a trainer that packs features per ciphertext needs at least one).

    Raises DataError (hetrain.errors) naming what is wrong: the shapes, NaN/infinite values in X, or
    Y not one-hot."""
    from hetrain.errors import DataError

    who = f"{trainer}: " if trainer else ""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0] or X.shape[0] == 0 or X.shape[1] < min_features:
        least = f" and d ≥ {min_features}" if min_features else ""
        raise DataError(f"{who}X must be n × d and Y n × c with the same n ≥ 1{least}, got {X.shape} and {Y.shape}")
    if not np.all(np.isfinite(X)):
        raise DataError(f"{who}X contains NaN or infinite values")
    if not np.all((Y == 0) | (Y == 1)):  # NaN and ±inf are not 0 or 1 either
        raise DataError(f"{who}Y must be one-hot in {{0, 1}} (no NaN or infinite values)")
    return X, Y


registry: dict[str, type[Trainer]] = {}


def register(cls: type[Trainer]) -> type[Trainer]:
    """Class decorator: add a trainer to the registry under its ``name`` (``--model``); returns the class."""
    registry[cls.name] = cls
    return cls


def get_trainer(name: str) -> type[Trainer]:
    """The trainer class registered as ``name`` (a registry name such as "mlr" or "mlp-dvr", see
    :func:`resolve_model`). Raises HetrainUserError naming the available models for an unknown name."""
    import hetrain.models.catalog  # noqa: F401  (imports every trainer module so they register)
    try:
        return registry[name]
    except KeyError:
        raise HetrainUserError(f"unknown model {name!r}; available: {', '.join(sorted(registry))}") from None


def resolve_model(model: str, layout: str = "auto", n_features: int | None = None) -> str:
    """Registry name for what the user asked: ``--model mlp --layout auto|dvr|diagonal``.

    ``mlp`` has two implementations: the double-Volley-Revolver network (``mlp-dvr``, for wide
    inputs such as 400 CNN features) and the diagonal packing with a cheap transpose
    (``mlp-diagonal``, for narrow inputs such as Iris). ``auto`` picks diagonal up to 16 features.
    """
    if model != "mlp":
        return model
    if layout == "auto":
        layout = "diagonal" if n_features is not None and n_features <= 16 else "dvr"
    return f"mlp-{layout}"
