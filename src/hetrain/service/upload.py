"""Receiving a job bundle over HTTP: a tar stream written to disk as it arrives, then checked.

The body of ``POST /v1/jobs`` is an uncompressed tar (GNU or ustar) of the four files that
``hetrain.protocol.files.write_job`` writes. It is parsed block by block while it streams in, so
a multi-gigabyte public context never sits in memory, and the limits are enforced as bytes
arrive: the size limit (413), the disk quota (``on_bytes`` raises jobs.QuotaExceeded: 507), a
stall of ``stall_timeout`` seconds without a byte (408), the JSON files' size (400), a full disk (507).

Then, before the job is queued (``check_bundle``): unknown files, links, missing files and checksum
mismatches are refused here, and a child process under a memory limit (``CHECK_MEMORY_BYTES``)
scans every byte of every received file for a secret key by its content (protocol/secret_scan.py:
refused with "the upload holds a secret key") and checks every declared shape and size against
the ciphertexts and the trainer's plan (protocol/bundle_check.py). Nothing a job claims is sized
in the service process itself.
No FastAPI here: the app hands over an async iterator of byte chunks.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tarfile
from typing import AsyncIterator, BinaryIO, Callable

import logging

import anyio

from hetrain.ckks.container import MAGIC
from hetrain.errors import HetrainUserError
from hetrain.models.base import get_trainer
from hetrain.protocol import files
from hetrain.protocol.bundle_check import MAX_JSON_BYTES, read_json
from hetrain.protocol.runner import _child_setup, child_env

BUNDLE_FILES = (files.MANIFEST, files.JOB, files.PUBLIC_CONTEXT, files.INPUTS)
JSON_FILES = (files.MANIFEST, files.JOB)
MAX_MEMBERS = 8  # the four bundle files, plus a few strays we read only to explain the refusal
CHECK_MEMORY_BYTES = 2 * 1024 ** 3  # the checking child's data segment: imports, SEAL contexts, one key candidate
CHECK_TIMEOUT_S = 600.0             # it reads every byte once: ~1 GB/s, plus the plan
DEFAULT_STALL_S = 300.0
SECRET_MESSAGE = "the upload holds a secret key: refused"
QUERY_TASK = "inference"  # job.json's task in a query bundle (protocol/inference.py)
_BLOCK = tarfile.BLOCKSIZE
log = logging.getLogger("hetrain.service")
_FLUSH = 1 << 20  # write to disk in 1 MiB pieces (in a worker thread, off the event loop)


class UploadError(HetrainUserError):
    """The upload is not an acceptable job bundle (HTTP 400)."""

    status = 400


class UploadTooLarge(UploadError):
    """The upload is over the service's size limit (HTTP 413)."""

    status = 413


class SecretKeyRefused(UploadError):
    """The upload contains secret-key material: the service holds public material only (HTTP 400)."""


class UploadStalled(UploadError):
    """No byte of the upload arrived for the service's upload timeout (HTTP 408)."""

    status = 408


class DiskFull(UploadError):
    """The disk (or the service's quota) has no room for the upload (HTTP 507)."""

    status = 507


class _Reader:
    """Exact-size reads over an async iterator of chunks, counting bytes against ``limit``;
    ``on_bytes(n)`` is called for every chunk (the disk quota); a wait of more than ``stall``
    seconds for the next chunk raises UploadStalled."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int, on_bytes: Callable[[int], None] | None = None,
                 stall: float | None = None) -> None:
        self._chunks = chunks.__aiter__()
        self._buf = bytearray()
        self._eof = False
        self.limit = limit
        self.received = 0
        self.on_bytes, self.stall = on_bytes, stall

    async def _next(self) -> bytes:
        if self.stall is None:
            return await self._chunks.__anext__()
        with anyio.move_on_after(self.stall) as scope:
            return await self._chunks.__anext__()
        if scope.cancel_called:
            raise UploadStalled(f"no data for {self.stall:g} s: the upload was dropped (the service's upload timeout)")

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the stream)."""
        while len(self._buf) < n and not self._eof:
            try:
                chunk = await self._next()
            except StopAsyncIteration:
                self._eof = True
                break
            self.received += len(chunk)
            if self.received > self.limit:
                raise UploadTooLarge(f"upload is larger than this service's limit of {self.limit} bytes")
            if self.on_bytes is not None:
                self.on_bytes(len(chunk))
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


