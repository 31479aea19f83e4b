"""The one atomic file writer of hetrain: a unique temporary sibling, then a rename.

Readers of ``path`` see the old file or the whole new one, never half of it; a failure leaves no
temporary file behind. It sits below every layer (ckks included: engine.save_ciphertexts and the
container files use it); ``hetrain.protocol.files`` re-exports ``atomic_write``,
and ``hetrain.outputs`` builds its fail-over writer on ``temp_sibling``.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import BinaryIO, Iterator

UMASK = os.umask(0o022)  # read once at import (os.umask can only be read by setting it)
os.umask(UMASK)


def temp_sibling(path: str | os.PathLike, mode: int | None = None) -> tuple[int, str]:
    """Create a new, uniquely named temporary file next to ``path`` (same directory, so that
    ``os.replace`` onto ``path`` is atomic): returns (open descriptor, its name).

    The name is ``.<name of path>.<random>.tmp``: unique per call (threads and processes do not
    collide). ``mode``: its permissions (e.g. 0o600 for a secret key: the file never exists with
    wider ones); default what the umask gives a new file. Raises OSError when the directory refuses.
    """
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK if mode is None else mode)
    except BaseException:
        os.close(fd)
        os.remove(tmp)
        raise
    return fd, tmp


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, durable: bool = False, mode: int | None = None,
                  exclusive: bool = False) -> Iterator[BinaryIO]:
    """``with atomic_writer(p) as f: f.write(b"...")``: a binary file that appears under ``p`` only
    when the block ends normally; an exception in the block leaves ``p`` as it was.

    ``durable`` also fsyncs (survives a power cut): for model files, not for transient job bundles
    whose keys can weigh gigabytes. ``mode``: see ``temp_sibling``. ``exclusive``: publish only if
    ``p`` does not exist yet (a hard link instead of a rename; FileExistsError if it does).
    Raises OSError from the file system.
    """
    path = os.fspath(path)
    fd, tmp = temp_sibling(path, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            fd = None
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if fd is not None:
            os.close(fd)
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str | os.PathLike, data: bytes | str, durable: bool = False, mode: int | None = None,
                 exclusive: bool = False) -> None:
    """Write all of ``data`` (str: UTF-8) to ``path`` atomically (see ``atomic_writer`` for the options)."""
    with atomic_writer(path, durable, mode, exclusive) as f:
        f.write(data.encode() if isinstance(data, str) else data)
