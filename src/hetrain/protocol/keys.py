"""The data owner's key directory: the secret key, its public record, and each job's private half.

    hetrain keygen --out KEYS/ [--preset n16384] [--backend seal]

    KEYS/                      mode 0700
        secret.key             the secret-key container (mode 0600): never in any job bundle
        key.json               key id, backend, CKKS parameters (public)
        public.bin             public context of the key: public and relinearisation keys, no Galois keys
        jobs/<job id>/         the client's private record of each job encrypted under this key (0700):
                               preprocessing, the preprocessed training rows for the plaintext twin,
                               validation rows, the planner's choices, the refresh client's state

Evaluation keys are made **per job**, not once: ``hetrain encrypt`` makes fresh public,
relinearisation and Galois keys under the stored secret key for exactly the rotations that job's
plan needs (``ckks.create_engine(..., secret_key=...)``). A Galois key weighs ~200 MB at N=32768 and
the rotations depend on the job's shapes and packing: keys made once for every rotation a job
might use (2·log2(N/2) of them) would cost gigabytes in every bundle. The secret key and its key id
stay the same, so every job of a key directory decrypts with it.

Nothing here is read by the server: its process never opens KEYS/ (tests assert it).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import time

from hetrain import ckks
from hetrain.ckks.container import unpack
from hetrain.errors import HetrainUserError

SECRET = "secret.key"
RECORD = "key.json"
PUBLIC = "public.bin"
JOBS = "jobs"
FORMAT = "hetrain-keys"
VERSION = 1
_JOB_ID = re.compile(r"^[0-9a-f]{16}$")


class KeyDirError(HetrainUserError):
    """A key directory is missing, incomplete, of another format, or does not hold the job asked for."""


def _private_dir(path: pathlib.Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_private(path: pathlib.Path, data: bytes | str) -> None:
    """Write a file only its owner can read (created 0600, then renamed into place)."""
    from .files import atomic_write

    atomic_write(path, data, mode=0o600)


class KeyDir:
    """An opened key directory (``create`` or ``open``)."""

    def __init__(self, path: pathlib.Path, record: dict) -> None:
        self.path, self.record = path, record

    # ------------------------------------------------------------------ make / open
    @classmethod
    def create(cls, path, backend: str = "seal", preset: str | ckks.CKKSParams = "n16384", *,
               force_insecure: bool = False, seed: int | None = None, **engine_options) -> "KeyDir":
        """Make a secret key for ``preset`` in a new (or empty) directory ``path``.

        Raises KeyDirError if ``path`` already holds keys (they are never overwritten), CKKSError
        for parameters below 128-bit security unless ``force_insecure``."""
        path = pathlib.Path(path)
        if (path / SECRET).exists() or (path / RECORD).exists():
            raise KeyDirError(f"{path} already holds keys (key {_key_id_of(path)}); keys are never overwritten: "
                              "choose another --out directory")
        if path.exists() and not path.is_dir():
            raise KeyDirError(f"{path} exists and is not a directory")
        if backend not in ckks.BACKENDS:
            raise KeyDirError(f"unknown backend {backend!r}; choose one of {', '.join(ckks.BACKENDS)}")
        opts = dict(engine_options)
        if ckks.registry.get(backend).preset_needs_engine and isinstance(preset, ckks.CKKSParams):
            preset = preset.name  # such a backend (desilo) builds its own ring from the preset's name
        if backend == "sim" and seed is not None:
            opts["seed"] = seed
        # the key directory holds no evaluation keys: OpenFHE's bootstrapping keys (≈8 GB at openfhe-boot) are
        # made per job (job_engine)
        only_keys = {"bootstrap_keys": False} if backend == "openfhe" else {}
        engine = ckks.create_engine(backend, preset, (), force_insecure=force_insecure, **opts, **only_keys)
        _private_dir(path)
        _write_private(path / SECRET, engine.secret_key_bytes())
        record = {"format": FORMAT, "version": VERSION, "key_id": engine.key_id, "backend": backend,
                  "params": engine.params.to_dict(), "created_at": time.time(), "force_insecure": bool(force_insecure),
                  "engine_options": {k: v for k, v in opts.items() if k != "seed"}}
        from .files import atomic_write

        atomic_write(path / PUBLIC, engine.public_bytes())
        atomic_write(path / RECORD, json.dumps(record, indent=1))  # last: marks the directory complete
        return cls(path, record)

    @classmethod
    def open(cls, path) -> "KeyDir":
        """KeyDirError unless ``path`` is a complete key directory this hetrain reads."""
        path = pathlib.Path(path)
        if not (path / RECORD).is_file():
            raise KeyDirError(f"{path} is not a hetrain key directory (no {RECORD}): make one with "
                              f"`hetrain keygen --out {path}`")
        try:
            record = json.loads((path / RECORD).read_bytes())
        except (OSError, ValueError) as exc:
            raise KeyDirError(f"{path / RECORD} is unreadable: {exc}") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("version") != VERSION:
            raise KeyDirError(f"{path} is not a hetrain key directory of version {VERSION}")
        if not (path / SECRET).is_file():
            raise KeyDirError(f"{path} has no secret key ({SECRET}): it is not the data owner's key directory")
        return cls(path, record)

    # ------------------------------------------------------------------ facts
    @property
    def key_id(self) -> str:
        """Id of the key set (recorded in every ciphertext, bundle and model trained under it)."""
        return str(self.record["key_id"])

    @property
    def backend(self) -> str:
        """CKKS backend the keys belong to ("seal", "sim", "desilo", "openfhe")."""
        return str(self.record["backend"])

    @property
    def params(self) -> ckks.CKKSParams:
        """The keys' CKKS parameters."""
        return ckks.CKKSParams.from_dict(self.record["params"])

    @property
    def force_insecure(self) -> bool:
        """Whether the keys were made with force_insecure (parameters below 128-bit security)."""
        return bool(self.record.get("force_insecure", False))

    def check_forced(self, force_insecure: bool) -> None:
        """Keys made with force_insecure (parameters below 128-bit security) encrypt data only when the
        caller says so again: KeyDirError naming --force-insecure otherwise."""
        if self.force_insecure and not force_insecure:
            raise KeyDirError(f"the keys in {self.path} were made with --force-insecure ({self.backend} "
                              f"{self.params.name}, below 128-bit security): encrypting data under them needs "
                              "--force-insecure (force_insecure=True) too")

    def secret_bytes(self) -> bytes:
        """The secret key file's bytes (``Engine.secret_key_bytes`` format); OSError when it cannot be read."""
        return (self.path / SECRET).read_bytes()

    # ------------------------------------------------------------------ engines
    def job_engine(self, rotations, **options) -> ckks.Engine:
        """An engine with the secret key and fresh evaluation keys for exactly ``rotations`` (a job's)."""
        opts = {**self.record.get("engine_options", {}), **options}
        return ckks.create_engine(self.backend, self.params, rotations, force_insecure=self.force_insecure,
                                  secret_key=self.secret_bytes(), **opts)

    def open_engine(self, public: bytes) -> ckks.Engine:
        """The engine of a job's public context (``JOB/public_context.bin``) with this secret key:
        KeyDirError if the job was encrypted under another key."""
        meta, _ = unpack(public, expect_kind="public_context")
        if meta.get("key_id") != self.key_id:
            raise KeyDirError(f"the job was encrypted under key {meta.get('key_id')}; {self.path} holds key "
                              f"{self.key_id}: use the key directory that encrypted it")
        return ckks.load_engine(public, self.secret_bytes(), force_insecure=self.force_insecure)

    # ------------------------------------------------------------------ the client's job records
    def job_dir(self, job_id: str, create: bool = False) -> pathlib.Path:
        """KEYS/jobs/<job_id>/ (private); KeyDirError if it does not exist and ``create`` is False."""
        if not _JOB_ID.match(str(job_id)):
            raise KeyDirError(f"malformed job id {job_id!r}")
        d = self.path / JOBS / job_id
        if create:
            _private_dir(self.path / JOBS)
            _private_dir(d)
        elif not d.is_dir():
            raise KeyDirError(f"{self.path} holds no record of job {job_id}: that job was encrypted with another "
                              "key directory (or its record was deleted)")
        return d


def _key_id_of(path: pathlib.Path) -> str:
    try:
        return json.loads((path / RECORD).read_bytes()).get("key_id", "?")
    except (OSError, ValueError, AttributeError):
        return "?"
