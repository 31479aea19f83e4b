"""Receiving a job bundle over HTTP: a tar stream written to disk as it arrives, then checked.

The body of ``POST /v1/jobs`` is an uncompressed tar (GNU or ustar) of the four files that
``hetrain.protocol.files.write_job`` writes. It is parsed block by block while it streams in, so
a multi-gigabyte public context never sits in memory, and the byte limit is enforced as bytes
arrive. Then, before the job is queued, every file's header is read back: an upload that carries
a secret key (a container of kind "secret_key", on its own or as a part inside another file) is
refused, as are unknown files, links, checksum mismatches and malformed containers.
No FastAPI here: the app hands over an async iterator of byte chunks.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import struct
import tarfile
from typing import AsyncIterator, BinaryIO

import anyio

from hetrain.ckks.container import MAGIC
from hetrain.errors import HetrainUserError
from hetrain.models.base import get_trainer
from hetrain.protocol import files

BUNDLE_FILES = (files.MANIFEST, files.JOB, files.PUBLIC_CONTEXT, files.INPUTS)
# what each binary file of a bundle must be; a "secret_key" container anywhere is refused
EXPECTED_KIND = {files.PUBLIC_CONTEXT: "public_context", files.INPUTS: "ciphertext_map"}
SECRET_KIND = "secret_key"
SECRET_PART_NAMES = {"sk", "secret_key", "secret"}  # part names the backends use for secret keys
MAX_MEMBERS = 8  # the four bundle files, plus a few strays we read only to explain the refusal
MAX_HEADER_BYTES = 64 * 1024 * 1024  # a container header is JSON: a few MB even for thousands of ciphertexts
_BLOCK = tarfile.BLOCKSIZE
_FLUSH = 1 << 20  # write to disk in 1 MiB pieces (in a worker thread, off the event loop)


class UploadError(HetrainUserError):
    """The upload is not an acceptable job bundle (HTTP 400)."""

    status = 400


class UploadTooLarge(UploadError):
    """The upload is over the service's size limit (HTTP 413)."""

    status = 413


class SecretKeyRefused(UploadError):
    """The upload contains secret-key material: the service holds public material only (HTTP 400)."""


class _Reader:
    """Exact-size reads over an async iterator of chunks, counting bytes against ``limit``."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int) -> None:
        self._chunks = chunks.__aiter__()
        self._buf = bytearray()
        self._eof = False
        self.limit = limit
        self.received = 0

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the stream)."""
        while len(self._buf) < n and not self._eof:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._eof = True
                break
            self.received += len(chunk)
            if self.received > self.limit:
                raise UploadTooLarge(f"upload is larger than this service's limit of {self.limit} bytes")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


async def receive_bundle(chunks: AsyncIterator[bytes], dest: pathlib.Path, limit: int) -> dict[str, tuple[str, str]]:
    """Write the tar stream's regular files into ``dest``; returns {name: (file in dest, sha256)}."""
    reader = _Reader(chunks, limit)
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
    f.write(piece)
    sha.update(piece)


# ---------------------------------------------------------------------- checks on the files on disk
def check_bundle(dest: pathlib.Path, received: dict[str, tuple[str, str]]) -> dict:
    """Refuse secret keys, strays, missing files and checksum mismatches; returns the manifest.

    ``received``: what receive_bundle returned.
    """
    for name, (stored, _) in received.items():  # secret keys first: a stray key file is named for what it is
        _refuse_secret(dest / stored, name)
    digests = {name: sha for name, (_, sha) in received.items()}
    strays = sorted(set(digests) - set(BUNDLE_FILES))
    if strays:
        raise UploadError(f"unexpected files {strays} in the upload: a job bundle has {', '.join(BUNDLE_FILES)}")
    missing = [n for n in BUNDLE_FILES if n not in digests]
    if missing:
        raise UploadError(f"the upload lacks {', '.join(missing)}: send the whole job bundle")
    try:
        manifest = files.read_manifest(dest)
        job = json.loads((dest / files.JOB).read_bytes())
    except files.BundleError as exc:
        raise UploadError(str(exc).replace(str(dest), "the upload")) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UploadError(f"job.json is not valid JSON: {exc}") from None
    sha = manifest.get("sha256") if isinstance(manifest.get("sha256"), dict) else {}
    for name in (files.PUBLIC_CONTEXT, files.INPUTS, files.JOB):
        if sha.get(name) != digests[name]:
            raise UploadError(f"{name} does not match the manifest's checksum (corrupted or from another job)")
    if not isinstance(job, dict) or job.get("model") != manifest.get("model"):
        raise UploadError("job.json and the manifest name different models")
    get_trainer(str(job.get("model")))  # unknown model: HetrainUserError with the list of known ones
    return manifest


def _refuse_secret(path: pathlib.Path, name: str) -> None:
    with open(path, "rb") as f:
        header = _container_header(f, name)
        if header is None:  # not a container: only the JSON files may be that
            if name in EXPECTED_KIND:
                raise UploadError(f"{name} is not a hetrain container (corrupted)")
            return
        _check_kind(header, name, EXPECTED_KIND.get(name))
        if header.get("kind") == "ciphertext_map":  # every ciphertext inside must be one, not a key
            offset = f.tell()
            for part in header.get("parts", []):
                f.seek(offset)
                inner = _container_header(f, f"{name} part {part.get('name')!r}")
                _check_kind(inner or {}, f"{name} part {part.get('name')!r}", "ciphertext")
                offset += int(part.get("size", 0))


def _container_header(f: BinaryIO, what: str) -> dict | None:
    head = f.read(len(MAGIC) + 4)
    if head[: len(MAGIC)] != MAGIC or len(head) < len(MAGIC) + 4:
        return None
    (hlen,) = struct.unpack("<I", head[len(MAGIC):])
    if hlen > MAX_HEADER_BYTES:
        raise UploadError(f"{what}: container header of {hlen} bytes is implausibly large (corrupted)")
    try:
        header = json.loads(f.read(hlen).decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UploadError(f"{what}: corrupted container header") from None
    if not isinstance(header, dict):
        raise UploadError(f"{what}: corrupted container header")
    return header


def _check_kind(header: dict, what: str, expected: str | None) -> None:
    parts = {str(p.get("name")) for p in header.get("parts", []) if isinstance(p, dict)}
    if header.get("kind") == SECRET_KIND or parts & SECRET_PART_NAMES:
        raise SecretKeyRefused(f"{what} contains secret-key material: this service accepts public material only "
                               "(public context and ciphertexts); the secret key must never leave the client")
    if expected is not None and header.get("kind") != expected:
        raise UploadError(f"{what} is a {header.get('kind')!r} container, expected {expected!r}")
