"""A small framed container for serialised objects: magic, JSON header, named binary parts.

Layout: b"HETRAIN1" | u32 header length | JSON header | parts back to back. The header names
each part with its length and SHA-256, so truncation and corruption are caught before any bytes
reach SEAL (whose own loader would fail with a less helpful message, or not at all).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from typing import BinaryIO, Iterable, Iterator

from hetrain._atomic import atomic_writer, temp_sibling

from .errors import SerializationError

MAGIC = b"HETRAIN1"


def write_container(out: BinaryIO, meta: dict, parts: dict[str, bytes]) -> int:
    """``meta`` with the parts' index (name, size, SHA-256), then the parts, onto ``out``; returns the bytes written.
    Whatever ``out.write`` raises (OSError) propagates; ``meta`` must be JSON-serialisable (else TypeError).
    """
    header = dict(meta)
    header["parts"] = [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in parts.items()]
    hb = json.dumps(header, sort_keys=True).encode()
    out.write(MAGIC + struct.pack("<I", len(hb)) + hb)
    for b in parts.values():
        out.write(b)
    return len(MAGIC) + 4 + len(hb) + sum(len(b) for b in parts.values())


def pack(meta: dict, parts: dict[str, bytes]) -> bytes:
    """``write_container`` into memory: the container's bytes (header, then each part back to back)."""
    buf = io.BytesIO()
    write_container(buf, meta, parts)
    return buf.getvalue()


def _read_header(src: BinaryIO, expect_kind: str | None, digest=None, max_header: int | None = None) -> dict:
    head = src.read(len(MAGIC) + 4)
    if digest is not None:
        digest.update(head)
    if len(head) < len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
        raise SerializationError("not a hetrain object (bad magic bytes): the file is corrupted or of another format")
    (hlen,) = struct.unpack("<I", head[len(MAGIC):])
    if max_header is not None and hlen > max_header:
        raise SerializationError(f"its header claims {hlen} bytes, more than the {max_header} allowed")
    raw = src.read(hlen)
    if len(raw) != hlen:
        raise SerializationError(f"its header is truncated ({len(raw)} of {hlen} bytes)")
    if digest is not None:
        digest.update(raw)
    try:
        header = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SerializationError(f"corrupted header: {exc}") from None
    if not isinstance(header, dict):
        raise SerializationError("corrupted header: not a JSON object")
    if expect_kind is not None and header.get("kind") != expect_kind:
        raise SerializationError(f"expected a {expect_kind!r} object, got {header.get('kind')!r}")
    return header


def _read_part(src: BinaryIO, p: dict, verify: bool = True, digest=None) -> bytes:
    b = src.read(p["size"])
    if len(b) != p["size"]:
        raise SerializationError(f"part {p['name']!r} is truncated ({len(b)} of {p['size']} bytes)")
    if digest is not None:
        digest.update(b)
    if verify and hashlib.sha256(b).hexdigest() != p["sha256"]:
        raise SerializationError(f"part {p['name']!r} is corrupted (checksum mismatch)")
    return b


def read_container(src: BinaryIO, expect_kind: str | None = None, verify: bool = True) -> tuple[dict, dict[str, bytes]]:
    """(header dict, parts name -> bytes) read from the stream ``src``, parts in the header's order.

    ``expect_kind``: the header's ``"kind"`` must equal it. ``verify=False`` skips each part's SHA-256 (only
    for bytes whose whole digest the caller has already checked). Raises SerializationError on bad magic
    bytes, an undecodable header, another kind, a truncated part or a checksum mismatch.
    """
    header = _read_header(src, expect_kind)
    return header, {p["name"]: _read_part(src, p, verify) for p in header.get("parts", [])}


def unpack(data: bytes, expect_kind: str | None = None, verify: bool = True) -> tuple[dict, dict[str, bytes]]:
    """(header, parts) of ``pack``'s bytes. ``verify=False`` skips each part's SHA-256: only for bytes
    whose digest as a whole the caller has already checked (a job file against its manifest), so
    that a file is hashed once, not once per nesting level.
    Raises SerializationError for a non-bytes argument and everything ``read_container`` refuses.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(f"expected bytes, got {type(data).__name__}")
    return read_container(io.BytesIO(data if isinstance(data, bytes) else bytes(data)), expect_kind, verify)


def read_header(data: bytes, expect_kind: str | None = None) -> dict:
    """Only the header of ``pack``'s bytes (no part is read or hashed).
    Raises SerializationError for a non-bytes argument, bad magic bytes, a corrupted header or another kind.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(f"expected bytes, got {type(data).__name__}")
    return _read_header(io.BytesIO(data), expect_kind)


