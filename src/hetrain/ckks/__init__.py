"""hetrain.ckks: the only package that imports a homomorphic-encryption library.

    from hetrain import ckks
    eng = ckks.create_engine("seal", "n16384", rotations=[1, 2, 4])
    ct = eng.encrypt(x); y = eng.decrypt(eng.rotate(ct * ct, 1))

Backends: ``seal`` (Microsoft SEAL via TenSEAL, real encryption), ``sim`` (NumPy, INSECURE,
for tests and planning only) and the optional ``desilo`` (desilofhe, real encryption with
bootstrapping; non-commercial licence, installed only on request: ``pip install hetrain[desilo]``) and the
optional ``openfhe`` (OpenFHE, BSD-2, real encryption with bootstrapping; Python 3.10 wheel:
``pip install 'hetrain[openfhe]'``). Each is one ``registry.Backend`` record (registry.py), the one
place every other layer reads backends from; a new backend is one ``registry.register`` call.
A server rebuilds an engine from ``eng.public_bytes()`` with ``load_engine``; it can compute but never decrypt.
"""
from __future__ import annotations

import os
from typing import Iterable

from .container import read_header
from .counters import OpCounters
from .engine import Ciphertext, Engine, PlainVector, read_secret_key, rotate_sum_steps
from .errors import (CKKSError, DepthExhausted, InsecureParameters, KeyMismatch, MissingRotationKey,
                     SecretKeyUnavailable, SerializationError)
from .params import PRESETS, TEST_PRESETS, CKKSParams, get_params, smallest_preset_with_levels

from . import registry
from .registry import Backend, BackendUnavailable


def __getattr__(name: str):
    """``BACKENDS`` and ``BOOTSTRAP_BACKENDS``: read from the registry at each access, so a backend
    registered later (``registry.register``) is listed too."""
    if name == "BACKENDS":
        return registry.names()
    if name == "BOOTSTRAP_BACKENDS":  # backends that can bootstrap (sim: only with a bootstrap level)
        return tuple(b.name for b in registry.backends() if b.bootstraps)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_engine(backend: str = "seal", params: str | CKKSParams = "n16384", rotations: Iterable[int] = (),
                  *, force_insecure: bool = False, **options) -> Engine:
    """Fresh keys for ``params`` (a preset name or CKKSParams), with Galois keys for ``rotations`` only.

    ``backend``: a registered backend's name (``registry.names()``; BackendUnavailable for another name
    or a backend whose library is not installed). Its engine class is imported now, not before.
    ``backend="sim"`` is an INSECURE NumPy simulation (options: ``noise``, ``seed``, ``bootstrap_level``).
    ``backend="desilo"`` takes "desilo-boot" (bootstrapping), "desilo-l<L>", or a SEAL preset (same
    level count, desilofhe's ring); options ``threads``, ``mode`` ("cpu"/"gpu"), ``bootstrap_key_size``.
    ``backend="openfhe"`` takes its presets ("openfhe-boot": 128-bit, N=2^16, 1024 slots, bootstrapping, 6 levels;
    "openfhe-l10": 128-bit, no bootstrapping; "openfhe-test", "openfhe-boot-test[-sparse]": INSECURE test rings)
    or a SEAL preset / CKKSParams (same ring, levels and scale, no bootstrapping; OpenFHE's own 128-bit
    check applies, force_insecure to go below it).
    Every backend takes ``secret_key=`` (``secret_key_bytes()`` of an earlier engine of the same backend
    and parameters, else KeyMismatch): the engine keeps that secret key and its key id and makes fresh
    public, relinearisation and Galois keys (a job's evaluation keys under the data owner's key).
    Raises ValueError for an unknown backend or preset, InsecureParameters for parameters below 128-bit
    security without ``force_insecure``, KeyMismatch for a ``secret_key`` of other parameters, CKKSError when
    an optional backend's library is not installed.
    """
    info = registry.get(backend)
    cls = info.engine_class()
    return cls(params if info.own_presets else get_params(params), rotations, force_insecure=force_insecure,
               **options)


def owner_forced_insecure(public: bytes) -> bool:
    """Whether the data owner made the public context ``public`` with ``force_insecure`` (parameters below
    128-bit security; recorded in the context by every backend): a server then loads it with
    ``force_insecure=True`` and every log line says INSECURE. Weak parameters only expose the owner's own
    data, so the owner's recorded choice is the one that counts; a context that does not record it is
    refused below 128 bits as before."""
    return read_header(public, expect_kind="public_context").get("forced_insecure") is True


def load_engine(public: bytes, secret: bytes | None = None, *, force_insecure: bool = False,
                verify: bool = True) -> Engine:
    """Rebuild an engine from ``public_bytes()`` (and optionally ``secret_key_bytes()``).
    ``verify=False`` (seal): skip the key parts' SHA-256, for bytes whose digest the caller checked.
    Raises SerializationError for bytes that are not a public context (or of an unknown backend),
    KeyMismatch when ``secret`` belongs to another key set, InsecureParameters as ``create_engine``.
    """
    meta = read_header(public, expect_kind="public_context")
    info = registry.by_container_name(meta.get("backend"))
    if info is None:
        raise SerializationError(f"unknown backend {meta.get('backend')!r} in public context")
    extra = {"verify": verify} if "verify" in info.load_options else {}
    return info.engine_class().from_bytes(public, secret, force_insecure=force_insecure, **extra)


def load_engine_file(path, secret: bytes | None = None, *, verify: bool = True) -> Engine:
    """``load_engine`` of a public context file, as its data owner made it (``owner_forced_insecure``). A backend
    that reads its keys from a file itself (OpenFHE: ``from_public_file``, which checks each part as it reads it;
    gigabytes at N=2^16) never holds them as bytes; the others read the file (``verify=False``: the caller checked
    the file's SHA-256). Raises SerializationError (also for an unknown backend), InsecureParameters,
    BackendUnavailable (a backend whose library is not installed)."""
    from .container import read_header_file
    meta = read_header_file(path, expect_kind="public_context")
    forced = meta.get("forced_insecure") is True
    info = registry.by_container_name(meta.get("backend"))
    if info is None:
        raise SerializationError(f"unknown backend {meta.get('backend')!r} in public context {os.fspath(path)}")
    cls = info.engine_class()
    if hasattr(cls, "from_public_file"):  # the backend streams its keys from the file itself
        return cls.from_public_file(path, secret, force_insecure=forced)
    with open(path, "rb") as f:
        return load_engine(f.read(), secret, force_insecure=forced, verify=verify)


__all__ = [
    "BACKENDS", "BOOTSTRAP_BACKENDS", "Backend", "BackendUnavailable", "PRESETS", "CKKSParams", "Ciphertext", "CKKSError", "DepthExhausted", "Engine",
    "InsecureParameters", "KeyMismatch", "MissingRotationKey", "OpCounters", "PlainVector",
    "SecretKeyUnavailable", "SerializationError", "TEST_PRESETS", "create_engine", "get_params", "load_engine",
    "load_engine_file", "owner_forced_insecure", "read_secret_key", "registry",
    "rotate_sum_steps", "smallest_preset_with_levels",
]
