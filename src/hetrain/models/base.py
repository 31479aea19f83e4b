"""The contract between a trainer and the client/server protocol.

A trainer is configured by JSON-able hyperparameters. The protocol drives it in four steps, on
two machines:

client:  plan = trainer.plan(n, d, c, params)            # depth + rotation keys, before any work
         inputs, job = trainer.client_encrypt(engine, X, Y)
server:  trainer = get_trainer(job["model"]).from_job(job)   # no secret key in this process
         outputs = trainer.server_train(engine, inputs, job, progress)
client:  weights = trainer.client_decrypt(engine, outputs, job)
         twin = trainer.twin(X, Y)                          # same arithmetic in NumPy
         scores = trainer.predict_scores(weights, X_test)

X is already preprocessed by the client (standardised, scaled); Y is one-hot (n x c) in {0, 1}.
``inputs``/``outputs`` map names to lists of ciphertexts; ``job`` is a JSON-able dict that the
server may read (shapes, layout, schedule) and must contain nothing secret.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import numpy as np

from hetrain.ckks import CKKSParams, Ciphertext, Engine, smallest_preset_with_levels
from hetrain.errors import HetrainUserError

# progress(done, total, message) — the protocol turns it into a progress bar
Progress = Callable[[int, int, str], None]


class DepthPlanError(HetrainUserError):
    """The requested training does not fit in the parameters' levels (raised before any work)."""


@dataclasses.dataclass
class Plan:
    """What a training job needs, computed before keys are made or data is encrypted."""

    levels_needed: int
    levels_available: int
    rotation_steps: list[int]
    iterations: int
    iterations_that_fit: int
    levels_per_iteration: dict[str, int]  # part name -> levels, e.g. {"forward": 3, "sigmoid": 2, ...}
    n_input_ciphertexts: int
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.levels_needed <= self.levels_available

    def check(self, params: CKKSParams) -> None:
        """Raise DepthPlanError with how many iterations fit and which preset would fit."""
        if self.fits:
            return
        better = smallest_preset_with_levels(self.levels_needed)
        hint = f"preset {better!r} has enough levels" if better else "no preset has that many levels: refresh between iterations"
        raise DepthPlanError(
            f"{self.iterations} iterations need {self.levels_needed} levels but {params.name} offers "
            f"{self.levels_available}; {self.iterations_that_fit} iteration(s) fit. {hint}. "
            f"Levels per iteration: {self.levels_per_iteration}.")


class Trainer(abc.ABC):
    """Base class of encrypted trainers (see module docstring for the protocol)."""

    name: str = "abstract"

    def __init__(self, **config) -> None:
        self.config = config

    @classmethod
    def from_job(cls, job: dict) -> "Trainer":
        return cls(**job["config"])

    @abc.abstractmethod
    def plan(self, n_samples: int, n_features: int, n_classes: int, params: CKKSParams) -> Plan: ...

    @abc.abstractmethod
    def client_encrypt(self, engine: Engine, X: np.ndarray, Y: np.ndarray) -> tuple[dict[str, list[Ciphertext]], dict]: ...

    @abc.abstractmethod
    def server_train(self, engine: Engine, inputs: dict[str, list[Ciphertext]], job: dict,
                     progress: Progress | None = None) -> dict[str, list[Ciphertext]]: ...

    @abc.abstractmethod
    def client_decrypt(self, engine: Engine, outputs: dict[str, list[Ciphertext]], job: dict) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def twin(self, X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def predict_scores(self, weights: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray: ...


registry: dict[str, type[Trainer]] = {}


def register(cls: type[Trainer]) -> type[Trainer]:
    registry[cls.name] = cls
    return cls


def get_trainer(name: str) -> type[Trainer]:
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
