"""Optional backend on ``desilofhe``: CKKS with bootstrapping (CPU, optional CUDA).

LICENCE: desilofhe allows non-commercial use only and forbids redistribution. hetrain never
requires it, never ships it and imports it only when backend "desilo" is asked for
(``pip install hetrain[desilo]`` installs it on the user's own decision).

Parameter sets are desilofhe's own (it picks the ring and primes): ``"desilo-boot"`` is its
bootstrappable set (N = 2^16, 32768 slots, 17 levels usable between bootstraps), ``"desilo-l<L>"``
a set with L levels and no bootstrapping (small, for tests). The ``CKKSParams`` built for them
carry the real ring degree and level count; their ``coeff_bits`` are a nominal 60/40.../60 chain
(desilofhe does not expose its primes), used only for bookkeeping and fingerprints.

Mapping onto the engine primitives:
* desilofhe's ciphertext multiply rescales at once (the product is already one level down);
  a product without relinearisation key stays a 3-polynomial ciphertext, so ``mul_sum`` still
  sums tensors and relinearises once; ``_rescale`` has nothing left to do.
* desilofhe rotates RIGHT by ``delta``; the engine's left rotation by s is delta = -s mod slots.
  One fixed rotation key per declared step (never the all-steps key: ≈180 MB even at N=2^14).
* bootstrapping uses a conjugation key plus either a ``BootstrapKey`` ("medium", desilofhe's
  default: large key, fast) or, with ``bootstrap_key_size="small"``, a ``SmallBootstrapKey`` and a
  ``RollKey`` (a few GB instead of ≈15 GB, several times slower). Measured in bench/bootstrap.py.
"""
from __future__ import annotations

import re
import secrets

import numpy as np

from .container import pack, unpack
from .engine import Engine, read_secret_key, unpack_secret_key
from .errors import CKKSError, SerializationError
from .params import CKKSParams

try:  # optional: the licence forbids making it a requirement
    import desilofhe as _d
except ImportError:  # pragma: no cover - exercised where desilofhe is absent (CI)
    _d = None

BOOT_PRESET = "desilo-boot"
_LEVELS_RE = re.compile(r"^desilo-l(\d+)$")


def available() -> bool:
    """Whether the optional package desilofhe imports here (backend "desilo" usable)."""
    return _d is not None


def _require():
    if _d is None:
        raise CKKSError("backend 'desilo' needs the optional package desilofhe (non-commercial licence, "
                        "not redistributable): pip install 'hetrain[desilo]'")
    return _d


def _resolve(preset) -> str:
    """desilo preset name for ``preset``: desilo names pass; a SEAL preset maps to the same level count."""
    from .params import PRESETS
    if isinstance(preset, CKKSParams):
        if preset.name == BOOT_PRESET or _LEVELS_RE.match(preset.name):
            return preset.name
        return f"desilo-l{preset.levels}"
    if preset in PRESETS:
        return f"desilo-l{PRESETS[preset].levels}"
    return str(preset)


def _make_native(preset: str, threads: int | None, mode: str):
    d = _require()
    if preset == BOOT_PRESET:
        return d.Engine(mode=mode, bootstrap=True, thread_count=threads), True
    m = _LEVELS_RE.match(preset)
    if not m:
        raise ValueError(f"unknown desilo parameter set {preset!r}; use {BOOT_PRESET!r} or 'desilo-l<levels>'")
    return d.Engine(max_level=int(m.group(1)), mode=mode, thread_count=threads), False


def _params_for(native, preset: str) -> CKKSParams:
    levels = int(native.max_level)
    return CKKSParams(2 * int(native.slot_count), (60,) + (40,) * levels + (60,), 40, preset)


