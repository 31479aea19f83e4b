"""The server's checkpoint of its encrypted training state (saved after every step).

One file, a log of records: each record is a collection (ckks/collection.py, the one format for
ciphertexts) holding the state's names whose ciphertexts CHANGED since the record before, with
the whole state's names and counts, the trainer's counters and the job's fingerprint in its meta.
Reading the records in order, each name's latest ciphertexts are the state.

Why a log: a trainer whose state grows (mlr keeps every gradient H_0..H_t, all read by later
look-ahead combinations) used to rewrite all of it at every step, O(T^2) bytes in all; now each
step appends only its new gradient. A step that changes every name (mlp's weights) instead
rewrites the file (written to a temporary sibling, fsynced, renamed over the old one), as does a
log whose superseded records outweigh its live state (compaction).

Crash safety: an appended record is fsynced; a record cut off by a kill mid-append (or garbled)
ends the log there (``collection.TornTail``): the state is that of the records before it, i.e. of
the last completed step, and the next append starts where the good part ends. A resumed job
therefore loses at most the step that was running. The file holds ciphertexts and public
counters only: nothing in it is secret from the server.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import weakref

from hetrain._atomic import atomic_write
from hetrain.ckks import CKKSError, KeyMismatch, collection
from hetrain.errors import HetrainUserError

log = logging.getLogger("hetrain.checkpoint")
COMPACT_FACTOR = 1  # rewrite the log when its dead bytes would exceed this many times its live ones


class CheckpointError(HetrainUserError):
    """A checkpoint exists but does not belong to this job (other keys, other shape), or is unreadable."""


def job_fingerprint(manifest: dict) -> str:
    """What identifies a job bundle: the checksums of its inputs and job description (from its
    manifest). Two jobs under the same keys (one key pair, several jobs) differ here."""
    sha = manifest.get("sha256", {})
    return hashlib.sha256(json.dumps([sha.get("inputs.bin"), sha.get("job.json")]).encode()).hexdigest()[:32]


class StateCheckpoint:
    """A trainer's ``checkpoint`` hook (models/base.py): one state file bound to a job's engine
    (its key) and, with ``job``, to one job bundle (``job_fingerprint``).

    The state is a dict name -> list of ciphertexts. ``save`` appends the names whose ciphertexts
    are not the very objects saved last time (held by weak reference) (trainers keep an unchanged ciphertext as the same
    object: mlr's earlier gradients), or rewrites the file when everything changed. ``check()``
    reads and verifies the file before any work (the server calls it); ``load()`` then hands the
    trainer that same state. Counters of the bytes written: ``bytes_written``, ``records``.
    """

    def __init__(self, path, engine, job: str | None = None) -> None:
        self.path, self.engine, self.job = pathlib.Path(path), engine, job
        self._loaded: tuple[dict, dict] | None = None
        self._saved: dict[str, list] | None = None   # weak references to the state the file holds
        self._end = 0                                # where the file's good part ends
        self._live: dict[str, int] = {}              # bytes of each name's latest record in the file
        self.bytes_written = 0
        self.records = 0

    # ------------------------------------------------------------------ writing
    def save(self, state: dict, meta: dict) -> None:
        """Record ``state`` (name -> list of ciphertexts) and ``meta`` (JSON-able public counters)
        after a completed step; on return the record is on disk (fsynced)."""
        state = {k: list(v) for k, v in state.items()}
        names = {k: len(v) for k, v in state.items()}
        rec_meta = {"checkpoint": {"names": names, "meta": meta, "job": self.job}}
        prev = self._saved
        changed = state if prev is None else {k: v for k, v in state.items()
                                              if k not in prev or len(prev[k]) != len(v)
                                              or any(ref() is not ct for ref, ct in zip(prev[k], v))}
        live_unchanged = sum(n for k, n in self._live.items() if k in state and k not in changed)
        if prev is None or len(changed) == len(state) or self._end - live_unchanged > COMPACT_FACTOR * live_unchanged:
            blob = collection.pack(self.engine, state, rec_meta)  # the state is in memory already: so is its copy
            atomic_write(self.path, blob, durable=True)          # fsynced, then renamed over the old file
            size, self._end, self._live = len(blob), len(blob), _shares(len(blob), state)
            del blob
        else:
            with open(self.path, "r+b") as f:
                f.truncate(self._end)  # a torn record after the good part goes
                f.seek(self._end)
                size = collection.append(f, self.engine, changed, rec_meta)
                f.flush()
                os.fsync(f.fileno())
            self._end += size
            self._live = {k: n for k, n in self._live.items() if k in state}
            self._live.update(_shares(size, changed))
        self.bytes_written += size
        self.records += 1
        self._saved = _refs(state)

    # ------------------------------------------------------------------ reading
    def check(self) -> dict | None:
        """The saved state's meta (counters), or None without a checkpoint; CheckpointError if the
        file belongs to other keys or another job, or is unreadable. The state is kept for the next ``load()``."""
        self._loaded = self._read()
        return None if self._loaded is None else dict(self._loaded[1])

    def load(self) -> tuple[dict, dict] | None:
        """``(state, meta)`` of the last completed step, or None if there is no checkpoint yet.
        Raises CheckpointError for a file of other keys, another job or no named state.
        """
        saved, self._loaded = (self._loaded or self._read()), None
        return saved

    def _read(self) -> tuple[dict, dict] | None:
        if not self.path.exists():
            return None
        state: dict[str, list] = {}
        live: dict[str, int] = {}
        names, meta, end = None, None, 0
        try:
            for named, rec, rec_end in collection.iter_file(self.path, self.engine, f"checkpoint {self.path}"):
                info = rec.get("checkpoint")
                if not isinstance(info, dict) or not isinstance(info.get("names"), dict):
                    raise CheckpointError(f"checkpoint {self.path} does not hold a named training state")
                if self.job is not None and info.get("job") != self.job:
                    raise CheckpointError(f"checkpoint {self.path} was written for another job bundle (same keys, "
                                          "other inputs or job description): delete it to start this job from the "
                                          "beginning")
                state.update(named)
                live.update(_shares(rec_end - end, named))
                names, meta, end = info["names"], info.get("meta", {}), rec_end
        except collection.TornTail as exc:
            log.warning("%s; resuming from the record before it", exc)
        except collection.OldFormat as exc:
            raise CheckpointError(f"checkpoint {self.path} was written by an earlier hetrain (format {exc.kind!r}): "
                                  "delete it to start this job from the beginning (or resume it with that "
                                  "hetrain)") from None
        except KeyMismatch as exc:
            raise CheckpointError(f"checkpoint {self.path} was written under keys other than this job's ({exc}): "
                                  "delete it to start this job from the beginning (or use the job's keys)") from None
        except CKKSError as exc:
            raise CheckpointError(f"checkpoint {self.path} is unreadable ({exc}): delete it to start this job from "
                                  "the beginning") from None
        if names is None:
            raise CheckpointError(f"checkpoint {self.path} holds no complete record: delete it to start this job "
                                  "from the beginning")
        if any(k not in state or len(state[k]) != n for k, n in names.items()):
            raise CheckpointError(f"checkpoint {self.path} does not hold a named training state")
        out = {k: state[k] for k in names}
        self._saved, self._end, self._live = _refs(out), end, {k: live.get(k, 0) for k in names}
        return out, meta


def _refs(state: dict[str, list]) -> dict[str, list]:
    """Weak references to the state's ciphertexts: "unchanged" means the very same object, still
    alive (a weak reference never matches a new object at a reused address), and the checkpoint
    keeps no earlier state alive (mlp's replaced weights are freed as soon as the trainer drops them)."""
    return {k: [weakref.ref(ct) for ct in v] for k, v in state.items()}


def _shares(size: int, named: dict[str, list]) -> dict[str, int]:
    """A record's ``size`` bytes split among its names by their ciphertext counts (an estimate of
    each name's bytes in the file: what compaction weighs)."""
    total = max(1, sum(len(v) for v in named.values()))
    return {k: size * len(v) // total for k, v in named.items()}
