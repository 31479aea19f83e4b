"""The service's relay between a job's server process and the data owner's HTTP session.

A job trained with ``"refresh": "client"`` needs the data owner (who holds the secret key) to answer
its refresh requests. The server process listens on a Unix socket (``--channel PATH``) and sends
frames (refresh_channel.py: ``b"HTRF" | u32 header length | u64 body length | header | body``,
the body a collection of ciphertexts),
expecting exactly one answer frame per frame; if the connection drops it waits for the next one
and sends its request again. The relay connects to that socket (retrying until the server
listens), holds each frame as the job's *pending request* with a sequence number of its own, and
writes the data owner's answer (``POST /v1/jobs/{id}/channel/{seq}``) back to the socket.

It reads a frame's length prefix, and checks an answer's structure (refresh_channel.decode_frame
without hashing: ``check_frame``), never the ciphertexts: what the frames say is between the
server process and the data owner. HTTP sessions may come and go (a request stays pending until
answered: a data owner who drops after fetching it gets it again); if the socket breaks, the
relay reconnects and the server resends. No thread here ever waits on an HTTP client, and no
HTTP request waits longer than its own ``wait``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import select
import socket
import threading
import time
from typing import Callable

from hetrain.protocol.refresh_channel import _PREFIX as FRAME_PREFIX  # the frame format's one definition
from hetrain.protocol.refresh_channel import ChannelError, answer_limit, check_prefix
from hetrain.protocol.refresh_channel import decode_frame

log = logging.getLogger("hetrain.service")
_POLL_S = 0.2
_CONNECT_RETRY_S = (0.02, 0.5)  # first and longest pause between connection attempts


class FrameError(ValueError):
    """Bytes that are not one well-formed channel frame."""


def frame_size(prefix: bytes) -> int:
    """The whole frame's size from its first FRAME_PREFIX.size bytes (FrameError if not a frame)."""
    try:
        hlen, blen = check_prefix(prefix)
    except ChannelError as exc:
        raise FrameError(str(exc)) from None
    return FRAME_PREFIX.size + hlen + blen


def check_frame(frame: bytes | bytearray) -> None:
    """FrameError unless ``frame`` is exactly one frame whose header is a JSON object and whose
    body is empty or a collection whose manifest is well-formed and whose parts fill it (what
    refresh_channel.recv_frame would accept, less the ciphertexts' SHA-256: the server checks
    those; nothing is copied or hashed here)."""
    try:
        decode_frame(frame, verify=False)
    except ChannelError as exc:
        raise FrameError(str(exc)) from None


@dataclasses.dataclass
class RelayStats:
    requests: int = 0          # frames from the server handed to the data owner (resends included)
    answers: int = 0           # answers written back to the server
    bytes_to_client: int = 0
    bytes_to_server: int = 0
    connections: int = 0       # connections the server spoke on (more than one: it was re-established)
    polls: int = 0             # HTTP requests for the pending frame
    last_poll_at: float | None = None  # when a data owner last asked (wall clock)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Broken(Exception):
    """The socket to the server broke or the server went away."""