class DesiloEngine(Engine):
    """CKKS on desilofhe (real encryption; bootstrapping on the "desilo-boot" parameters)."""

    backend_name = "desilo"
    secure = True
    process_workers = False  # desilofhe runs each operation on every core itself; its tasks stay in one process

    def __init__(self, preset: str = BOOT_PRESET, rotation_steps=(), *, threads: int | None = None,
                 mode: str = "cpu", bootstrap_key_size: str = "medium", force_insecure: bool = False,
                 secret_key: bytes | None = None, _public: dict | None = None, _secret: bytes | None = None) -> None:
        preset = _resolve(preset)
        self._native, self._bootable = _make_native(preset, threads, mode)
        e = self._native
        params = _params_for(e, preset)
        self._mode, self._threads = mode, threads
        if _public is None:
            if secret_key is None:
                super().__init__(params, rotation_steps, secrets.token_hex(8), True, False)
                self._sk = e.create_secret_key()
            else:  # keep a stored secret key, fresh evaluation keys (see SealEngine)
                key_id, raw = read_secret_key(secret_key, self.backend_name, params)
                super().__init__(params, rotation_steps, key_id, True, False)
                self._sk = _load(e.deserialize_secret_key, raw, "secret key")
            self._pk = e.create_public_key(self._sk)
            self._rlk = e.create_relinearization_key(self._sk)
            with self.counters.time("keygen_galois", len(self.rotation_steps)):
                self._rot = {s: e.create_fixed_rotation_key(self._sk, self._delta(s)) for s in sorted(self.rotation_steps)}
            self._conj = self._bk = self._roll = None
            self.bootstrap_key_size = bootstrap_key_size
            if self._bootable:
                with self.counters.time("keygen_bootstrap"):
                    self._conj = e.create_conjugation_key(self._sk)
                    if bootstrap_key_size == "small":
                        self._bk = e.create_small_bootstrap_key(self._sk)
                        self._roll = e.create_roll_key(self._sk)
                    else:
                        try:
                            self._bk = e.create_bootstrap_key(self._sk, size=bootstrap_key_size)
                        except RuntimeError as exc:
                            raise CKKSError(f"desilofhe refused bootstrap key size {bootstrap_key_size!r}: {exc}") from None
        else:
            super().__init__(params, _public["steps"], _public["key_id"], False, False)
            self.bootstrap_key_size = _public.get("bootstrap_key_size", bootstrap_key_size)
            self._sk = None
            self._pk = _load(e.deserialize_public_key, _public["pk"], "public key")
            self._rlk = _load(e.deserialize_relinearization_key, _public["rlk"], "relinearisation key")
            self._rot = {s: _load(e.deserialize_fixed_rotation_key, _public[f"rot{s}"], "rotation key")
                         for s in self.rotation_steps}
            self._conj = _load(e.deserialize_conjugation_key, _public["conj"], "conjugation key") if "conj" in _public else None
            self._roll = _load(e.deserialize_roll_key, _public["roll"], "roll key") if "roll" in _public else None
            if "bk" not in _public:
                self._bk = None
            elif self._roll is not None:
                self._bk = _load(e.deserialize_small_bootstrap_key, _public["bk"], "small bootstrap key")
            else:
                self._bk = _load(e.deserialize_bootstrap_key, _public["bk"], "bootstrap key")
            if _secret is not None:
                self._sk = _load(e.deserialize_secret_key, _secret, "secret key")
                self.has_secret_key = True

    def _delta(self, step: int) -> int:
        return int(step) % self.slots  # a fixed rotation key rotates left by its delta (measured)

    # ---------------------------------------------------------------- bootstrapping
    @property
    def can_bootstrap(self) -> bool:
        return self._bk is not None

    @property
    def bootstrap_level(self) -> int | None:
        return self.max_level if self._bk is not None else None

    def _bootstrap(self, ct):
        if self._roll is not None:
            out = self._native.bootstrap(ct.data, self._rlk, self._conj, self._roll, self._bk)
        else:
            out = self._native.bootstrap(ct.data, self._rlk, self._conj, self._bk)
        if out.level > self.max_level:  # not seen with desilofhe 2.0; keep the engine's level rule
            out = self._native.level_down(out, self.max_level)
        if out.level != self.max_level:
            raise CKKSError(f"desilofhe bootstrap returned level {out.level}, expected {self.max_level}")
        return out

    # ---------------------------------------------------------------- primitives
    def _encrypt(self, v, level):
        return self._native.encrypt(v, self._pk, int(level))

    def _decrypt(self, ct):
        return np.asarray(self._native.decrypt(ct.data, self._sk), dtype=np.float64)

    def _encode_add(self, v, level):
        return self._native.encode(v, int(level))

    def _encode_mul(self, v, level):
        return self._native.encode(v, int(level))

    def _add(self, a, b):
        return self._native.add(a.data, b.data)

    def _add_plain(self, a, pt):
        return self._native.add(a.data, pt)

    def _sub(self, a, b):
        return self._native.subtract(a.data, b.data)

    def _neg(self, a):
        return self._native.negate(a.data)

    def _tensor(self, a, b):
        return self._native.multiply(a.data, b.data)  # 3 polynomials, already rescaled

    def _square(self, a):
        return self._native.square(a.data)

    def _add_tensor(self, t1, t2):
        return self._native.add(t1, t2)

    def _relinearize(self, t):
        return self._native.relinearize(t, self._rlk)

    def _rescale(self, t, level):
        return t  # desilofhe rescaled in the multiplication

    def _mul_plain(self, a, pt):
        return self._native.multiply(a.data, pt)

    def _mul_scalar(self, a, c):
        return self._native.multiply(a.data, float(c))  # a float constant costs one level, as in the engine rule

    def _rotate(self, a, step):
        return self._native.rotate(a.data, self._rot[step])

    def _drop(self, a, level):
        return self._native.level_down(a.data, int(level))

    # ---------------------------------------------------------------- serialisation
    def _ct_to_bytes(self, ct):
        return bytes(self._native.serialize_ciphertext(ct.data))

    def _ct_from_bytes(self, b, level):
        ct = _load(self._native.deserialize_ciphertext, b, "ciphertext")
        if ct.level != level:
            raise SerializationError(f"ciphertext header says level {level}, payload is at level {ct.level}")
        return ct

    def public_bytes(self) -> bytes:
        e = self._native
        meta = {"kind": "public_context", "backend": self.backend_name, "params": self.params.to_dict(),
                "key_id": self.key_id, "steps": sorted(self.rotation_steps),
                "bootstrap_key_size": self.bootstrap_key_size}
        parts = {"pk": bytes(e.serialize_public_key(self._pk)), "rlk": bytes(e.serialize_relinearization_key(self._rlk))}
        parts.update({f"rot{s}": bytes(e.serialize_fixed_rotation_key(k)) for s, k in self._rot.items()})
        if self._bk is not None:
            parts["conj"] = bytes(e.serialize_conjugation_key(self._conj))
            parts.update(self._bootstrap_key_parts())
        return pack(meta, parts)

    def _bootstrap_key_parts(self) -> dict[str, bytes]:
        e = self._native
        if self._roll is not None:
            return {"bk": bytes(e.serialize_small_bootstrap_key(self._bk)), "roll": bytes(e.serialize_roll_key(self._roll))}
        return {"bk": bytes(e.serialize_bootstrap_key(self._bk))}

    def secret_key_bytes(self) -> bytes:
        return self._pack_secret_key(None if self._sk is None else bytes(self._native.serialize_secret_key(self._sk)))

    @classmethod
    def from_bytes(cls, public: bytes, secret: bytes | None = None, *, force_insecure: bool = False,
                   threads: int | None = None, mode: str = "cpu") -> "DesiloEngine":
        """Rebuild an engine from ``public_bytes()`` (and optionally ``secret_key_bytes()`` of the same key set).

        ``threads``/``mode`` ("cpu" or "gpu") are desilofhe's engine options (not stored in the bytes).
        ``force_insecure`` is accepted for the common signature and not used.
        Raises SerializationError when the bytes are not a public context, KeyMismatch when ``secret`` belongs to
        other parameters or keys, CKKSError when desilofhe is not installed.
        """
        meta, parts = unpack(public, expect_kind="public_context")
        params = CKKSParams.from_dict(meta["params"])
        sk = None if secret is None else unpack_secret_key(meta, params, secret)
        return cls(params.name, (), threads=threads, mode=mode,
                   _public={"key_id": meta["key_id"], "steps": meta["steps"],
                            "bootstrap_key_size": meta.get("bootstrap_key_size"), **parts}, _secret=sk)

    def key_sizes(self) -> dict[str, int]:
        """Serialised size in bytes of each key kind: public_key, relin_keys, galois_keys (all fixed rotation keys),
        plus conjugation_key and bootstrap_* when the engine bootstraps, secret_key when it holds one.
        """
        e = self._native
        sizes = {"public_key": len(e.serialize_public_key(self._pk)),
                 "relin_keys": len(e.serialize_relinearization_key(self._rlk)),
                 "galois_keys": sum(len(e.serialize_fixed_rotation_key(k)) for k in self._rot.values())}
        if self._bk is not None:
            sizes["conjugation_key"] = len(e.serialize_conjugation_key(self._conj))
            sizes.update({f"bootstrap_{k}": len(v) for k, v in self._bootstrap_key_parts().items()})
        if self._sk is not None:
            sizes["secret_key"] = len(e.serialize_secret_key(self._sk))
        return sizes


def _load(fn, data: bytes, what: str):
    try:
        return fn(bytes(data))
    except Exception as exc:  # desilofhe raises RuntimeError/ValueError with terse messages
        raise SerializationError(f"{what} does not load: {exc}") from None
