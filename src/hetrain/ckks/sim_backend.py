"""INSECURE simulation backend: the engine interface on plain NumPy float64 vectors.

Nothing is encrypted here: a "ciphertext" is the vector itself. It exists for fast tests and for
planning depth and operation counts, never for a shipped path. It follows the same level rules
as the SEAL backend (an operation that would run out of depth under SEAL fails the same way here),
counts the same operations, requires the same rotation keys, and can add Gaussian noise of the
size CKKS adds (``noise="ckks"``), so that algorithms are tested against realistic error.
"""
from __future__ import annotations

import secrets

import numpy as np

from .container import pack, unpack
from .engine import Engine, read_secret_key, unpack_secret_key
from .errors import SerializationError, TransparentResult
from .params import CKKSParams

# Standard deviation of the error CKKS adds per fresh encryption, rescale and rotation at scale
# 2^40 (order of magnitude measured with the SEAL backend; tests/test_ckks_security.py
# test_sim_noise_has_ckks_size checks the sim draws noise of this size).
CKKS_NOISE_STD = 1e-7
# Bootstrapping returns values with a larger error (desilofhe at N=2^16 measured ~3e-5 max abs on
# values in [-1, 1]); the sim adds noise of this size per bootstrap when noise is on, unless it is
# told the bootstrap error of the parameters it stands in for (``bootstrap_noise``: the twin-bound
# rehearsal passes the real engine's ``bootstrap_noise_std``, e.g. an OpenFHE preset's measured error).
BOOTSTRAP_NOISE_STD = 1e-5


