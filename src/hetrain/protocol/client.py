"""The client: the only side that holds the secret key.

It checks the depth plan before making keys, generates keys with exactly the plan's rotation
steps, encrypts through the trainer, and decrypts and *releases* the trained weights.

Release (DESIGN §5): CKKS decryptions carry noise that depends on the secret key, and handing
raw decryptions back to whoever computed the ciphertexts leaks information about the key
(Li–Micciancio 2021). Weights leaving the client are therefore rounded to ``decimals`` places
(default 6: 1e-6 is above the ~1e-7 noise of a fresh operation at scale 2^40 and far below what
changes a prediction) and can additionally be noise-flooded with Gaussian noise of ``noise_std``.
"""
from __future__ import annotations

import contextlib
import pathlib
import time
from typing import Callable

import numpy as np

from hetrain import ckks
from hetrain.errors import HetrainUserError
from hetrain.models.base import Plan, Trainer

from . import files

DEFAULT_RELEASE_DECIMALS = 6


class Client:
    def __init__(self, trainer: Trainer, backend: str = "seal", preset: str | ckks.CKKSParams = "n16384", *,
                 force_insecure: bool = False, seed: int | None = None) -> None:
        if backend not in ckks.BACKENDS:
            raise ckks.CKKSError(f"unknown backend {backend!r}; choose one of {', '.join(ckks.BACKENDS)}")
        self.preset = preset
        self.params = None if preset == "auto" else _params(preset)
        self.trainer = trainer
        self.backend = backend
        self.force_insecure = force_insecure
        self.seed = seed
        self.engine: ckks.Engine | None = None
        self.timings: dict[str, float] = {}

    def plan(self, n_samples: int, n_features: int, n_classes: int) -> Plan:
        """The trainer's plan, checked against the parameters: DepthPlanError before any key exists.

        With preset "auto", the smallest preset (ring degree, then levels) whose plan fits is chosen.
        """
        if self.params is None:
            self.params = choose_preset(self.trainer, n_samples, n_features, n_classes)
        plan = self.trainer.plan(n_samples, n_features, n_classes, self.params)
        plan.check(self.params)
        return plan

    def keygen(self, plan: Plan) -> ckks.Engine:
        """Keys with Galois keys for exactly ``plan.rotation_steps`` (each one costs ~200 MB at N=32768)."""
        opts = {"seed": self.seed} if self.backend == "sim" else {}
        t0 = time.perf_counter()
        self.engine = ckks.create_engine(self.backend, self.params, rotations=plan.rotation_steps,
                                         force_insecure=self.force_insecure, **opts)
        self.timings["keygen_s"] = time.perf_counter() - t0
        return self.engine

    def encrypt(self, X: np.ndarray, Y: np.ndarray, on_ciphertext: Callable[[], None] | None = None):
        """(inputs, job) from the trainer; the job also names the model, its config and the data shape."""
        t0 = time.perf_counter()
        with _count_calls(self.engine, "encrypt", on_ciphertext):
            inputs, job = self.trainer.client_encrypt(self.engine, X, Y)
        self.timings["encrypt_s"] = time.perf_counter() - t0
        job = dict(job)
        job.setdefault("model", self.trainer.name)
        job.setdefault("config", self.trainer.config)
        job["data_shape"] = [int(X.shape[0]), int(X.shape[1]), int(Y.shape[1])]
        return inputs, job

    def read_outputs(self, jobdir) -> dict[str, list[ckks.Ciphertext]]:
        data = files.read_bytes(pathlib.Path(jobdir) / files.OUTPUTS, "server outputs")
        return files.unpack_ciphertexts(self.engine, data, "server outputs")

    def decrypt(self, outputs, job: dict, on_ciphertext: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
        """Raw decrypted weights (release them with ``release`` before they leave the client)."""
        t0 = time.perf_counter()
        with _count_calls(self.engine, "decrypt", on_ciphertext):
            weights = self.trainer.client_decrypt(self.engine, outputs, job)
        self.timings["decrypt_s"] = time.perf_counter() - t0
        return {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}


def _params(preset) -> ckks.CKKSParams:
    try:
        return ckks.get_params(preset)
    except ValueError as exc:
        raise ckks.CKKSError(str(exc)) from None


def choose_preset(trainer: Trainer, n_samples: int, n_features: int, n_classes: int) -> ckks.CKKSParams:
    """Smallest preset on which the trainer's plan fits; the largest one if none does (its check explains)."""
    ordered = sorted(ckks.PRESETS.values(), key=lambda p: (p.poly_modulus_degree, p.levels))
    for p in ordered:
        try:
            if trainer.plan(n_samples, n_features, n_classes, p).fits:
                return p
        except HetrainUserError:  # e.g. the data does not fit this ring's slots
            continue
    return ordered[-1]


# Honest runs stay within ~1e-3 of the twin (CKKS noise through tens of refreshed steps, measured
# by bench/fidelity.py); anything past 1e-2 of the weights' scale is a wrong computation, e.g. a
# server that returned well-formed encryptions of other values.
TWIN_TOLERANCE = 1e-2


def check_twin(diff: float, twin: dict[str, np.ndarray] | np.ndarray, tolerance: float = TWIN_TOLERANCE) -> None:
    """Refuse to release (TwinMismatch) when max |decrypted − twin| = ``diff`` exceeds ``tolerance``
    × max(1, max |twin|), or is not finite. The numbers stay with the client."""
    arrays = twin.values() if isinstance(twin, dict) else [twin]
    scale = max([1.0] + [float(np.max(np.abs(a))) for a in arrays if np.size(a)])
    if not (np.isfinite(diff) and diff <= tolerance * scale):
        from .errors import TwinMismatch
        raise TwinMismatch(f"the decrypted model differs from its plaintext twin by {diff:.3g} (tolerance "
                           f"{tolerance * scale:.3g}): the server's result is not the computation that was asked "
                           "for, so no model is released")


def release(weights: dict[str, np.ndarray], decimals: int = DEFAULT_RELEASE_DECIMALS, noise_std: float = 0.0,
            rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Noise-flood (optional) then round decrypted values before they leave the client (see module doc)."""
    rng = rng or np.random.default_rng()
    out = {}
    for k, w in weights.items():
        w = np.asarray(w, dtype=np.float64)
        if noise_std > 0:
            w = w + rng.normal(0.0, noise_std, w.shape)
        out[k] = np.round(w, decimals)
    return out


@contextlib.contextmanager
def _count_calls(engine, method: str, callback):
    """Call ``callback`` after each engine.<method> call (drives a progress bar), then restore."""
    if callback is None:
        yield
        return
    original = getattr(engine, method)

    def wrapped(*a, **kw):
        r = original(*a, **kw)
        callback()
        return r

    setattr(engine, method, wrapped)
    try:
        yield
    finally:
        delattr(engine, method)  # the instance attribute goes; the class method shows again
