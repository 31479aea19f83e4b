"""The refresh channel between the server process and the client (who holds the secret key).

The client (parent process) listens on a Unix domain socket (mode 0600, in the job directory
when the path is short enough) and accepts exactly one connection, from the server process it
started (checked with SO_PEERCRED): nobody else gets a decryption service. The server connects
with ``--channel PATH``. Frames are length-prefixed:

    b"HTRF" | u32 header length | u64 body length | header (JSON) | body (ciphertext blobs)

Blobs are ``engine.serialize`` bytes; the header names them and carries the key id, checked on
both ends. Messages (server -> client, each answered):
    hello                          -> ok (key ids match)
    refresh  state, step           -> refreshed state (decrypted, re-encrypted at the top level)
    evaluate state, step, epoch    -> verdict stop=bool (the one bit the server learns), with the
             [refresh=true]           re-encrypted state too when it asked for a refresh
    done                           -> bye
The client answers ``error`` with a fixed code (ERROR_CODES) if its side fails; the server raises it. Either side
notices the other going away: the client polls the server process while it waits, the server sees
the socket close (and gives up after ``timeout`` seconds without an answer).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import socket
import struct
import tempfile
import time
from typing import Callable

from hetrain.errors import HetrainUserError

MAGIC = b"HTRF"
_PREFIX = struct.Struct(">4sIQ")
SOCKET_NAME = "refresh.sock"
DEFAULT_TIMEOUT_S = 3600.0  # a client refresh of a large state at N=32768 takes seconds, never an hour
_POLL_S = 0.2


class ChannelError(HetrainUserError):
    """The refresh channel broke: the other side died, closed, timed out or sent something malformed."""


@dataclasses.dataclass
class ChannelStats:
    round_trips: int = 0
    bytes_to_client: int = 0
    bytes_to_server: int = 0
    refreshes: int = 0
    evaluations: int = 0
    bootstraps: int = 0
    client_seconds: float = 0.0   # the client's share: decrypt, check, evaluate, re-encrypt
    wait_seconds: float = 0.0     # the server's wait for answers (client share + transfer)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------- frames
# What the client may tell the server when it stops: fixed codes, never a message of its own
# (nothing derived from decrypted values crosses to the server).
ERROR_CODES = {"key_mismatch": "the ciphertexts are under another key",
               "unknown_request": "the request is not one the client answers",
               "client_refused": "the client stopped the job (its reason stays with the client)"}


def send_frame(sock: socket.socket, header: dict, blobs: list[bytes] = ()) -> int:
    """Send one frame; returns its size in bytes."""
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}).encode()
    body_len = sum(len(b) for b in blobs)
    try:
        sock.sendall(_PREFIX.pack(MAGIC, len(head), body_len) + head)
        for b in blobs:
            sock.sendall(b)
    except OSError as exc:
        raise ChannelError(f"the other side of the refresh channel is gone ({exc})") from None
    return _PREFIX.size + len(head) + body_len


def recv_frame(sock: socket.socket, alive: Callable[[], bool] = lambda: True,
               timeout: float | None = None) -> tuple[dict, list[bytes], int]:
    """Receive one frame: (header, blobs, bytes). ``alive()`` is polled while waiting; ``timeout``
    bounds the wait for the frame's first byte and any pause inside it (None: no bound)."""
    magic, hlen, blen = _PREFIX.unpack(_recv_exact(sock, _PREFIX.size, alive, timeout))
    if magic != MAGIC:
        raise ChannelError("malformed frame on the refresh channel (bad magic)")
    try:
        header = json.loads(_recv_exact(sock, hlen, alive, timeout))
        sizes = [int(s) for s in header.pop("blobs")]
    except (ValueError, KeyError, TypeError) as exc:
        raise ChannelError(f"malformed frame header on the refresh channel ({exc})") from None
    if sum(sizes) != blen:
        raise ChannelError("malformed frame on the refresh channel (blob sizes do not add up)")
    body = _recv_exact(sock, blen, alive, timeout)
    blobs, pos = [], 0
    for s in sizes:
        blobs.append(body[pos:pos + s])
        pos += s
    return header, blobs, _PREFIX.size + hlen + blen


