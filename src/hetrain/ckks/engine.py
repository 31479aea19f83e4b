"""The engine interface shared by every CKKS backend.

An engine owns a parameter set and a key set. Ciphertexts are ``Ciphertext`` handles that know
their engine and their *level*: the number of rescales (multiplications) they can still undergo.
The level rules are the same for every backend, and implemented here once:

* a fresh encryption sits at ``max_level`` (or at a lower level on request, which makes it smaller);
* ciphertext x ciphertext, ciphertext x plaintext and ciphertext x scalar each consume one level;
* addition, subtraction, negation and rotation consume none;
* operands at different levels are aligned by lowering the higher one (exactly, see backends);
* an operation that needs a level a ciphertext at level 0 no longer has raises ``DepthExhausted``;
* an operation whose exact result is a *transparent* ciphertext (its mask polynomial c1 is zero: a
  key-independent encryption of 0, which SEAL refuses to produce) returns a fresh encryption of 0 at
  the result's level and scale instead: a product by a plaintext or scalar that encodes to the zero
  polynomial at its scale (``encodes_to_zero``: all zeros, or values so small they round to 0), and a
  sum or difference that cancels exactly (``x - x``, ``x + (-x)``, ``mul_sum`` terms that cancel).
  Every backend goes through the same rule here; backends signal a transparent result by raising
  (SEAL's own error, the sim's ``TransparentResult`` for a sum of nonzero operands that is exactly 0).

Backends implement the small set of ``_primitive`` methods; counting, checks and alignment live here.

Scheme: CKKS (Cheon, Kim, Kim, Song, "Homomorphic Encryption for Arithmetic of Approximate Numbers",
ASIACRYPT 2017), with the rescaling of that paper and the level bookkeeping of Microsoft SEAL; the
rotate-and-sum of ``sum_slots`` is the one of Halevi–Shoup ("Algorithms in HElib", CRYPTO 2014).
"""
from __future__ import annotations

import abc
import functools
import logging
import os
from typing import Iterable, Sequence, Union

import numpy as np


from .pow2 import is_pow2

from .counters import OpCounters
from .errors import (CKKSError, DepthExhausted, KeyMismatch, MissingRotationKey, SecretKeyUnavailable,
                     SerializationError, TransparentResult)
from .params import CKKSParams

log = logging.getLogger("hetrain.ckks")

Scalar = Union[int, float, np.floating]


class Ciphertext:
    """A handle on one encrypted vector of ``engine.slots`` real numbers."""

    __slots__ = ("engine", "level", "data", "__weakref__")  # weakref: an executor's wire cache

    def __init__(self, engine: "Engine", level: int, data) -> None:
        self.engine = engine
        self.level = level
        self.data = data  # backend-specific payload

    def __reduce__(self):
        # never pickled: that would copy its engine (a simulator's whole state, or fail on a real
        # backend's objects); executors send ciphertexts in their wire format (executor._wire)
        raise TypeError("a Ciphertext does not pickle: serialise it with its engine (Engine.serialize), as "
                        "executors and the protocol's files do")

    # Operators make circuit code read like the maths; each goes through the engine (and its counters).
    def __add__(self, other):
        return self.engine.add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return self.engine.sub(self, other)

    def __rsub__(self, other):
        return self.engine.add(self.engine.neg(self), other)

    def __mul__(self, other):
        return self.engine.mul(self, other)

    __rmul__ = __mul__

    def __neg__(self):
        return self.engine.neg(self)

    def __repr__(self) -> str:
        return f"<Ciphertext {self.engine.backend_name} level={self.level}>"


class PlainVector:
    """A plaintext vector to multiply or add many times (a mask, a constant row...).

    Encodings are cached per level and purpose, so a mask used at the same level is encoded once.
    """

    __slots__ = ("values", "_cache")

    def __init__(self, values) -> None:
        self.values = np.asarray(values, dtype=np.float64)
        self._cache: dict = {}

    def __reduce__(self):
        # pickled (to an executor's worker) without its encodings: backend objects do not pickle
        return (PlainVector, (self.values,))


def rotate_sum_steps(width: int, stride: int = 1) -> list[int]:
    """Rotation steps used by ``Engine.sum_slots(ct, width, stride)`` (width a power of two)."""
    _check_pow2(width)
    steps, k = [], 1
    while k < width:
        steps.append(k * stride)
        k *= 2
    return steps


