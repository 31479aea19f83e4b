"""The server's checkpoint of its encrypted training state (written after every step).

One file: a JSON header (step counter, key id, anything JSON-able) and the serialised state
ciphertexts. Written to a temporary sibling, flushed to disk, then renamed over the old one, so
a job killed at any instant leaves either the previous or the new checkpoint, never half of one;
a resumed job therefore loses at most the step that was running. The file holds ciphertexts and
public counters only: nothing in it is secret from the server.
"""
from __future__ import annotations

import hashlib
import json
import pathlib

from hetrain.ckks.container import pack, unpack
from hetrain.errors import HetrainUserError

KIND = "hetrain_checkpoint"


class CheckpointError(HetrainUserError):
    """A checkpoint exists but does not belong to this job (other keys, other shape)."""


def save(path, engine, state: list, meta: dict) -> None:
    """Atomically write ``state`` (ciphertexts) and ``meta`` (JSON-able) to ``path``."""
    header = {"kind": KIND, "key_id": engine.key_id, "n": len(state), "meta": json.dumps(meta)}
    blob = pack(header, {str(i): engine.serialize(ct) for i, ct in enumerate(state)})
    from .files import atomic_write

    atomic_write(path, blob, durable=True)  # flushed to disk, then renamed over the old one


def load(path, engine) -> tuple[list, dict] | None:
    """``(state, meta)`` from ``path``, or None if there is no checkpoint yet.
    Raises CheckpointError for a checkpoint of another key, SerializationError for a corrupted file.
    """
    path = pathlib.Path(path)
    if not path.exists():
        return None
    header, parts = unpack(path.read_bytes(), expect_kind=KIND)
    if header.get("key_id") != engine.key_id:
        raise CheckpointError(f"checkpoint {path} was written under key {header.get('key_id')}, "
                              f"this job's key is {engine.key_id}: delete it to start this job from the beginning "
                              "(or use the job's keys)")
    state = [engine.deserialize(parts[str(i)]) for i in range(int(header["n"]))]
    return state, json.loads(header["meta"])


def job_fingerprint(manifest: dict) -> str:
    """What identifies a job bundle: the checksums of its inputs and job description (from its
    manifest). Two jobs under the same keys (one key pair, several jobs) differ here."""
    sha = manifest.get("sha256", {})
    return hashlib.sha256(json.dumps([sha.get("inputs.bin"), sha.get("job.json")]).encode()).hexdigest()[:32]


class StateCheckpoint:
    """A trainer's ``checkpoint`` hook (models/base.py): one state file bound to a job's engine
    (its key) and, with ``job``, to one job bundle (``job_fingerprint``).

    The state is a dict name -> list of ciphertexts; stored flat with the names in the header.
    ``check()`` reads and verifies the file before any work (the server calls it); ``load()`` then
    hands the trainer that same state.
    """

    def __init__(self, path, engine, job: str | None = None) -> None:
        self.path, self.engine, self.job = pathlib.Path(path), engine, job
        self._loaded: tuple[dict, dict] | None = None

    def save(self, state: dict, meta: dict) -> None:
        """Atomically write ``state`` (name -> list of ciphertexts) and ``meta`` (JSON-able counters) to the
        checkpoint file (fsync, then rename), with the names and, if set, the job fingerprint in the header.
        """
        names = {k: len(v) for k, v in state.items()}
        extra = {"_names": names} if self.job is None else {"_names": names, "_job": self.job}
        save(self.path, self.engine, [ct for v in state.values() for ct in v], {**meta, **extra})

    def check(self) -> dict | None:
        """The saved state's meta (counters), or None without a checkpoint; CheckpointError if the
        file belongs to other keys or another job. The state is kept for the next ``load()``."""
        self._loaded = self._read()
        return None if self._loaded is None else dict(self._loaded[1])

    def load(self) -> tuple[dict, dict] | None:
        """``(state, meta)`` as ``save`` wrote them (the state ``check`` already read, if it ran), or None without a
        checkpoint. Raises CheckpointError for a file of other keys, another job or no named state,
        SerializationError for a corrupted file.
        """
        saved, self._loaded = (self._loaded or self._read()), None
        return saved

    def _read(self) -> tuple[dict, dict] | None:
        saved = load(self.path, self.engine)
        if saved is None:
            return None
        flat, meta = saved
        names = meta.pop("_names", None)
        job = meta.pop("_job", None)
        if names is None or sum(names.values()) != len(flat):
            raise CheckpointError(f"checkpoint {self.path} does not hold a named training state")
        if self.job is not None and job != self.job:
            raise CheckpointError(f"checkpoint {self.path} was written for another job bundle (same keys, other "
                                  f"inputs or job description): delete it to start this job from the beginning")
        out, pos = {}, 0
        for k, n in names.items():
            out[k], pos = flat[pos:pos + n], pos + n
        return out, meta
