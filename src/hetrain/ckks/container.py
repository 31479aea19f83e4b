"""A small framed container for serialised objects: magic, JSON header, named binary parts.

Layout: b"HETRAIN1" | u32 header length | JSON header | parts back to back. The header names
each part with its length and SHA-256, so truncation and corruption are caught before any bytes
reach SEAL (whose own loader would fail with a less helpful message, or not at all).
"""
from __future__ import annotations

import hashlib
import io
import json
import struct
from typing import BinaryIO

from .errors import SerializationError

MAGIC = b"HETRAIN1"


def write_container(out: BinaryIO, meta: dict, parts: dict[str, bytes]) -> None:
    header = dict(meta)
    header["parts"] = [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in parts.items()]
    hb = json.dumps(header, sort_keys=True).encode()
    out.write(MAGIC + struct.pack("<I", len(hb)) + hb)
    for b in parts.values():
        out.write(b)


def pack(meta: dict, parts: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    write_container(buf, meta, parts)
    return buf.getvalue()


def read_container(src: BinaryIO, expect_kind: str | None = None) -> tuple[dict, dict[str, bytes]]:
    head = src.read(len(MAGIC) + 4)
    if len(head) < len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
        raise SerializationError("not a hetrain object (bad magic bytes): the file is corrupted or of another format")
    (hlen,) = struct.unpack("<I", head[len(MAGIC):])
    try:
        header = json.loads(src.read(hlen).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SerializationError(f"corrupted header: {exc}") from None
    if expect_kind is not None and header.get("kind") != expect_kind:
        raise SerializationError(f"expected a {expect_kind!r} object, got {header.get('kind')!r}")
    parts: dict[str, bytes] = {}
    for p in header.get("parts", []):
        b = src.read(p["size"])
        if len(b) != p["size"]:
            raise SerializationError(f"part {p['name']!r} is truncated ({len(b)} of {p['size']} bytes)")
        if hashlib.sha256(b).hexdigest() != p["sha256"]:
            raise SerializationError(f"part {p['name']!r} is corrupted (checksum mismatch)")
        parts[p["name"]] = b
    return header, parts


def unpack(data: bytes, expect_kind: str | None = None) -> tuple[dict, dict[str, bytes]]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(f"expected bytes, got {type(data).__name__}")
    return read_container(io.BytesIO(bytes(data)), expect_kind)