def encodes_to_zero(values, scale: float) -> bool:
    """Whether CKKS encodes these slot values (real, ``slots`` of them) at ``scale`` to the zero
    polynomial: every coefficient rounds to 0. A scalar encodes to the constant round(c·scale).

    The coefficients are m_k = (2/N)·Σ_i v_i·cos(π·g_i·k/N), g_i = 3^i mod 2N (N = 2·slots), times
    the scale. max|m_k| <= max|v| and max|m_k| >= √2·‖v‖₂/N bound the answer; the exact transform
    (one FFT) is needed only between the two. Slot i sits at the root ζ^(3^i), SEAL 4's layout (a
    Galois automorphism of it only permutes the coefficients' magnitudes); checked against SEAL's
    encoder in tests/test_ckks_zero.py.
    """
    v = np.asarray(values, dtype=np.float64)
    top = float(np.max(np.abs(v), initial=0.0)) * scale
    if v.ndim == 0 or top < 0.5:
        return top < 0.5
    v = v.ravel()
    n = 2 * v.size
    if np.sqrt(2.0) * float(np.linalg.norm(v)) * scale / n >= 0.5 or not is_pow2(v.size):
        return False
    w = np.zeros(2 * n)
    np.add.at(w, _rotation_group(v.size), v)
    coeffs = (2.0 / n) * np.fft.fft(w).real[:n] * scale
    return float(np.max(np.abs(coeffs))) < 0.5  # SEAL rounds half away from zero


@functools.lru_cache(maxsize=8)
def _rotation_group(slots: int) -> np.ndarray:
    """3^i mod 4·slots for i < slots: the power of the root of unity slot i is evaluated at (SEAL 4)."""
    g = np.empty(slots, dtype=np.int64)
    g[0] = 1
    for i in range(1, slots):
        g[i] = g[i - 1] * 3 % (4 * slots)
    return g


def _check_pow2(width: int) -> None:
    if not is_pow2(width):
        raise ValueError(f"width must be a power of two, got {width}")


