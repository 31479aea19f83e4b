"""Output files written after long work (model files, exported or extracted CSVs): never lose them.

One place for every command that writes a user-named output:

* ``check_writable(path, what)`` before any work (keys, training, extraction): refuses a directory,
  a missing directory, or a location where no file can be created (it creates and removes a probe
  file next to the target), with a one-line ``OutputError``;
* ``open_output(path, what)`` / ``write_output(path, data, what)`` write atomically (temporary
  sibling, then rename). If the disk refuses the bytes all the same (full, read-only remount,
  directory removed meanwhile), what was written so far moves to a fallback location (the temporary
  directory, the home directory, the current directory: the first that accepts it), writing goes
  on there, and at the end an ``OutputError`` says where the file is and why: the command exits
  non-zero but the work is kept.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import tempfile

from hetrain._atomic import UMASK, temp_sibling
from hetrain.errors import OutputError

_BUFFER = 1 << 20  # bytes held before they go to disk; on failure they move with the rest


def check_writable(path: str | os.PathLike, what: str = "output") -> pathlib.Path:
    """The output ``path`` can be created (or replaced); OutputError otherwise. Call it before long work."""
    p = pathlib.Path(path)
    if p.is_dir():
        raise OutputError(f"cannot write the {what} to {p}: it is a directory (name a file, e.g. {p / _example(what)})")
    if p.exists() and not p.is_file():
        raise OutputError(f"cannot write the {what} to {p}: it exists and is not a regular file")
    parent = p.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write the {what} to {p}: directory {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OutputError(f"cannot write the {what} to {p}: {_reason(exc)} (checked before any work)") from None
    return p


def _example(what: str) -> str:
    return "model.json" if "model" in what else "out.csv"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def fallback_dirs() -> list[pathlib.Path]:
    """Where an output goes when its own location refuses it, in order of preference."""
    dirs = [pathlib.Path(tempfile.gettempdir()), pathlib.Path.home(), pathlib.Path.cwd()]
    out: list[pathlib.Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


class _OutputWriter:
    """Binary or text writes, buffered here so that nothing handed over is lost if the disk fails."""

    def __init__(self, path: str | os.PathLike, what: str, durable: bool, mode: int | None = None) -> None:
        self.path, self.what, self.durable = pathlib.Path(path), what, durable
        self.tmp: pathlib.Path | None = None  # the temporary sibling (_atomic.temp_sibling), once made
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.failure: str | None = None     # why the output did not go to self.path
        self.target = self.path              # where the file ends up
        self.fd: int | None = None
        self.current: pathlib.Path | None = None  # the file being written now
        self.committed = 0                   # bytes of it known to be on disk (a failed write may leave part)
        self.refused = {_resolved(self.path.parent)}  # directories that failed (never tried again)
        try:
            self.fd, tmp = temp_sibling(self.path, 0o644 & ~UMASK if mode is None else mode)
            self.tmp = self.current = pathlib.Path(tmp)
        except OSError as exc:
            self._fail_over(exc)

    # ------------------------------------------------------------------ writing
    def write(self, data: bytes | str) -> None:
        b = data.encode() if isinstance(data, str) else bytes(data)
        self.pending.append(b)
        self.pending_bytes += len(b)
        if self.pending_bytes >= _BUFFER:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self.pending)
        self.pending, self.pending_bytes = [], 0
        try:
            _write_all(self.fd, data)
            self.committed += len(data)
        except OSError as exc:
            self.pending, self.pending_bytes = [data], len(data)
            self._fail_over(exc)  # re-writes the committed bytes and ``data`` elsewhere
            self.pending, self.pending_bytes = [], 0

    def close(self) -> pathlib.Path:
        """Finish the file; returns where it is. OutputError if that is not where it was asked to go."""
        self._flush()
        try:
            if self.durable:
                os.fsync(self.fd)
            if self.failure is None:
                os.replace(self.tmp, self.path)  # the descriptor stays open: on failure its bytes move on
        except OSError as exc:
            self._fail_over(exc)
            return self.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None
        if self.failure is not None:
            raise OutputError(f"could not write the {self.what} to {self.path} ({self.failure}); it was saved to "
                              f"{self.target} instead: move it where you want it")
        return self.target

    def discard(self) -> None:
        """Abandon the output (the work that should fill it failed): no half file stays behind."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        for p in {self.tmp, self.current} - {None}:
            with contextlib.suppress(OSError):
                p.unlink()

    # ------------------------------------------------------------------ failure
    def _fail_over(self, exc: OSError) -> None:
        """Move what was written so far (plus the pending bytes) to the first fallback that takes it."""
        if self.failure is None:
            self.failure = _reason(exc)
        old, old_fd = self.current, self.fd
        self.fd = None
        pending = b"".join(self.pending)
        tried = []
        self.refused.add(_resolved((self.current or self.path).parent))
        for d in fallback_dirs():
            if _resolved(d) in self.refused:
                continue
            try:
                fd, name = tempfile.mkstemp(prefix=f"{self.path.stem}-", suffix=self.path.suffix, dir=d)
            except OSError as e:
                tried.append(f"{d}: {_reason(e)}")
                continue
            try:
                if old_fd is not None:  # what reached the disk so far, read through the open descriptor
                    pos = 0
                    while pos < self.committed and (chunk := os.pread(old_fd, min(_BUFFER, self.committed - pos), pos)):
                        _write_all(fd, chunk)
                        pos += len(chunk)
                    if pos != self.committed:
                        raise OSError(errno.EIO, f"could read back only {pos} of {self.committed} bytes written")
                _write_all(fd, pending)
            except OSError as e:
                os.close(fd)
                os.remove(name)
                tried.append(f"{d}: {_reason(e)}")
                continue
            _close_and_remove(old_fd, old)
            self.fd, self.current, self.target = fd, pathlib.Path(name), pathlib.Path(name)
            self.committed += len(pending)
            self.pending, self.pending_bytes = [], 0
            return
        _close_and_remove(old_fd, old)
        raise OutputError(f"could not write the {self.what} to {self.path} ({self.failure}), nor save it in "
                          f"{'; '.join(tried) or 'any fallback directory'}: it is lost") from None


def _close_and_remove(fd: int | None, path: pathlib.Path | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def _resolved(p: pathlib.Path) -> pathlib.Path:
    try:
        return p.resolve()
    except OSError:
        return p.absolute()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@contextlib.contextmanager
def open_output(path: str | os.PathLike, what: str = "output", durable: bool = False, mode: int | None = None):
    """``with open_output(p, "model file") as f: f.write(...)``: atomic, and kept elsewhere if ``p`` fails.
    ``mode``: the file's permissions (e.g. 0o600; default 0o644 less the umask; a fallback copy is 0600).

    Leaving the block by an exception discards the file; leaving it normally raises OutputError
    if the file had to go to a fallback location (the message says where)."""
    w = _OutputWriter(path, what, durable, mode)
    try:
        yield w
    except BaseException:
        w.discard()
        raise
    w.close()


def write_output(path: str | os.PathLike, data: bytes | str, what: str = "output", durable: bool = False,
                 mode: int | None = None) -> None:
    """The whole content at once (see open_output)."""
    with open_output(path, what, durable, mode) as f:
        f.write(data)