async def receive_bundle(chunks: AsyncIterator[bytes], dest: pathlib.Path, limit: int, *,
                         on_bytes: Callable[[int], None] | None = None,
                         stall_timeout: float | None = None) -> dict[str, tuple[str, str]]:
    """Write the tar stream's regular files into ``dest``; returns {name: (file in dest, sha256)}.

    ``on_bytes(n)``: called as bytes arrive (may raise to refuse the upload: the disk quota);
    ``stall_timeout``: seconds without a byte before the upload is dropped (UploadStalled)."""
    reader = _Reader(chunks, limit, on_bytes, stall_timeout)
    received: dict[str, tuple[str, str]] = {}
    while True:
        block = await reader.read(_BLOCK)
        if len(block) < _BLOCK:
            raise UploadError("upload is truncated or not a tar stream (send the job bundle as an uncompressed tar)")
        if block.count(0) == _BLOCK:  # end-of-archive marker
            return received
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        except (tarfile.HeaderError, UnicodeDecodeError) as exc:
            raise UploadError(f"upload is not a valid tar stream ({exc}); send the job bundle as an uncompressed tar") from None
        name = info.name.removeprefix("./")
        if not info.isreg():
            raise UploadError(f"tar member {name!r} is not a regular file: only the bundle's files are accepted")
        if "/" in name or name in ("", ".", "..") or name in received:
            raise UploadError(f"tar member name {name!r} is not a plain, unique file name")
        if len(received) >= MAX_MEMBERS:
            raise UploadError(f"too many files in the upload: a job bundle has {', '.join(BUNDLE_FILES)}")
        if name in JSON_FILES and info.size > MAX_JSON_BYTES:
            raise UploadError(f"{name} has {info.size} bytes, more than the {MAX_JSON_BYTES} a job description can need")
        stored = name if name in BUNDLE_FILES else f"stray-{len(received)}"  # never use a client's name as a path
        received[name] = (stored, await _copy_member(reader, info.size, dest / stored))


async def _copy_member(reader: _Reader, size: int, path: pathlib.Path) -> str:
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = await reader.read(min(left, _FLUSH))
            if not piece:
                raise UploadError(f"upload is truncated: it ends inside {path.name} ({size - left} of {size} bytes)")
            left -= len(piece)
            await anyio.to_thread.run_sync(_write_and_hash, f, sha, piece)
        pad = (-size) % _BLOCK
        if pad and len(await reader.read(pad)) != pad:
            raise UploadError(f"upload is truncated after {path.name}")
    return sha.hexdigest()


def _write_and_hash(f: BinaryIO, sha, piece: bytes) -> None:
    try:
        f.write(piece)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull("the service's disk is full: the upload was dropped; try again later") from None
        raise
    sha.update(piece)


# ---------------------------------------------------------------------- checks on the files on disk
def check_bundle(dest: pathlib.Path, received: dict[str, tuple[str, str]], *, trainer_modules: tuple[str, ...] = (),
                 memory_limit: int = CHECK_MEMORY_BYTES, timeout: float = CHECK_TIMEOUT_S, query: bool = False) -> dict:
    """Refuse secret keys (anywhere, by content), strays, missing files, checksum mismatches and
    claims that disagree with the content; returns the manifest. ``received``: what
    receive_bundle returned; ``query``: a query bundle of encrypted inference (hetrain
    encrypt-queries), whose claims protocol/query_check.py checks, instead of a training job. The secret-key scan comes first, so a key is named for what it is
    whatever else is wrong with the upload."""
    problem, manifest = _structure(dest, received, query)
    result = _run_checker(dest, received, claims=problem is None, trainer_modules=trainer_modules,
                          memory_limit=memory_limit, timeout=timeout, query=query)
    if result.get("secret"):
        raise SecretKeyRefused(f"{SECRET_MESSAGE}: {result['error']}. This service accepts public material only "
                               "(public context and ciphertexts): secret-key material must never leave the client")
    if problem is not None:
        raise problem
    if not result.get("ok"):
        raise UploadError(result.get("error") or "the upload could not be checked")
    return manifest


