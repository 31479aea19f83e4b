"""The one format for a collection of ciphertexts: job inputs and outputs, checkpoints, the refresh
channel's state, ``Engine.save_ciphertexts``.

A collection is a container (container.py: ``b"HETRAIN1" | u32 header length | JSON header |
parts back to back``) whose header is the manifest:

    {"kind": "ciphertexts", "version": 1, "key_id": K, "counts": {NAME: n, ...}, "meta": {...},
     "parts": [{"name": "NAME/i", "size": BYTES, "sha256": HEX}, ...]}

Each part is one ``engine.serialize`` blob (itself a "ciphertext" container naming its backend,
parameters, key id and level). The parts of a name come in order NAME/0 .. NAME/n-1 (names may
interleave); ``meta`` is the user's JSON (a checkpoint's counters, the channel's layout). The
manifest comes first, so a reader knows every part's length and SHA-256 before it reads the part:
a file is read one ciphertext at a time (``read``), a stream of several collections back to back
(a checkpoint's records) one collection at a time (``iter_file``), and a truncated, garbled or
oversized part is refused (SerializationError) before it reaches the backend's loader.

Old formats (hetrain before this module: "ciphertext_map" bundles, "ciphertext_list" files,
"hetrain_checkpoint" checkpoints) are refused with ``OldFormat``, which each user turns into what
to do (write the bundle again; delete the checkpoint). They were never long-lived: a bundle lives
for one job, a checkpoint until its job ends.
"""
from __future__ import annotations

import io
import json
import os
import struct
from typing import BinaryIO, Iterable, Iterator

from .container import MAGIC, iter_container, write_container, write_container_file
from .errors import KeyMismatch, SerializationError

KIND = "ciphertexts"
VERSION = 1
OLD_KINDS = ("ciphertext_map", "ciphertext_list", "hetrain_checkpoint")
MAX_HEADER_BYTES = 64 << 20   # a manifest lists every part (~120 bytes each): half a million ciphertexts