def _recv_exact(sock: socket.socket, n: int, alive, timeout: float | None) -> bytes:
    buf = bytearray()
    waited = 0.0
    sock.settimeout(_POLL_S)
    while len(buf) < n:
        try:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
        except socket.timeout:
            waited += _POLL_S
            if not alive():
                raise ChannelError("the other side of the refresh channel exited") from None
            if timeout is not None and waited >= timeout:
                raise ChannelError(f"no answer on the refresh channel for {timeout:.0f} s") from None
            continue
        except OSError as exc:
            raise ChannelError(f"the refresh channel broke ({exc})") from None
        if not chunk:
            raise ChannelError("the other side closed the refresh channel")
        buf += chunk
        waited = 0.0
    return bytes(buf)


# ---------------------------------------------------------------------- state <-> blobs
def encode_state(engine, state: dict) -> tuple[dict, list[bytes]]:
    """State dict (name -> ciphertext or list) as a layout and unique blobs (a ciphertext shared
    by two names, e.g. W and its look-ahead V = W, crosses once)."""
    index: dict[int, int] = {}
    blobs: list[bytes] = []

    def ref(ct) -> int:
        if id(ct) not in index:
            index[id(ct)] = len(blobs)
            blobs.append(engine.serialize(ct))
        return index[id(ct)]

    layout = {name: ([ref(c) for c in v] if isinstance(v, (list, tuple)) else ref(v)) for name, v in state.items()}
    return layout, blobs


def decode_state(engine, layout: dict, blobs: list[bytes]) -> dict:
    cts = [engine.deserialize(b) for b in blobs]
    try:
        return {name: ([cts[i] for i in v] if isinstance(v, list) else cts[v]) for name, v in layout.items()}
    except (IndexError, TypeError) as exc:
        raise ChannelError(f"malformed state on the refresh channel ({exc})") from None