def _structure(dest: pathlib.Path, received: dict[str, tuple[str, str]],
               query: bool = False) -> tuple[HetrainUserError | None, dict]:
    """What is wrong with the files themselves (None: nothing) and the manifest."""
    digests = {name: sha for name, (_, sha) in received.items()}
    strays = sorted(set(digests) - set(BUNDLE_FILES))
    if strays:
        return UploadError(f"unexpected files {strays} in the upload: a job bundle has {', '.join(BUNDLE_FILES)}"), {}
    missing = [n for n in BUNDLE_FILES if n not in digests]
    if missing:
        return UploadError(f"the upload lacks {', '.join(missing)}: send the whole job bundle"), {}
    try:
        manifest = read_json(dest / files.MANIFEST, "manifest.json")
        if not isinstance(manifest, dict) or manifest.get("format") != "hetrain-job":
            return UploadError("manifest.json is not a hetrain job manifest (corrupted)"), {}
        job = read_json(dest / files.JOB, "job.json")
    except HetrainUserError as exc:
        return UploadError(str(exc).replace(str(dest), "the upload")), {}
    for name in (files.PUBLIC_CONTEXT, files.INPUTS):
        with open(dest / name, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                return UploadError(f"{name} is not a hetrain container (corrupted)"), {}
    sha = manifest.get("sha256") if isinstance(manifest.get("sha256"), dict) else {}
    for name in (files.PUBLIC_CONTEXT, files.INPUTS, files.JOB):
        if sha.get(name) != digests[name]:
            return UploadError(f"{name} does not match the manifest's checksum (corrupted or from another job)"), {}
    if not isinstance(job, dict) or job.get("model") != manifest.get("model"):
        return UploadError("job.json and the manifest name different models"), {}
    if query != (job.get("task") == QUERY_TASK):
        return (UploadError("this is a training job bundle, not a query bundle (hetrain encrypt-queries makes one)")
                if query else UploadError("this is a query bundle: send it to a model's or a job's queries endpoint "
                                          "(hetrain encrypt-queries --server), not as a training job")), {}
    if query:
        return None, manifest
    try:
        get_trainer(str(job.get("model")))  # unknown model: HetrainUserError with the list of known ones
    except HetrainUserError as exc:
        return exc, {}
    return None, manifest


def _run_checker(dest: pathlib.Path, received: dict[str, tuple[str, str]], *, claims: bool,
                 trainer_modules: tuple[str, ...], memory_limit: int, timeout: float, query: bool = False) -> dict:
    """protocol.bundle_check.main in a child process under ``memory_limit`` bytes (RLIMIT_DATA) and
    ``timeout`` seconds: the secret-key scan of every received file, then (``claims``) the claims."""
    code = "import sys; from hetrain.protocol.bundle_check import main; sys.exit(main())"
    cmd = [sys.executable, "-c", code, os.fspath(dest)] + ([] if claims else ["--scan-only"]) + (["--query"] if query else [])
    for mod in trainer_modules:
        cmd.append(f"--trainer-module={mod}")
    cmd += [f"--scan={stored}" for stored, _ in received.values()]  # our names (bundle names, stray-N)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(),
                              stdin=subprocess.DEVNULL, start_new_session=True,
                              preexec_fn=_child_setup(memory_limit, os.getpid()))
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"checking the upload took longer than {timeout:g} s: refused"}
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        log.warning("upload check failed (exit %s): %s", proc.returncode, proc.stderr[-2000:])
        if proc.returncode != 0 and ("MemoryError" in proc.stderr or "bad_alloc" in proc.stderr or proc.returncode < 0):
            return {"ok": False, "error": f"checking the upload's claims needed more than the "
                                          f"{memory_limit / 1024 ** 3:g} GB allowed for it: refused"}
        return {"ok": False, "error": "the upload could not be checked (the checker failed): refused"}
    strays = {stored: name for name, (stored, _) in received.items() if stored != name}
    if result.get("error") and strays:  # say the client's name of a stray file, not ours
        for stored, name in strays.items():
            result["error"] = result["error"].replace(stored, f"file {name!r}")
    return result