def iter_container(src: BinaryIO, digest=None, *, expect_kind: str | None = None, max_header: int | None = None,
                   check=None) -> tuple[dict, Iterator[tuple[str, bytes]]]:
    """(header, iterator of (name, bytes)) of the container at ``src``'s position, one part at a
    time. ``check(header)`` runs before any part is read (it raises to refuse the claims);
    ``max_header``: the most bytes its header may claim. ``digest`` (a ``hashlib`` object): every
    byte read goes into it and the parts' own checksums are NOT computed: the caller compares it
    with the file's known SHA-256 (one hashing pass instead of two: collection.read). The stream is left
    after the last part; it is not closed."""
    header = _read_header(src, expect_kind, digest, max_header)
    if check is not None:
        check(header)

    def parts() -> Iterator[tuple[str, bytes]]:
        for p in header.get("parts", []):
            yield p["name"], _read_part(src, p, digest is None, digest)

    return header, parts()


def write_container_file(path: str | os.PathLike, meta: dict,
                         parts: Iterable[tuple[str, bytes | os.PathLike]], durable: bool = False) -> tuple[int, str]:
    """``write_container`` to a file, holding one part in memory at a time.

    A part given as a path (``pathlib.Path``) is a file whose content is copied in 1 MiB chunks, so a
    part of gigabytes (OpenFHE's bootstrapping keys, which it serialises to a file itself) never sits
    in memory. The header (which lists every part's size and checksum) must come first, so the parts
    are spooled to a temporary file, then copied behind the header. Returns (file size, SHA-256 of the
    file). The file appears under ``path`` only once complete (``durable``: fsynced first).
    """
    path = os.fspath(path)
    index = []
    fd, spool_name = temp_sibling(path, 0o600)
    os.remove(spool_name)  # nameless from here on: the spool goes when it is closed, whatever happens
    with os.fdopen(fd, "w+b") as spool:
        for name, b in parts:
            if isinstance(b, (bytes, bytearray, memoryview)):
                spool.write(b)
                index.append({"name": name, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()})
                continue
            digest, size = hashlib.sha256(), 0
            with open(b, "rb") as src:
                while chunk := src.read(1 << 20):
                    spool.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            index.append({"name": name, "size": size, "sha256": digest.hexdigest()})
        spool.seek(0)
        hb = json.dumps({**meta, "parts": index}, sort_keys=True).encode()
        digest = hashlib.sha256()
        with atomic_writer(path, durable=durable) as out:
            head = MAGIC + struct.pack("<I", len(hb)) + hb
            out.write(head)
            digest.update(head)
            while chunk := spool.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
            size = out.tell()
    return size, digest.hexdigest()


def read_header_file(path: str | os.PathLike, expect_kind: str | None = None) -> dict:
    """Only the header of a container file (no part is read)."""
    with open(path, "rb") as src:
        return _read_header(src, expect_kind)


def read_container_file(path: str | os.PathLike, expect_kind: str | None, spill: Iterable[str],
                        spill_dir: str | os.PathLike, skip: Iterable[str] = ()) -> tuple[dict, dict[str, "bytes | str"]]:
    """(header, parts) of a container file; the parts named in ``spill`` are copied, in 1 MiB chunks and
    checked against their SHA-256 on the way, to new files (0600) under ``spill_dir``, whose names come
    back in place of their bytes (the caller removes them). For parts of gigabytes that a library loads
    from a file itself: the whole part is never in memory. Parts named in ``skip`` are neither read nor
    returned. Raises SerializationError (truncated or corrupted part, bad header)."""
    import tempfile

    spill, skip = set(spill), set(skip)
    out: dict = {}
    with open(path, "rb") as src:
        header = _read_header(src, expect_kind)
        try:
            for p in header.get("parts", []):
                if p["name"] in skip:
                    src.seek(int(p["size"]), os.SEEK_CUR)
                    continue
                if p["name"] not in spill:
                    out[p["name"]] = _read_part(src, p)
                    continue
                fd, name = tempfile.mkstemp(dir=spill_dir, prefix=f".{p['name']}.", suffix=".part")
                out[p["name"]] = name
                digest, left = hashlib.sha256(), int(p["size"])
                with os.fdopen(fd, "wb") as dst:
                    while left:
                        chunk = src.read(min(left, 1 << 20))
                        if not chunk:
                            raise SerializationError(f"part {p['name']!r} is truncated ({p['size'] - left} of "
                                                     f"{p['size']} bytes)")
                        dst.write(chunk)
                        digest.update(chunk)
                        left -= len(chunk)
                if digest.hexdigest() != p["sha256"]:
                    raise SerializationError(f"part {p['name']!r} is corrupted (checksum mismatch)")
        except BaseException:
            for v in out.values():
                if isinstance(v, str):
                    os.remove(v)
            raise
    return header, out


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