class ChannelRelay:
    """One job's relay. Created with the job (so HTTP clients may wait before it runs); ``run``
    connects to the server's socket and relays until the process ends; ``wait_request`` and
    ``answer`` are the HTTP side; ``finish`` ends it (the job is done, failed or deleted)."""

    def __init__(self) -> None:
        self.stats = RelayStats()
        self._cond = threading.Condition()
        self._seq = 0
        self._pending: tuple[int, bytearray] | None = None  # (seq, frame) waiting for its answer
        self._answer: bytes | None = None
        self._finished = False

    # ------------------------------------------------------------------ HTTP side
    @property
    def finished(self) -> bool:
        return self._finished

    def wait_request(self, wait: float) -> tuple[int, memoryview] | None:
        """The pending request (seq, frame), waiting up to ``wait`` seconds for one; None if none
        came (or the relay finished). Blocks: call it from a worker thread."""
        deadline = time.monotonic() + max(0.0, wait)
        with self._cond:
            self.stats.polls += 1
            self.stats.last_poll_at = time.time()
            while not self._finished:
                if self._pending is not None and self._answer is None:
                    seq, frame = self._pending
                    return seq, memoryview(frame)
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return None

    def answer_limit(self, seq: int) -> int | None:
        """The largest answer accepted for request ``seq``; None if it is not the pending one."""
        with self._cond:
            if self._pending is None or self._pending[0] != seq or self._answer is not None:
                return None
            return answer_limit(len(self._pending[1]))

    def answer(self, seq: int, frame: bytes) -> bool:
        """Hand the answer to request ``seq`` to the relay thread; False if it is no longer pending."""
        with self._cond:
            if self._pending is None or self._pending[0] != seq or self._answer is not None or self._finished:
                return False
            self._answer = bytes(frame)
            self._cond.notify_all()
            return True

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._pending, self._answer = None, None
            self._cond.notify_all()

    # ------------------------------------------------------------------ server side
    def run(self, path: str | os.PathLike, alive: Callable[[], bool]) -> None:
        """Relay between the socket at ``path`` and HTTP until ``alive()`` turns false (the server
        process ended) or ``finish``; reconnects whenever the socket breaks."""
        while not self._finished:
            sock = self._connect(os.fspath(path), alive)
            if sock is None:
                break
            try:
                self._serve(sock, alive)
            except _Broken as exc:
                if alive() and not self._finished:
                    log.info("refresh relay: connection to %s lost (%s); reconnecting", path, exc)
            finally:
                sock.close()
                with self._cond:  # an unanswered request is sent again on the next connection
                    self._pending, self._answer = None, None
                    self._cond.notify_all()

    def _connect(self, path: str, alive) -> socket.socket | None:
        pause = _CONNECT_RETRY_S[0]
        while not self._finished and alive():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return sock
            except OSError:  # not listening yet (or any more): try again while the process lives
                sock.close()
            time.sleep(pause)
            pause = min(_CONNECT_RETRY_S[1], pause * 2)
        return None

    def _serve(self, sock: socket.socket, alive) -> None:
        first = True
        while True:
            frame = self._read_frame(sock, alive)
            with self._cond:
                self.stats.connections += first  # counted when the server speaks on it (not a connect
                first = False                    # that lands in its backlog while it shuts down)
                self._seq += 1
                self._pending, self._answer = (self._seq, frame), None
                self.stats.requests += 1
                self.stats.bytes_to_client += len(frame)
                self._cond.notify_all()
                while self._answer is None:
                    if self._finished or not alive():
                        raise _Broken("the job ended")
                    self._cond.wait(_POLL_S)
                    if self._answer is None and _closed_by_peer(sock):
                        raise _Broken("the server closed the connection")
                answer, self._pending, self._answer = self._answer, None, None
            try:
                sock.sendall(answer)
            except OSError as exc:
                raise _Broken(f"cannot write the answer ({exc})") from None
            with self._cond:
                self.stats.answers += 1
                self.stats.bytes_to_server += len(answer)

    def _read_frame(self, sock: socket.socket, alive) -> bytearray:
        prefix = self._recv(sock, FRAME_PREFIX.size, alive)
        try:
            size = frame_size(prefix)
        except FrameError as exc:
            raise _Broken(f"the server sent something else than a frame: {exc}") from None
        frame = bytearray(size)
        frame[:len(prefix)] = prefix
        self._recv_into(sock, memoryview(frame)[len(prefix):], alive)
        return frame

    def _recv(self, sock, n: int, alive) -> bytearray:
        buf = bytearray(n)
        self._recv_into(sock, memoryview(buf), alive)
        return buf

    def _recv_into(self, sock, view: memoryview, alive) -> None:
        sock.settimeout(_POLL_S)
        got = 0
        while got < len(view):
            try:
                n = sock.recv_into(view[got:], min(len(view) - got, 1 << 20))
            except socket.timeout:
                if self._finished or not alive():
                    raise _Broken("the job ended") from None
                continue
            except OSError as exc:
                raise _Broken(str(exc)) from None
            if n == 0:
                raise _Broken("the server closed the connection")
            got += n


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed its end (while we wait for the data owner's answer)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