class Engine(abc.ABC):
    """Keys, encoding, encryption and arithmetic on CKKS ciphertexts (see module docstring)."""

    backend_name = "abstract"
    secure = True
    # whether the circuits' independent tasks may run in worker processes (ckks/executor.py): the
    # backend's ciphertexts move between processes as bytes and one operation uses one core
    process_workers = True

    def __init__(self, params: CKKSParams, rotation_steps: Iterable[int], key_id: str,
                 has_secret_key: bool, forced_insecure: bool = False) -> None:
        self.params = params
        self.slots = params.slots
        self.max_level = params.levels
        self.rotation_steps = frozenset(self.normalize_step(s) for s in rotation_steps) - {0}
        self.key_id = key_id
        self.has_secret_key = has_secret_key
        self.forced_insecure = forced_insecure
        self.counters = OpCounters()
        self.log = _TaggedLogger(log, self._log_tag())

    def _log_tag(self) -> str:
        tags = []
        if not self.secure:
            tags.append("INSECURE SIMULATION")
        if self.forced_insecure:
            tags.append("INSECURE PARAMETERS (<128-bit, forced)")
        return "[" + "; ".join(tags) + "] " if tags else ""

    # ------------------------------------------------------------------ helpers
    def normalize_step(self, step: int) -> int:
        """Left-rotation step in [0, slots): a negative step is a right rotation."""
        return int(step) % self.slots

    def _vector(self, values) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 0:
            return np.full(self.slots, float(v))
        v = v.ravel()
        if v.size > self.slots:
            raise ValueError(f"{v.size} values do not fit in {self.slots} slots")
        if not np.all(np.isfinite(v)):
            raise ValueError("cannot encode NaN or infinite values")
        if v.size < self.slots:
            v = np.concatenate([v, np.zeros(self.slots - v.size)])
        return v

    def _own(self, ct: Ciphertext) -> Ciphertext:
        if not isinstance(ct, Ciphertext):
            raise TypeError(f"expected a Ciphertext, got {type(ct).__name__}")
        if ct.engine is not self and ct.engine.key_id != self.key_id:
            raise KeyMismatch("ciphertext was made under another key set than this engine's")
        return ct

    def _need_level(self, ct: Ciphertext, what: str) -> None:
        if ct.level < 1:
            raise DepthExhausted(
                f"{what} needs one more multiplicative level but the ciphertext is at level 0 "
                f"(parameters {self.params.name}: {self.max_level} levels). Use a preset with more "
                f"levels, fewer iterations, or refresh the ciphertext.")

    def _align(self, a: Ciphertext, b: Ciphertext) -> tuple[Ciphertext, Ciphertext]:
        self._own(a), self._own(b)
        if a.level > b.level:
            a = self.drop_to_level(a, b.level)
        elif b.level > a.level:
            b = self.drop_to_level(b, a.level)
        return a, b

    def _zero(self, level: int) -> Ciphertext:
        """A fresh encryption of 0 at ``level`` (its scale is the level's): what an operation whose
        exact result would be a transparent ciphertext returns instead (see module docstring)."""
        self.counters.add("zero_result")
        with self.counters.time("encrypt"):
            return Ciphertext(self, level, self._encrypt(np.zeros(self.slots), level))

    def _result(self, level: int, op, *args) -> Ciphertext:
        """Run backend primitive ``op``; a transparent result becomes ``_zero(level)``."""
        try:
            return Ciphertext(self, level, op(*args))
        except Exception as exc:
            if not self._transparent_error(exc):
                raise
        return self._zero(level)

    def _transparent_error(self, exc: Exception) -> bool:
        """Whether ``exc`` is the backend refusing to produce a transparent ciphertext (backends
        raise ``TransparentResult``, or their library's own error: see seal_backend)."""
        return isinstance(exc, TransparentResult)

    def _mul_scale(self, level: int) -> float:
        """Scale a plaintext multiplier of a ciphertext at ``level`` is encoded at."""
        return float(self.params.scale)

    # ------------------------------------------------------------------ public API
    def encrypt(self, values, level: int | None = None) -> Ciphertext:
        """Encrypt up to ``slots`` real values (zero-padded) at ``level`` (default: the top).
        Raises ValueError for a level outside [0, max_level], more than ``slots`` values, NaN or infinite values.
        """
        level = self.max_level if level is None else int(level)
        if not 0 <= level <= self.max_level:
            raise ValueError(f"level must be in [0, {self.max_level}], got {level}")
        v = self._vector(values)
        with self.counters.time("encrypt"):
            data = self._encrypt(v, level)
        return Ciphertext(self, level, data)

    def decrypt(self, ct: Ciphertext) -> np.ndarray:
        """Decrypt to ``slots`` float64 values (raw: round or noise-flood before releasing them).
        Raises SecretKeyUnavailable on an engine rebuilt from public material only (a server's), KeyMismatch for a
        ciphertext of another engine.
        """
        self._own(ct)
        if not self.has_secret_key:
            raise SecretKeyUnavailable("this engine holds public material only and cannot decrypt")
        with self.counters.time("decrypt"):
            return self._decrypt(ct)

    def add(self, a: Ciphertext, b) -> Ciphertext:
        """``a + b``: ``b`` a Ciphertext (operands aligned to the lower level), a PlainVector, an array of at most
        ``slots`` values (zero-padded) or a scalar (broadcast to every slot). No level consumed; the result is at
        the lower operand level. A sum that cancels exactly is a fresh encryption of 0 (module docstring).
        Raises KeyMismatch for a ciphertext of another engine, TypeError when ``a`` is no Ciphertext, ValueError
        for too many, NaN or infinite plaintext values.
        """
        self._own(a)
        if isinstance(b, Ciphertext):
            a, b = self._align(a, b)
            with self.counters.time("add"):
                return self._result(a.level, self._add, a, b)
        with self.counters.time("add_plain"):
            return Ciphertext(self, a.level, self._add_plain(a, self._plain_for_add(b, a.level)))

    def sub(self, a: Ciphertext, b) -> Ciphertext:
        """``a - b``, with the operands, levels and errors of ``add``; ``x - x`` of the same ciphertext is exactly 0."""
        self._own(a)
        if isinstance(b, Ciphertext):
            a, b = self._align(a, b)
            if a.data is b.data:  # x - x: exactly 0 on every backend (transparent under SEAL)
                with self.counters.time("sub"):
                    return self._zero(a.level)
            with self.counters.time("sub"):
                return self._result(a.level, self._sub, a, b)
        return self.add(a, -np.asarray(b, dtype=np.float64) if not isinstance(b, PlainVector) else PlainVector(-b.values))

    def neg(self, a: Ciphertext) -> Ciphertext:
        """``-a`` at ``a``'s level (no level consumed). Raises KeyMismatch/TypeError as ``add``."""
        self._own(a)
        with self.counters.time("negate"):
            return Ciphertext(self, a.level, self._neg(a))

    def add_many(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        """Sum of ciphertexts (aligned to the lowest level).
        Raises ValueError for an empty list.
        """
        if not cts:
            raise ValueError("add_many needs at least one ciphertext")
        out = cts[0]
        for c in cts[1:]:
            out = self.add(out, c)
        return out

    def mul(self, a: Ciphertext, b) -> Ciphertext:
        """a x b: ciphertext (relinearised and rescaled), plaintext vector or scalar. One level."""
        if isinstance(b, Ciphertext):
            return self.mul_sum([(a, b)])
        if np.ndim(b) == 0 and not isinstance(b, PlainVector):
            return self.mul_scalar(a, b)
        return self.mul_plain(a, b)

    def square(self, a: Ciphertext) -> Ciphertext:
        """``a * a``, relinearised and rescaled: one level consumed, cheaper than ``mul(a, a)`` (one tensor square).
        Raises DepthExhausted when ``a`` is at level 0, KeyMismatch/TypeError as ``add``.
        """
        self._own(a)
        self._need_level(a, "square")
        with self.counters.time("square"):
            d = self._square(a)
        return self._relin_rescale(d, a.level)

    def mul_sum(self, pairs: Sequence[tuple[Ciphertext, Ciphertext]]) -> Ciphertext:
        """Σ aᵢ·bᵢ with a single relinearisation and rescale (cheaper than summing ``mul``s).
        Raises ValueError for no pairs, DepthExhausted when an operand is at level 0.
        """
        if not pairs:
            raise ValueError("mul_sum needs at least one pair")
        level = min(min(x.level, y.level) for x, y in pairs)
        acc = None
        for x, y in pairs:
            x, y = self._align(x, y)
            if x.level > level:
                x, y = self.drop_to_level(x, level), self.drop_to_level(y, level)
            self._need_level(x, "multiply")
            with self.counters.time("multiply"):
                t = self._tensor(x, y)
            if acc is None:
                acc = t
            else:
                with self.counters.time("add"):
                    acc = self._add_tensor_or_none(acc, t)
        if acc is None:  # the products cancelled exactly (transparent)
            return self._zero(level - 1)
        return self._relin_rescale(acc, level)

    def _add_tensor_or_none(self, t1, t2):
        """t1 + t2, or None where the sum is transparent (then the next term starts afresh)."""
        try:
            return self._add_tensor(t1, t2)
        except Exception as exc:
            if not self._transparent_error(exc):
                raise
        return None

    def _relin_rescale(self, tensor, level: int) -> Ciphertext:
        with self.counters.time("relinearize"):
            d = self._relinearize(tensor)
        with self.counters.time("rescale"):
            d = self._rescale(d, level)
        return Ciphertext(self, level - 1, d)

    def mul_plain(self, a: Ciphertext, values) -> Ciphertext:
        """a x plaintext vector (an array or a PlainVector), rescaled. One level."""
        self._own(a)
        self._need_level(a, "plaintext multiply")
        pv = values if isinstance(values, PlainVector) else PlainVector(self._vector(values))
        with self.counters.time("multiply_plain"):
            zero_key = ("mul_zero", a.level)
            if zero_key not in pv._cache:
                pv._cache[zero_key] = encodes_to_zero(pv.values, self._mul_scale(a.level))
            if pv._cache[zero_key]:
                return self._zero(a.level - 1)
            pt = self._plain_for_mul(pv, a.level)
            return self._result(a.level - 1, self._mul_plain, a, pt)

    def mul_scalar(self, a: Ciphertext, c: Scalar) -> Ciphertext:
        """a x c for a real constant c. One level (exact scale management needs the rescale).
        Raises ValueError for a NaN or infinite constant, DepthExhausted when ``a`` is at level 0.
        """
        self._own(a)
        self._need_level(a, "scalar multiply")
        if not np.isfinite(c):
            raise ValueError(f"cannot multiply by {c}")
        with self.counters.time("multiply_scalar"):
            if encodes_to_zero(float(c), self._mul_scale(a.level)):
                return self._zero(a.level - 1)
            return self._result(a.level - 1, self._mul_scalar, a, float(c))

    def rotate(self, a: Ciphertext, step: int) -> Ciphertext:
        """Rotate left by ``step`` slots (negative: right), cyclically over all slots.
        No level consumed; a step that is 0 modulo ``slots`` returns ``a`` itself. One Galois automorphism
        X -> X^(g^step) and a key switch with the step's Galois key (SEAL: g = 3, ``seal_backend.galois_element``;
        slot rotations as in Halevi–Shoup, "Algorithms in HElib", CRYPTO 2014).
        Raises MissingRotationKey when the engine has no Galois key for the step.
        """
        self._own(a)
        s = self.normalize_step(step)
        if s == 0:
            return a
        if s not in self.rotation_steps:
            raise MissingRotationKey(
                f"no Galois key for rotation step {step} (normalised {s}); declared steps: "
                f"{sorted(self.rotation_steps)[:20]}{'...' if len(self.rotation_steps) > 20 else ''}")
        with self.counters.time("rotate"):
            return Ciphertext(self, a.level, self._rotate(a, s))

    def sum_slots(self, a: Ciphertext, width: int, stride: int = 1) -> Ciphertext:
        """Rotate-and-sum: slot i receives Σ_{k<width} a[i + k·stride] (cyclic), in log2(width) rotations.

        Needs the keys ``rotate_sum_steps(width, stride)``. A negative stride spreads a value to
        the slots before it (slot i receives Σ a[i - k·|stride|]), i.e. replication.
        """
        _check_pow2(width)
        out = a
        for step in rotate_sum_steps(width, stride):
            out = self.add(out, self.rotate(out, step))
        return out

    def drop_to_level(self, a: Ciphertext, level: int) -> Ciphertext:
        """Lower ``a`` to ``level`` without changing its values (no-op if already there).
        Raises ValueError when ``level`` is above ``a.level``, DepthExhausted when it is below 0.
        """
        self._own(a)
        if level > a.level:
            raise ValueError(f"cannot raise a ciphertext from level {a.level} to {level}")
        if level == a.level:
            return a
        if level < 0:
            raise DepthExhausted("cannot drop below level 0")
        with self.counters.time("mod_switch"):
            return Ciphertext(self, level, self._drop(a, level))

    # ------------------------------------------------------------------ bootstrapping
    #: True for backends that can refresh a ciphertext without the secret key (see ``bootstrap``).
    can_bootstrap = False

    @property
    def bootstrap_level(self) -> int | None:
        """Level a bootstrapped ciphertext comes back at (None: this backend cannot bootstrap)."""
        return None

    def bootstrap(self, ct: Ciphertext) -> Ciphertext:
        """Raise ``ct`` to ``bootstrap_level`` without the secret key (same values, small extra error).

        Only backends with ``can_bootstrap`` implement it; SEAL has no bootstrapping, so its
        trainers refresh through the client instead (``--refresh client``).
        Source: CKKS bootstrapping (Cheon, Han, Kim, Kim, Song, "Bootstrapping for Approximate Homomorphic
        Encryption", EUROCRYPT 2018) as the backend's library implements it (desilofhe ``bootstrap``, OpenFHE
        ``EvalBootstrap``); the sim backend models it (level reset, bootstrap-sized noise when it has noise).
        Raises CKKSError on a backend (or parameters) without bootstrapping, KeyMismatch for a ciphertext of
        another engine.
        """
        self._own(ct)
        if not self.can_bootstrap:
            from .registry import bootstrapping_backends

            raise CKKSError(f"backend {self.backend_name} cannot bootstrap: use --refresh client "
                            f"(or a backend that bootstraps: {bootstrapping_backends()})")
        with self.counters.time("bootstrap"):
            data = self._bootstrap(ct)
        return Ciphertext(self, self.bootstrap_level, data)

    def _bootstrap(self, ct: Ciphertext):
        raise NotImplementedError

    # ------------------------------------------------------------------ serialisation
    def serialize(self, ct: Ciphertext) -> bytes:
        """Bytes of one ciphertext, tagged with this engine's parameters and key id."""
        from .container import pack
        self._own(ct)
        meta = {"kind": "ciphertext", "backend": self.backend_name, "params": self.params.fingerprint(),
                "key_id": self.key_id, "level": ct.level}
        with self.counters.time("serialize"):
            return pack(meta, {"ct": self._ct_to_bytes(ct)})

    def deserialize(self, data: bytes, *, verify: bool = True) -> Ciphertext:
        """Inverse of ``serialize``; refuses ciphertexts of other parameters, keys or backends.
        ``verify=False``: skip the payload's SHA-256 (the caller checked a digest over the file
        that holds ``data``: collection.read's ``digest``).
        Raises KeyMismatch for another backend, parameters or key; SerializationError for corrupted bytes.
        """
        from .container import unpack
        meta, parts = unpack(data, expect_kind="ciphertext", verify=verify)
        if meta.get("backend") != self.backend_name:
            raise KeyMismatch(f"ciphertext is from backend {meta.get('backend')!r}, engine is {self.backend_name!r}")
        if meta.get("params") != self.params.fingerprint():
            raise KeyMismatch("ciphertext was made under other CKKS parameters than this engine's")
        if meta.get("key_id") != self.key_id:
            raise KeyMismatch("ciphertext was encrypted under another key than this engine's "
                              f"(ciphertext key {meta.get('key_id')}, engine key {self.key_id})")
        level = int(meta["level"])
        with self.counters.time("deserialize"):
            data = self._ct_from_bytes(parts["ct"], level)
        return Ciphertext(self, level, data)

    def save_ciphertexts(self, path: str | os.PathLike, cts: Sequence[Ciphertext]) -> None:
        """Write a list of ciphertexts to one file: a collection (ckks/collection.py) holding them
        under the name "ct", written to a temporary name, then renamed."""
        from . import collection
        collection.write(path, self, {"ct": list(cts)})

    def load_ciphertexts(self, path: str | os.PathLike) -> list[Ciphertext]:
        """Inverse of ``save_ciphertexts``, one ciphertext at a time; SerializationError (truncated,
        garbled, another format), KeyMismatch (another key), FileNotFoundError."""
        from . import collection
        named, _ = collection.read(path, self, what=os.fspath(path))
        if set(named) != {"ct"}:
            raise SerializationError(f"{os.fspath(path)} holds ciphertexts named {sorted(named)}, not a list saved by "
                                     "save_ciphertexts")
        return named["ct"]

    @abc.abstractmethod
    def public_bytes(self) -> bytes:
        """Parameters, public key, relinearisation and Galois keys: all a server needs; no secret."""

    @abc.abstractmethod
    def secret_key_bytes(self) -> bytes:
        """The secret key on its own (raises SecretKeyUnavailable on a public engine)."""

    def _pack_secret_key(self, raw: bytes | None) -> bytes:
        """The secret-key container every backend writes (``raw``: the backend's key bytes)."""
        from .container import pack
        if not self.has_secret_key:
            raise SecretKeyUnavailable("this engine holds public material only")
        meta = {"kind": "secret_key", "backend": self.backend_name, "params": self.params.fingerprint(),
                "key_id": self.key_id}
        return pack(meta, {} if raw is None else {"sk": raw})

    def ciphertext_nbytes(self, ct: Ciphertext) -> int:
        """Size in bytes of ``ct``'s backend payload (without the container header ``serialize`` adds); it shrinks
        as the level drops (SEAL, OpenFHE, desilo; constant on the sim).
        """
        return len(self._ct_to_bytes(ct))

    def describe(self) -> str:
        """One line: backend, parameters, levels, slots, number of Galois (rotation) keys and whether the engine
        holds the secret key.
        """
        return (f"{self.backend_name} {self.params.describe()} levels={self.max_level} slots={self.slots} "
                f"rotation keys={len(self.rotation_steps)} secret key={'yes' if self.has_secret_key else 'no'}")

    # ------------------------------------------------------------------ plaintext encodings
    def _plain_for_add(self, values, level: int):
        pv = values if isinstance(values, PlainVector) else PlainVector(self._vector(values))
        key = ("add", level)
        if key not in pv._cache:
            with self.counters.time("encode"):
                pv._cache[key] = self._encode_add(pv.values, level)
        return pv._cache[key]

    def _plain_for_mul(self, pv: PlainVector, level: int):
        key = ("mul", level)
        if key not in pv._cache:
            with self.counters.time("encode"):
                pv._cache[key] = self._encode_mul(pv.values, level)
        return pv._cache[key]

    # ------------------------------------------------------------------ backend primitives
    @abc.abstractmethod
    def _encrypt(self, v: np.ndarray, level: int): ...

    @abc.abstractmethod
    def _decrypt(self, ct: Ciphertext) -> np.ndarray: ...

    @abc.abstractmethod
    def _encode_add(self, v: np.ndarray, level: int): ...

    @abc.abstractmethod
    def _encode_mul(self, v: np.ndarray, level: int): ...

    @abc.abstractmethod
    def _add(self, a: Ciphertext, b: Ciphertext): ...

    @abc.abstractmethod
    def _add_plain(self, a: Ciphertext, pt): ...

    @abc.abstractmethod
    def _sub(self, a: Ciphertext, b: Ciphertext): ...

    @abc.abstractmethod
    def _neg(self, a: Ciphertext): ...

    @abc.abstractmethod
    def _tensor(self, a: Ciphertext, b: Ciphertext): ...

    @abc.abstractmethod
    def _square(self, a: Ciphertext): ...

    @abc.abstractmethod
    def _add_tensor(self, t1, t2): ...

    @abc.abstractmethod
    def _relinearize(self, t): ...

    @abc.abstractmethod
    def _rescale(self, t, level: int): ...

    @abc.abstractmethod
    def _mul_plain(self, a: Ciphertext, pt): ...

    @abc.abstractmethod
    def _mul_scalar(self, a: Ciphertext, c: float): ...

    @abc.abstractmethod
    def _rotate(self, a: Ciphertext, step: int): ...

    @abc.abstractmethod
    def _drop(self, a: Ciphertext, level: int): ...

    @abc.abstractmethod
    def _ct_to_bytes(self, ct: Ciphertext) -> bytes: ...

    @abc.abstractmethod
    def _ct_from_bytes(self, b: bytes, level: int): ...


def read_secret_key(secret: bytes, backend: str, params: CKKSParams) -> tuple[str, bytes | None]:
    """(key id, raw key bytes) of a secret-key container (``Engine.secret_key_bytes``), checked to be
    of ``backend`` and ``params``: KeyMismatch otherwise. Raw bytes are None for the sim backend.
    Used to make a job's evaluation keys (public, relinearisation, Galois) under a stored secret key."""
    from .container import unpack
    smeta, sparts = unpack(secret, expect_kind="secret_key")
    if smeta.get("backend") != backend or smeta.get("params") != params.fingerprint():
        raise KeyMismatch(f"the secret key is a {smeta.get('backend')} key for other parameters than "
                          f"{backend} {params.name}")
    return str(smeta["key_id"]), sparts.get("sk")


def unpack_secret_key(public_meta: dict, params: CKKSParams, secret: bytes) -> bytes | None:
    """The raw key bytes of a secret-key container, after checking it belongs to the public
    context (same key id and parameters); None for a backend with no key material (sim).
    Raises KeyMismatch when the secret key is of another key id or parameters, SerializationError when
    ``secret`` is not a secret-key container.
    """
    from .container import unpack
    smeta, sparts = unpack(secret, expect_kind="secret_key")
    if smeta.get("key_id") != public_meta["key_id"] or smeta.get("params") != params.fingerprint():
        raise KeyMismatch("secret key does not belong to this public context "
                          f"(secret key {smeta.get('key_id')}, context {public_meta['key_id']})")
    return sparts.get("sk")


class _TaggedLogger(logging.LoggerAdapter):
    """Prefixes every log line with INSECURE tags where they apply."""

    def __init__(self, logger: logging.Logger, tag: str) -> None:
        super().__init__(logger, {})
        self.tag = tag

    def process(self, msg, kwargs):
        return self.tag + str(msg), kwargs
