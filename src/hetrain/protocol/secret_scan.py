"""Finding a secret key by its content, wherever it sits in an upload.

A job bundle must hold public material only. Names and declared kinds prove nothing (anyone can
call a secret key "inputs.bin", label it a ciphertext part, or base64 it into job.json), so every
byte is scanned for what would parse as a secret key of a known backend:

* hetrain's secret-key container (``Engine.secret_key_bytes``): the container magic followed by a
  header of kind "secret_key" or with a part named like a key (``secret_part_names()``: every
  registered backend's ``secret_parts``, "sk" for the built-in ones, plus "secret_key" and "secret"),
  anywhere (a whole file, a part of a container, a part of a part, trailing bytes);
* a raw Microsoft SEAL ``SecretKey`` serialisation (what seal's secret key container wraps): SEAL's
  serialisation header (magic 0xA15E, version, compression mode, total size) at any offset, whose
  size fits a secret key of the job's parameters or of a preset, and whose bytes LOAD as a
  ``seal.SecretKey`` under those parameters (tenseal.sealapi; a ciphertext or a public, relinearisation or
  Galois key never loads as one: SEAL validates the plaintext's shape against the context);
* the same inside JSON: every string of job.json and manifest.json (and every key) is tried as
  base64 (standard and URL-safe), as hex, and as Latin-1 bytes, and the decoded bytes are scanned.

Not recognised: a raw desilo (desilofhe) secret key (desilofhe is not installed where this was
written, and its serialisation is not documented; a desilo key inside hetrain's container IS
recognised), and a key encoded into ciphertext values or into a key's own coefficients (such data
is indistinguishable from honest ciphertexts by construction).

Memory: files are read in chunks (``CHUNK``) and candidates are read only up to the size of a
secret key of the parameters tried (a few MB at N=32768).
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import struct
import tempfile
from typing import BinaryIO, Iterable

from hetrain.ckks.container import MAGIC
from hetrain.ckks.params import MAX_BITS_128, PRESETS, CKKSParams
from hetrain.ckks.registry import secret_part_names

SECRET_KIND = "secret_key"
SEAL_MAGIC = b"\x5e\xa1"
SEAL_HEADER = 16  # magic u16, header size u8 (16), version major u8, minor u8, compression u8, reserved u16, size u64
CHUNK = 16 << 20
MAX_CONTAINER_HEADER = 64 << 20
_B64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
MIN_ENCODED = 96  # shorter strings cannot hold a key of any backend (the smallest, sim's container, is ~120 bytes)


class SecretFound(Exception):
    """A secret key was found; the message says where and of which backend."""


def _sk_size_bounds(p: CKKSParams) -> tuple[int, int]:
    """(least, most) bytes of a serialised SEAL SecretKey under ``p`` (compressed or not): the key is
    N·k 64-bit words (k primes, the special one included); zstd/zlib save at most ~70% on residues
    of ≥ 20-bit primes and add a little."""
    raw = 8 * p.poly_modulus_degree * len(p.coeff_bits)
    return raw // 4, raw + raw // 64 + 4096


class Scanner:
    """Scans bytes and files; raises SecretFound. ``params``: the job's CKKS parameters (None if
    unknown); the presets are always tried too."""

    def __init__(self, params: CKKSParams | None = None) -> None:
        candidates = ([params] if params is not None else []) + list(PRESETS.values())
        self.params: list[CKKSParams] = []
        for p in candidates:
            if p.poly_modulus_degree in MAX_BITS_128 and p not in self.params and 1 <= len(p.coeff_bits) <= 64:
                self.params.append(p)
        self._contexts: dict[CKKSParams, object] = {}
        self.max_candidate = max(_sk_size_bounds(p)[1] for p in self.params)
        self.seal_loads = 0  # candidates loaded with SEAL (tests look at it)
        self.secret_parts = secret_part_names()  # of the backends registered now

    # ------------------------------------------------------------------ entry points
    def scan_file(self, path: str | os.PathLike, where: str) -> None:
        """Scan every byte of the file at ``path`` (read in chunks). Raises SecretFound naming ``where`` when it
        holds a secret key (module docstring); OSError when it cannot be read.
        """
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._scan(f, 0, size, where)

    def scan_bytes(self, data: bytes, where: str) -> None:
        """Scan ``data`` as ``scan_file`` scans a file. Raises SecretFound naming ``where``."""
        import io

        self._scan(io.BytesIO(data), 0, len(data), where)

    def scan_json(self, value, where: str) -> None:
        """Every string (and key) of a parsed JSON value, decoded every way a key could be encoded."""
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                stack.extend(v.keys())
                stack.extend(v.values())
            elif isinstance(v, list):
                stack.extend(v)
            elif isinstance(v, str) and len(v) >= MIN_ENCODED:
                for label, blob in _decodings(v):
                    self.scan_bytes(blob, f"{where} ({label} string)")

    # ------------------------------------------------------------------ scanning
    def _scan(self, f: BinaryIO, start: int, length: int, where: str) -> None:
        """Every offset of [start, start + length) where a hetrain container or a SEAL object begins."""
        end = start + length
        pos = start
        keep = max(len(MAGIC), SEAL_HEADER)  # a magic split across two chunks is found in the next
        while pos < end:
            f.seek(pos)
            chunk = f.read(min(CHUNK, end - pos))
            if not chunk:
                break
            last = pos + len(chunk) >= end
            stop = len(chunk) if last else len(chunk) - keep  # the overlap is searched again with the next chunk
            for h in sorted(set(_find_all(chunk, MAGIC)) | set(_find_all(chunk, SEAL_MAGIC))):
                if h < stop:
                    self._candidate(f, pos + h, end - (pos + h), where)
            if last:
                break
            pos += stop

    def _candidate(self, f: BinaryIO, at: int, room: int, where: str) -> None:
        f.seek(at)
        head = f.read(min(room, SEAL_HEADER))
        if head.startswith(MAGIC) and len(head) >= len(MAGIC) + 4:
            (hlen,) = struct.unpack("<I", head[len(MAGIC):len(MAGIC) + 4])
            if hlen > min(MAX_CONTAINER_HEADER, room - len(MAGIC) - 4):
                return
            f.seek(at + len(MAGIC) + 4)
            try:
                header = json.loads(f.read(hlen).decode())
            except (UnicodeDecodeError, ValueError, RecursionError):
                return
            if isinstance(header, dict):
                parts = header.get("parts") if isinstance(header.get("parts"), list) else []
                names = {str(p.get("name")) for p in parts if isinstance(p, dict)}
                if header.get("kind") == SECRET_KIND or names & self.secret_parts:
                    raise SecretFound(f"{where} holds a hetrain secret-key container (at byte {at})")
                self.scan_json(header, f"{where}: a container header")
            return
        if head.startswith(SEAL_MAGIC) and len(head) == SEAL_HEADER:
            hsize, major, compr = head[2], head[3], head[5]  # head[4]: the minor version (any)
            (size,) = struct.unpack("<Q", head[8:16])
            if hsize != SEAL_HEADER or major not in (3, 4) or compr > 2 or size > room or size > self.max_candidate:
                return
            f.seek(at)
            blob = f.read(size)
            found = self._seal_secret_key(blob)
            if found is not None:
                raise SecretFound(f"{where} holds a raw SEAL secret key for {found} (at byte {at})")

    def _seal_secret_key(self, blob: bytes) -> str | None:
        """The parameters under which ``blob`` loads as a SEAL SecretKey (None if none)."""
        for p in self.params:
            lo, hi = _sk_size_bounds(p)
            if not lo <= len(blob) <= hi:
                continue
            ctx = self._context(p)
            if ctx is None:
                continue
            self.seal_loads += 1
            if _loads_as_secret_key(ctx, blob):
                return f"{p.name} ({p.describe()})"
        return None

    def _context(self, p: CKKSParams):
        if p not in self._contexts:
            try:
                from hetrain.ckks.seal_backend import _make_context

                self._contexts[p] = _make_context(p, insecure=not p.is_128_bit_secure())
            except Exception:  # no tenseal, or parameters SEAL refuses: nothing loads under them
                self._contexts[p] = None
        return self._contexts[p]


def _loads_as_secret_key(ctx, blob: bytes) -> bool:
    import tenseal.sealapi as seal

    from hetrain.ckks.seal_backend import _tmpdir

    fd, path = tempfile.mkstemp(dir=_tmpdir(), prefix="hetrain-scan-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(blob)
        try:
            seal.SecretKey().load(ctx, path)
        except Exception:
            return False
        return True
    finally:
        os.remove(path)


def _find_all(data: bytes, needle: bytes) -> Iterable[int]:
    i = data.find(needle)
    while i >= 0:
        yield i
        i = data.find(needle, i + 1)


def _decodings(s: str) -> Iterable[tuple[str, bytes]]:
    compact = "".join(s.split())
    if _HEX.match(compact):
        yield "hex", binascii.unhexlify(compact)
    if _B64.match(compact):
        padded = compact + "=" * (-len(compact) % 4)
        for label, alt in (("base64", None), ("base64url", b"-_")):
            try:
                yield label, base64.b64decode(padded, altchars=alt, validate=False)
            except (binascii.Error, ValueError):
                pass
    try:
        yield "latin-1", s.encode("latin-1")
    except UnicodeEncodeError:
        pass


def scan_upload(paths: dict[str, str | os.PathLike], json_values: dict[str, object],
                params: CKKSParams | None) -> None:
    """Scan every file (``paths``: name -> path) and every parsed JSON value; SecretFound if any
    holds a secret key."""
    scanner = Scanner(params)
    for name, value in json_values.items():
        scanner.scan_json(value, name)
    for name, path in paths.items():
        scanner.scan_file(path, name)
