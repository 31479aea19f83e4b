"""What the client checks and releases: the twin comparison and release rounding (the client's job
halves, client_jobs.py, use them before any weight leaves the data owner).

Release: CKKS decryptions carry noise that depends on the secret key, and handing
raw decryptions back to whoever computed the ciphertexts leaks information about the key
(Li–Micciancio 2021). Weights leaving the client are therefore rounded to ``decimals`` places
(default 6: 1e-6 is above the ~1e-7 noise of a fresh operation at scale 2^40 and far below what
changes a prediction) and can additionally be noise-flooded with Gaussian noise of ``noise_std``.
"""
from __future__ import annotations

import contextlib

import numpy as np

DEFAULT_RELEASE_DECIMALS = 6


# The bound of a job recorded without one (an older hetrain's record): relative to max(1, max |twin|).
# Every job encrypted by this version carries its own bound, derived from its parameters and its
# circuit (twin_bound.py); honest runs measured by bench/fidelity.py stay at or below 1.24e-3.
TWIN_TOLERANCE = 1e-2


def check_twin(diff: float, twin: dict[str, np.ndarray] | np.ndarray, tolerance: float = TWIN_TOLERANCE,
               what: str = "the decrypted model", bound: float | None = None) -> None:
    """Refuse (protocol.errors.TwinMismatch) when max |decrypted − twin| = ``diff`` exceeds ``bound``
    (absolute, twin_bound.twin_bound: the job's own), or without one ``tolerance`` × max(1, max |twin|),
    or is not finite. The numbers stay with the client: nothing here is sent to the server."""
    if bound is None:
        arrays = twin.values() if isinstance(twin, dict) else [twin]
        bound = tolerance * max([1.0] + [float(np.max(np.abs(a))) for a in arrays if np.size(a)])
    if not (np.isfinite(diff) and diff <= bound):
        from .errors import TwinMismatch
        raise TwinMismatch(f"{what} differs from its plaintext twin by {diff:.3g} (an honest run of this job stays "
                           f"within {bound:.3g}): the server's result could not be verified (it is not the "
                           "computation that was asked for), so no model is released")


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