class OldFormat(SerializationError):
    """A collection written by an earlier hetrain (``kind``: its old kind)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------------- the manifest
def manifest(key_id: str, counts: dict[str, int], meta: dict | None = None) -> dict:
    """The header of a collection (without its parts, which the writer lists)."""
    return {"kind": KIND, "version": VERSION, "key_id": key_id, "counts": dict(counts), "meta": meta or {}}


def check_manifest(header, what: str = "collection") -> dict[str, int]:
    """The counts of a collection's header, after checking its kind, version, counts and that its
    parts are exactly NAME/0 .. NAME/n-1 of every name it counts (any interleaving), each with a
    non-negative integer size and a SHA-256. SerializationError (OldFormat for an earlier
    hetrain's) naming ``what`` otherwise. Reads no part: a check before memory is spent."""
    if not isinstance(header, dict):
        raise SerializationError(f"{what}: corrupted header")
    kind = header.get("kind")
    if kind in OLD_KINDS:
        raise OldFormat(f"{what} is in the format of an earlier hetrain ({kind!r})", kind)
    if kind != KIND:
        raise SerializationError(f"{what} is a {kind!r} container, expected {KIND!r}")
    if header.get("version") != VERSION:
        raise SerializationError(f"{what} is of collection format version {header.get('version')!r}; "
                                 f"this hetrain reads version {VERSION}")
    if not isinstance(header.get("key_id"), str) or not isinstance(header.get("meta", {}), dict):
        raise SerializationError(f"{what}: malformed header (key_id must be a string, meta an object)")
    counts = header.get("counts")
    if not isinstance(counts, dict) or not all(isinstance(k, str) and _is_int(v) and v >= 0 for k, v in counts.items()):
        raise SerializationError(f"{what}: 'counts' must map names to non-negative integers")
    parts = header.get("parts")
    if not isinstance(parts, list):
        raise SerializationError(f"{what}: its header lists no parts")
    seen = {name: 0 for name in counts}
    for p in parts:
        if not (isinstance(p, dict) and isinstance(p.get("name"), str) and _is_int(p.get("size"))
                and p["size"] >= 0 and isinstance(p.get("sha256"), str)):
            raise SerializationError(f"{what}: malformed part entry in its header")
        name, _, idx = p["name"].rpartition("/")
        if name not in seen or idx != str(seen[name]):
            raise SerializationError(f"{what}: part {p['name']!r} is not the next ciphertext of a name its counts list")
        seen[name] += 1
    if seen != counts:
        raise SerializationError(f"{what}: its counts ({sum(counts.values())} ciphertexts) do not match its "
                                 f"{len(parts)} parts")
    return dict(counts)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _blobs(engine, named: dict[str, list]) -> Iterator[tuple[str, bytes]]:
    for name, cts in named.items():
        for i, ct in enumerate(cts):
            yield f"{name}/{i}", engine.serialize(ct)


def _counts(named: dict[str, list]) -> dict[str, int]:
    if not all(isinstance(k, str) and "/" not in k for k in named):
        raise SerializationError(f"collection names must be strings without '/': {sorted(map(str, named))}")
    return {name: len(v) for name, v in named.items()}


# ---------------------------------------------------------------------- writing
def pack_blobs(key_id: str, named: dict[str, list[bytes]], meta: dict | None = None) -> bytes:
    """A collection of already serialised ciphertexts (``engine.serialize`` bytes) as bytes."""
    buf = io.BytesIO()
    write_blobs(buf, key_id, named, meta)
    return buf.getvalue()


def write_blobs(out: BinaryIO, key_id: str, named: dict[str, list[bytes]], meta: dict | None = None) -> int:
    """``pack_blobs`` onto an open stream; returns the bytes written."""
    parts = {f"{name}/{i}": b for name, bs in named.items() for i, b in enumerate(bs)}
    return write_container(out, manifest(key_id, _counts(named), meta), parts)


def pack(engine, named: dict[str, list], meta: dict | None = None) -> bytes:
    """``named`` (name -> list of ciphertexts of ``engine``) and ``meta`` (JSON) as bytes."""
    return pack_blobs(engine.key_id, {n: [engine.serialize(ct) for ct in cts] for n, cts in named.items()}, meta)


def write(path: str | os.PathLike, engine, named: dict[str, list], meta: dict | None = None, *,
          durable: bool = False) -> tuple[int, str]:
    """``pack`` straight to a file, one serialised ciphertext in memory at a time (inputs of
    thousands of rows weigh gigabytes); the file appears under ``path`` only once complete
    (``durable``: fsynced first). Returns (bytes, SHA-256 of the file)."""
    return write_container_file(path, manifest(engine.key_id, _counts(named), meta), _blobs(engine, named),
                                durable=durable)


def append(out: BinaryIO, engine, named: dict[str, list], meta: dict | None = None) -> int:
    """One more collection at the end of an open stream (a log of collections: ``iter_file``
    reads them back); returns its bytes. The whole collection is built in memory first."""
    return write_blobs(out, engine.key_id, {n: [engine.serialize(ct) for ct in cts] for n, cts in named.items()}, meta)


def packed_size(key_id: str, sizes: dict[str, list[int]], meta: dict | None = None) -> int:
    """The bytes ``pack_blobs(key_id, named, meta)`` makes of blobs of these ``sizes`` (name ->
    list of blob lengths), without hashing them (a SHA-256 is always 64 hex digits)."""
    header = manifest(key_id, _counts(sizes), meta)
    header["parts"] = [{"name": f"{n}/{i}", "size": s, "sha256": "0" * 64} for n, ss in sizes.items()
                       for i, s in enumerate(ss)]
    return len(MAGIC) + 4 + len(json.dumps(header, sort_keys=True).encode()) + sum(map(sum, sizes.values()))


# ---------------------------------------------------------------------- reading
def _load(engine, header: dict, parts: Iterable[tuple[str, bytes]], verify: bool) -> dict[str, list]:
    if header["key_id"] != engine.key_id:
        raise KeyMismatch(f"the ciphertexts were encrypted under key {header['key_id']}, not this engine's key "
                          f"{engine.key_id}")
    out: dict[str, list] = {name: [] for name in header["counts"]}
    for part_name, blob in parts:
        out[part_name.rpartition("/")[0]].append(engine.deserialize(blob, verify=verify))
    return out


def unpack(engine, data: bytes, what: str = "collection") -> tuple[dict[str, list], dict]:
    """(name -> list of ciphertexts, meta) of ``pack``'s bytes; every part's size and SHA-256 checked."""
    header, parts = unpack_blobs(data, what)
    blobs = ((f"{n}/{i}", b) for n, bs in parts.items() for i, b in enumerate(bs))
    return _load(engine, header, blobs, True), header["meta"]


def unpack_blobs(data: bytes | bytearray | memoryview, what: str = "collection",
                 max_part: int | None = None) -> tuple[dict, dict[str, list[bytes]]]:
    """(header, name -> list of serialised ciphertexts) of ``pack_blobs``'s bytes, nothing after
    them: the manifest checked first (``check_manifest``; no part larger than ``max_part``
    bytes), then every part's size and SHA-256. SerializationError otherwise."""
    src = io.BytesIO(bytes(data))
    header, parts = iter_container(src, None, max_header=MAX_HEADER_BYTES, check=lambda h: _checked(h, what, max_part))
    out: dict[str, list[bytes]] = {name: [] for name in header["counts"]}
    for part_name, blob in parts:
        out[part_name.rpartition("/")[0]].append(blob)
    if src.read(1):
        raise SerializationError(f"{what}: bytes after its last ciphertext")
    return header, out


def check_packed(data: bytes | bytearray | memoryview, what: str = "collection") -> dict[str, int]:
    """The counts of ``pack_blobs``'s bytes after checking, without copying or hashing them, that
    its manifest is well-formed (``check_manifest``) and that its parts fill the bytes exactly:
    the structure a relay can check before it passes the bytes on. SerializationError otherwise."""
    view = memoryview(data)
    if len(view) < len(MAGIC) + 4 or bytes(view[:len(MAGIC)]) != MAGIC:
        raise SerializationError(f"{what} is not a collection (bad magic bytes)")
    (hlen,) = struct.unpack("<I", view[len(MAGIC):len(MAGIC) + 4])
    if hlen > min(MAX_HEADER_BYTES, len(view) - len(MAGIC) - 4):
        raise SerializationError(f"{what}: its header claims {hlen} bytes, more than it has")
    try:
        header = json.loads(bytes(view[len(MAGIC) + 4:len(MAGIC) + 4 + hlen]))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SerializationError(f"{what}: corrupted header") from None
    counts = check_manifest(header, what)
    if len(MAGIC) + 4 + hlen + sum(p["size"] for p in header["parts"]) != len(view):
        raise SerializationError(f"{what}: its parts do not fill its {len(view)} bytes exactly")
    return counts


def _checked(header, what: str, max_part: int | None = None, room: int | None = None) -> None:
    """check_manifest, then: no part over ``max_part`` bytes, all parts within ``room`` bytes."""
    check_manifest(header, what)
    if room is not None and sum(p["size"] for p in header["parts"]) > room:
        raise SerializationError(f"{what} is truncated: its parts claim "
                                 f"{sum(p['size'] for p in header['parts'])} bytes, the file has fewer")
    if max_part is not None:
        for p in header["parts"]:
            if p["size"] > max_part:
                raise SerializationError(f"{what}: part {p['name']!r} claims {p['size']} bytes, more than a "
                                         f"ciphertext can have ({max_part})")


def read(path: str | os.PathLike, engine, *, digest=None, what: str = "collection") -> tuple[dict[str, list], dict]:
    """Inverse of ``write``, one ciphertext at a time: (name -> list of ciphertexts, meta).

    ``digest`` (a ``hashlib`` object): every byte of the file goes into it and the parts' own
    checksums are skipped; the caller compares it with the file's known SHA-256 (one hashing pass:
    protocol/files.read_ciphertext_map). FileNotFoundError; SerializationError (OldFormat);
    KeyMismatch if the ciphertexts are under another key."""
    header, parts = iter_container_file(path, digest=digest, what=what)
    try:
        named = _load(engine, header, parts, verify=digest is None)
    finally:
        parts.close()  # releases the file if loading stopped early (an error)
    return named, header["meta"]


def iter_container_file(path: str | os.PathLike, *, digest=None, what: str = "collection"):
    """(header, iterator of (NAME/i, bytes)) of the collection file at ``path``, the manifest
    checked, and its parts' sizes against the file's (nothing is read that the file cannot hold);
    bytes after the last part are an error (hashed into ``digest`` first)."""
    src = open(path, "rb")
    try:
        size = os.fstat(src.fileno()).st_size
        header, parts = iter_container(src, digest, max_header=MAX_HEADER_BYTES,
                                       check=lambda h: _checked(h, what, room=size))
    except BaseException:
        src.close()
        raise

    def each() -> Iterator[tuple[str, bytes]]:
        with src:
            yield from parts
            rest = src.read(1 << 20)
            if digest is not None:
                while rest:
                    digest.update(rest)
                    rest = src.read(1 << 20)
                return
            if rest:
                raise SerializationError(f"{what}: bytes after its last ciphertext")

    return header, each()


def iter_file(path: str | os.PathLike, engine, what: str = "collection",
              ) -> Iterator[tuple[dict[str, list], dict, int]]:
    """The collections written back to back into ``path`` (``append``), one at a time: (name ->
    ciphertexts, meta, offset of the end of this collection). The first must read (else its
    SerializationError, OldFormat, KeyMismatch); a later one that does not (cut off by a crash
    mid-append, or garbled) ends the log with ``TornTail`` (its offset: where the log's good part ends)."""
    with open(path, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        while True:
            at = src.tell()
            if at >= size:
                return
            try:
                header, parts = iter_container(src, None, max_header=MAX_HEADER_BYTES,
                                               check=lambda h: _checked(h, what, room=size - at))
                named = _load(engine, header, parts, verify=True)
            except SerializationError as exc:
                if at == 0:
                    raise
                raise TornTail(f"{what}: the record at byte {at} is incomplete or corrupted ({exc})", at) from None
            yield named, header["meta"], src.tell()


class TornTail(SerializationError):
    """A collection that ends early at offset ``at`` of a log of collections (a crash mid-append)."""

    def __init__(self, message: str, at: int) -> None:
        super().__init__(message)
        self.at = at


__all__ = ["KIND", "VERSION", "OldFormat", "TornTail", "manifest", "check_manifest", "pack", "pack_blobs",
           "write", "write_blobs", "append", "packed_size", "check_packed", "unpack", "unpack_blobs", "read",
           "iter_container_file", "iter_file"]