class SimEngine(Engine):
    """INSECURE simulation of a CKKS engine on NumPy (no encryption at all)."""

    backend_name = "sim-INSECURE"
    secure = False

    def __init__(self, params: CKKSParams, rotation_steps=(), *, noise: float | str = 0.0,
                 seed: int | None = None, force_insecure: bool = False, bootstrap_level: int | None = None,
                 bootstrap_noise: float | None = None, secret_key: bytes | None = None, _key_id: str | None = None, _has_secret: bool = True) -> None:
        forced = not params.is_128_bit_secure()
        params.check_security(force_insecure)
        if secret_key is not None:  # the key id of a stored (empty) sim secret key: see SealEngine
            _key_id = read_secret_key(secret_key, self.backend_name, params)[0]
        super().__init__(params, rotation_steps, _key_id or secrets.token_hex(8), _has_secret, forced)
        self.noise = CKKS_NOISE_STD if noise == "ckks" else float(noise)
        self._rng = np.random.default_rng(seed)
        # emulated bootstrapping (planning only): ciphertexts come back at this level
        if bootstrap_level is not None and not 1 <= int(bootstrap_level) <= params.levels:
            raise ValueError(f"bootstrap_level must be in [1, {params.levels}], got {bootstrap_level}")
        self._bootstrap_level = None if bootstrap_level is None else int(bootstrap_level)
        if bootstrap_noise is not None and not (np.isfinite(bootstrap_noise) and bootstrap_noise >= 0):
            raise ValueError(f"bootstrap_noise must be a finite standard deviation >= 0, got {bootstrap_noise}")
        self.bootstrap_noise = BOOTSTRAP_NOISE_STD if bootstrap_noise is None else float(bootstrap_noise)
        self.log.info("simulation backend: data is NOT encrypted")

    def _noisy(self, v: np.ndarray) -> np.ndarray:
        if self.noise:
            return v + self._rng.normal(0.0, self.noise, v.shape)
        return v

    def _encrypt(self, v, level):
        return self._noisy(v.copy())

    def _decrypt(self, ct):
        return ct.data.copy()

    def _encode_add(self, v, level):
        return v

    def _encode_mul(self, v, level):
        return v

    @staticmethod
    def _opaque(out: np.ndarray, *operands: np.ndarray) -> np.ndarray:
        """Flag what SEAL refuses as transparent: nonzero operands whose sum is exactly 0 (x - x,
        x + (-x), cancelling products). Zero plaintext multipliers are caught by the engine's rule."""
        if not np.any(out) and all(np.any(o) for o in operands):
            raise TransparentResult("result ciphertext is transparent (exact cancellation)")
        return out

    def _add(self, a, b):
        return self._opaque(a.data + b.data, a.data, b.data)

    def _add_plain(self, a, pt):
        return a.data + pt

    def _sub(self, a, b):
        return self._opaque(a.data - b.data, a.data, b.data)

    def _neg(self, a):
        return -a.data

    def _tensor(self, a, b):
        return a.data * b.data

    def _square(self, a):
        return a.data * a.data

    def _add_tensor(self, t1, t2):
        return self._opaque(t1 + t2, t1, t2)

    def _relinearize(self, t):
        return t

    def _rescale(self, t, level):
        return self._noisy(t)

    def _mul_plain(self, a, pt):
        return self._noisy(a.data * pt)

    def _mul_scalar(self, a, c):
        return self._noisy(a.data * c)

    def _rotate(self, a, step):
        return self._noisy(np.roll(a.data, -step))

    def _drop(self, a, level):
        return a.data

    @property
    def can_bootstrap(self) -> bool:
        return self._bootstrap_level is not None

    @property
    def bootstrap_level(self) -> int | None:
        return self._bootstrap_level

    @property
    def bootstrap_noise_std(self) -> float | None:
        """Standard deviation of the noise one emulated bootstrap adds (when noise is on); None without bootstrapping."""
        return self.bootstrap_noise if self._bootstrap_level is not None else None

    def _bootstrap(self, ct):
        v = ct.data.copy()
        if self.noise:
            v = v + self._rng.normal(0.0, max(self.noise, self.bootstrap_noise), v.shape)
        return v

    def _ct_to_bytes(self, ct):
        return np.asarray(ct.data, dtype="<f8").tobytes()

    def _ct_from_bytes(self, b, level):
        if len(b) != 8 * self.slots:
            raise SerializationError(f"simulated ciphertext has {len(b)} bytes, expected {8 * self.slots}")
        return np.frombuffer(b, dtype="<f8").copy()

    def public_bytes(self) -> bytes:
        meta = {"kind": "public_context", "backend": self.backend_name, "params": self.params.to_dict(),
                "key_id": self.key_id, "steps": sorted(self.rotation_steps), "noise": self.noise,
                "bootstrap_level": self._bootstrap_level, "bootstrap_noise": self.bootstrap_noise}
        if self.forced_insecure:  # the data owner's choice, for the server (ckks.owner_forced_insecure)
            meta["forced_insecure"] = True
        return pack(meta, {})

    def secret_key_bytes(self) -> bytes:
        return self._pack_secret_key(None)

    @classmethod
    def from_bytes(cls, public: bytes, secret: bytes | None = None, *, force_insecure: bool = False) -> "SimEngine":
        """Rebuild a sim engine from ``public_bytes()`` (and optionally ``secret_key_bytes()``); the sim keeps no key
        material, only the key id, rotation steps, noise and bootstrap level. Raises SerializationError for bytes
        that are not a public context, KeyMismatch when ``secret`` belongs to another key set, InsecureParameters as
        the constructor.
        """
        meta, _ = unpack(public, expect_kind="public_context")
        params = CKKSParams.from_dict(meta["params"])
        if secret is not None:
            unpack_secret_key(meta, params, secret)  # checks it belongs here; the sim has no key bytes
        return cls(params, meta["steps"], noise=meta.get("noise", 0.0), force_insecure=force_insecure,
                   bootstrap_level=meta.get("bootstrap_level"), bootstrap_noise=meta.get("bootstrap_noise"),
                   _key_id=meta["key_id"], _has_secret=secret is not None)

    def key_sizes(self) -> dict[str, int]:
        """An empty dict: the simulator has no keys to measure."""
        return {}