# ---------------------------------------------------------------------- server side
class ServerChannel:
    """The server's handle on the client. Callable as a trainer's ``refresh`` hook, and a ``monitor``."""

    def __init__(self, path: str | os.PathLike, engine, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.engine, self.timeout = engine, timeout
        self.stats = ChannelStats()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(os.fspath(path))
        except OSError as exc:
            raise ChannelError(f"cannot connect to the client's refresh channel {path}: {exc}") from None
        send_frame(self.sock, {"op": "hello", "key_id": engine.key_id})
        reply = self._answer("ok")[0]
        if reply.get("key_id") != engine.key_id:
            raise ChannelError(f"the client holds key {reply.get('key_id')}, this job's key is {engine.key_id}")

    def _answer(self, expect: str) -> tuple[dict, list[bytes], int]:
        header, blobs, n = recv_frame(self.sock, timeout=self.timeout)
        if header.get("op") == "error":
            raise ChannelError(f"the client refused: {ERROR_CODES.get(header.get('code'), 'no reason given')}")
        if header.get("op") != expect:
            raise ChannelError(f"unexpected {header.get('op')!r} on the refresh channel (expected {expect!r})")
        if "key_id" in header and header["key_id"] != self.engine.key_id:
            raise ChannelError("the client answered under another key")
        return header, blobs, n

    def _trip(self, header: dict, state: dict, expect: str) -> tuple[dict, dict | None]:
        layout, blobs = encode_state(self.engine, state)
        t0 = time.perf_counter()
        self.stats.bytes_to_client += send_frame(self.sock, {**header, "key_id": self.engine.key_id,
                                                             "state": layout}, blobs)
        reply, back, n = self._answer(expect)
        self.stats.wait_seconds += time.perf_counter() - t0
        self.stats.bytes_to_server += n
        self.stats.round_trips += 1
        fresh = decode_state(self.engine, reply["state"], back) if reply.get("state") is not None else None
        return reply, fresh

    def __call__(self, state: dict, step: int | None = None) -> dict:
        """refresh hook: the state comes back re-encrypted at the top level."""
        _, fresh = self._trip({"op": "refresh", "step": step}, state, "refreshed")
        if fresh is None or set(fresh) != set(state):
            raise ChannelError("the client's refreshed state does not match what was sent")
        self.stats.refreshes += 1
        return fresh

    def evaluate(self, state: dict, step: int, epoch: int, refresh: bool = False) -> tuple[dict | None, bool]:
        """monitor hook: the client evaluates (and re-encrypts when ``refresh``); returns (state, stop)."""
        reply, fresh = self._trip({"op": "evaluate", "step": step, "epoch": epoch, "refresh": refresh}, state, "verdict")
        self.stats.evaluations += 1
        if fresh is not None:
            self.stats.refreshes += 1
        return fresh, bool(reply.get("stop"))

    def close(self) -> None:
        try:
            send_frame(self.sock, {"op": "done"})
            self._answer("bye")
        finally:
            self.sock.close()


# ---------------------------------------------------------------------- client side
def socket_path(jobdir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path | None]:
    """(socket path, temporary directory to remove or None). Unix socket paths are limited to ~107
    bytes: a long job directory gets a short private temporary one instead."""
    path = pathlib.Path(jobdir).resolve() / SOCKET_NAME
    if len(os.fsencode(path)) < 100:
        return path, None
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hetrain-ch-"))
    return tmp / SOCKET_NAME, tmp


class ClientEndpoint:
    """The client's listening socket; ``serve`` answers the server until it says done.

    ``handler`` has ``refresh(state, step) -> state`` and ``evaluate(state, step, epoch, refresh)
    -> (state | None, stop)`` on deserialised ciphertexts of ``engine`` (the secret-key engine).
    """

    def __init__(self, jobdir: str | os.PathLike, engine, handler) -> None:
        if not engine.has_secret_key:
            raise ChannelError("the client end of the refresh channel needs the engine with the secret key")
        self.engine, self.handler = engine, handler
        self.stats = ChannelStats()
        self.path, self._tmp = socket_path(pathlib.Path(jobdir))
        if self.path.exists():
            self.path.unlink()  # a stale socket of a killed run
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600: only this user can even try to connect
        try:
            self.listener.bind(os.fspath(self.path))
        finally:
            os.umask(old)
        self.listener.listen(1)
        self.conn: socket.socket | None = None

    def _accept(self, proc) -> bool:
        self.listener.settimeout(_POLL_S)
        while True:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                if proc.poll() is not None:
                    return False  # the server ended without connecting (e.g. it refused the job)
                continue
            pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
            if pid != proc.pid:  # only the server process we started may ask for decryptions
                conn.close()
                continue
            self.conn = conn
            return True

    def serve(self, proc) -> ChannelStats:
        """Answer the server process ``proc`` until ``done``; ChannelError if it dies meanwhile."""
        if not self._accept(proc):
            return self.stats
        alive = lambda: proc.poll() is None  # noqa: E731
        while True:
            header, blobs, n = recv_frame(self.conn, alive)
            op = header.get("op")
            if op == "done":
                send_frame(self.conn, {"op": "bye"})
                return self.stats
            if header.get("key_id") != self.engine.key_id:
                self._refuse("key_mismatch", f"the server sent ciphertexts under key {header.get('key_id')}, "
                             f"the client's key is {self.engine.key_id}")
            if op == "hello":
                send_frame(self.conn, {"op": "ok", "key_id": self.engine.key_id})
                continue
            if op not in ("refresh", "evaluate"):
                self._refuse("unknown_request", f"unknown request {op!r}")
            self.stats.bytes_to_client += n
            t0 = time.perf_counter()
            try:
                state = decode_state(self.engine, header["state"], blobs)
                if op == "refresh":
                    fresh, reply = self.handler.refresh(state, header.get("step")), {"op": "refreshed"}
                    self.stats.refreshes += 1
                else:
                    fresh, stop = self.handler.evaluate(state, header.get("step"), header.get("epoch"),
                                                        bool(header.get("refresh")))
                    reply = {"op": "verdict", "stop": bool(stop)}
                    self.stats.evaluations += 1
                    self.stats.refreshes += fresh is not None
            except Exception:
                # a fixed code only: the client's reason may hold numbers computed from decrypted values
                # (a span, a min, a max), and a malicious server chooses the state it sends
                self._tell_error("client_refused")  # the server may be gone already: our own error is raised
                raise
            layout, out = encode_state(self.engine, fresh) if fresh is not None else (None, [])
            dt = time.perf_counter() - t0
            self.stats.client_seconds += dt
            self.stats.bytes_to_server += send_frame(
                self.conn, {**reply, "key_id": self.engine.key_id, "state": layout}, out)
            self.stats.round_trips += 1

    def _refuse(self, code: str, message: str):
        self._tell_error(code)
        raise ChannelError(message)

    def _tell_error(self, code: str) -> None:
        """Tell the server that we stop, by a fixed code (ERROR_CODES), if it still listens (a write
        to a gone reader must not replace the reason with "the other side is gone")."""
        try:
            send_frame(self.conn, {"op": "error", "code": code})
        except ChannelError:
            pass

    def close(self) -> None:
        for s in (self.conn, self.listener):
            if s is not None:
                s.close()
        if self.path.exists():
            self.path.unlink()
        if self._tmp is not None:
            self._tmp.rmdir()
