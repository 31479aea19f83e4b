"""The refresh channel between the training server and the data owner (who holds the secret key).

The SERVER process listens on a Unix domain socket (mode 0600; ``channel_location(JOBDIR)`` says
where) and data-owner sessions attach to it one after another: the data owner may come and go
while the job trains. The server accepts connections from its own uid only (SO_PEERCRED), and a
session answers only a server of its own uid. Frames are length-prefixed:

    b"HTRF" | u32 header length | u64 body length | header (JSON) | body

The body is empty, or a collection (ckks/collection.py, the one format for ciphertexts) of the
state's unique ciphertexts (``engine.serialize`` bytes, each with its length and SHA-256 in the
collection's manifest, checked as it is read) under the name "ct"; the header's ``state`` (a
layout: name -> index or list of indices) says which is which, and carries the key id, checked on
both ends. A frame is refused from its prefix when its header is over MAX_FRAME_HEADER bytes, or
(the server reading an answer) it is over ``answer_limit`` of its request.
Messages (server -> data owner, each answered by exactly one frame):
    hello    key_id, job_id                  -> ok (refused with a fixed code under another key or job)
    refresh  seq, state, step                -> refreshed (decrypted, re-encrypted at the top level)
    evaluate seq, state, step, epoch         -> verdict stop=bool (the one bit the server learns), with
             [refresh=true]                     the re-encrypted state too when it asked for a refresh
    done                                     -> bye
Every request carries a ``seq`` (increasing) and its answer the same seq. When the connection
breaks before the answer arrives, the server waits for the next session (``timeout`` seconds from
the moment it starts waiting, announced in one line on stderr), says hello again and resends the
SAME request (same seq; ``stats.resent``). No session within the timeout, or a session silent for
the timeout, ends the job with ChannelError (a job that checkpoints can be resumed).

The data owner answers ``error`` with a fixed code (ERROR_CODES) when it refuses; the server raises
it. ``ChannelAnswerer`` is the transport-free data-owner side (one frame in, one frame out);
``serve_socket`` drives it over the Unix socket.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import select
import socket
import stat
import struct
import sys
import tempfile
import time
import weakref
from typing import Callable

from hetrain._atomic import atomic_write
from hetrain.ckks import collection
from hetrain.ckks.errors import SerializationError
from hetrain.errors import HetrainUserError

MAGIC = b"HTRF"
_PREFIX = struct.Struct(">4sIQ")
STATE_NAME = "ct"               # the body's one name: the state's unique ciphertexts, in the layout's order
MAX_FRAME_HEADER = 1 << 20      # a frame's JSON header: an op, a seq, a key id and a layout (bytes)
MIN_ANSWER_LIMIT = 1 << 20      # an answer may always be this large ...
# ... or this many times its request. Not 2: a refresh answers a state at a low level with fresh
# ciphertexts at the top level, and a SEAL ciphertext's size is proportional to the primes left at
# its level (measured: fresh / last level = 6.3x at n16384, 7.6x at n16384-deep, 15.3x at n32768).
ANSWER_FACTOR = 32
SOCKET_NAME = "refresh.sock"
CHANNEL_RECORD = "channel.json"  # JOBDIR/channel.json: where the server listens, when not JOBDIR/refresh.sock
DEFAULT_TIMEOUT_S = 3600.0  # a client refresh of a large state at N=32768 takes seconds, never an hour
_POLL_S = 0.2
_MAX_SOCKET_PATH = 100  # bytes, for JOBDIR/refresh.sock (a margin below sun_path's size)
_SUN_PATH = 108 if sys.platform.startswith("linux") else 104  # what bind() takes, terminating NUL included
_TMP_PREFIX = "hetrain-ch-"
_BYE_WAIT_S = 5.0


class ChannelError(HetrainUserError):
    """The refresh channel broke: the other side died, closed, timed out, refused or sent something malformed."""


class ChannelClosed(ChannelError):
    """The connection is gone (end of stream, reset, broken pipe): the server waits for the next session."""


@dataclasses.dataclass
class ChannelStats:
    """Counters of one refresh channel (either end): round trips, bytes each way, refreshes, evaluations,
    bootstraps, the client's share and the server's waits (seconds), sessions attached and requests resent.
    """
    round_trips: int = 0
    bytes_to_client: int = 0
    bytes_to_server: int = 0
    refreshes: int = 0
    evaluations: int = 0
    bootstraps: int = 0
    client_seconds: float = 0.0   # the client's share: decrypt, check, evaluate, re-encrypt
    wait_seconds: float = 0.0     # the server's wait in the hooks (client share + transfer + waits for a session)
    attaches: int = 0             # data-owner sessions that said ok to hello
    resent: int = 0               # requests sent again after a session went away before answering

    def as_dict(self) -> dict:
        """The counters as a JSON-ready dict."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------- frames
# What the data owner may tell the server when it refuses: fixed codes, never a message of its own
# (nothing derived from decrypted values crosses to the server).
ERROR_CODES = {"key_mismatch": "the ciphertexts are under another key",
               "job_mismatch": "the data owner's session is for another job",
               "unknown_request": "the request is not one the client answers",
               "client_refused": "the client stopped the job (its reason stays with the client)"}


def _head(header: dict) -> bytes:
    if "blobs" in header:  # the body's own manifest lists the ciphertexts (an earlier hetrain's frames had this)
        raise ChannelError("a frame header has no 'blobs': its ciphertexts are the body's collection")
    return json.dumps(header).encode()


def _body(header: dict, blobs) -> bytes:
    """The frame's body: nothing, or a collection (ckks/collection.py) of the blobs under "ct"."""
    return collection.pack_blobs(str(header.get("key_id", "")), {STATE_NAME: list(blobs)}) if blobs else b""


def frame_size(header: dict, blobs=()) -> int:
    """The bytes ``send_frame(sock, header, blobs)`` puts on the wire."""
    body = collection.packed_size(str(header.get("key_id", "")), {STATE_NAME: [len(b) for b in blobs]}) if blobs else 0
    return _PREFIX.size + len(_head(header)) + body


def encode_frame(header: dict, blobs=()) -> bytes:
    """One frame as bytes: prefix, JSON header, body (``blobs``: ``engine.serialize`` bytes)."""
    head, body = _head(header), _body(header, blobs)
    return _PREFIX.pack(MAGIC, len(head), len(body)) + head + body


def check_prefix(prefix: bytes, max_frame: int | None = None) -> tuple[int, int]:
    """(header bytes, body bytes) of a frame's first ``_PREFIX.size`` bytes; ChannelError if they
    are not a frame's, or announce a header over MAX_FRAME_HEADER or a frame over ``max_frame``."""
    if len(prefix) < _PREFIX.size:
        raise ChannelError(f"a frame starts with {_PREFIX.size} bytes (magic and lengths), got {len(prefix)}")
    magic, hlen, blen = _PREFIX.unpack(prefix[:_PREFIX.size])
    if magic != MAGIC:
        raise ChannelError(f"not a refresh-channel frame (magic {magic!r}, expected {MAGIC!r})")
    if hlen > MAX_FRAME_HEADER:
        raise ChannelError(f"malformed frame on the refresh channel (a header of {hlen} bytes; at most "
                           f"{MAX_FRAME_HEADER})")
    if max_frame is not None and _PREFIX.size + hlen + blen > max_frame:
        raise ChannelError(f"a frame of {_PREFIX.size + hlen + blen} bytes on the refresh channel, more than the "
                           f"{max_frame} allowed here")
    return hlen, blen


def decode_frame(data: bytes | bytearray | memoryview, *, verify: bool = True) -> tuple[dict, list[bytes]]:
    """(header, blobs) of exactly one whole frame (``encode_frame``'s bytes). ChannelError if it
    is not one: bad prefix, a header that is not a JSON object, a body that is not a collection
    whose parts fill it, or (``verify``) a ciphertext whose SHA-256 is not its manifest's.
    ``verify=False``: the structure only, no copy, no hashing (the service's relay)."""
    view = memoryview(data)
    hlen, blen = check_prefix(bytes(view[:_PREFIX.size]))
    if len(view) != _PREFIX.size + hlen + blen:
        raise ChannelError(f"the frame's prefix announces {_PREFIX.size + hlen + blen} bytes, it has {len(view)}")
    try:
        header = json.loads(bytes(view[_PREFIX.size:_PREFIX.size + hlen]))
    except (ValueError, RecursionError) as exc:
        raise ChannelError(f"malformed frame header on the refresh channel ({exc})") from None
    if not isinstance(header, dict) or "blobs" in header:
        raise ChannelError("malformed frame header on the refresh channel (not a JSON object of this hetrain)")
    body = view[_PREFIX.size + hlen:]
    if not blen:
        return header, []
    try:
        if not verify:
            counts = collection.check_packed(body, "the frame's ciphertexts")
            if set(counts) != {STATE_NAME}:
                raise SerializationError(f"it names {sorted(counts)}, not {STATE_NAME!r}")
            return header, []
        _, named = collection.unpack_blobs(body, "the frame's ciphertexts")
        if set(named) != {STATE_NAME}:
            raise SerializationError(f"it names {sorted(named)}, not {STATE_NAME!r}")
    except SerializationError as exc:
        raise ChannelError(f"malformed frame body on the refresh channel ({exc})") from None
    return header, named[STATE_NAME]


def send_frame(sock: socket.socket, header: dict, blobs: list[bytes] = (), timeout: float | None = None) -> int:
    """Send one frame; returns its size in bytes. ChannelClosed if the other side is gone;
    ChannelError if it reads nothing for ``timeout`` seconds (None: no bound)."""
    data = encode_frame(header, blobs)
    try:
        sock.settimeout(timeout)
        sock.sendall(data)
    except socket.timeout:
        raise ChannelError(f"the other side of the refresh channel read nothing for {timeout:.0f} s") from None
    except OSError as exc:
        raise ChannelClosed(f"the other side of the refresh channel is gone ({exc})") from None
    return len(data)


def recv_frame(sock: socket.socket, alive: Callable[[], bool] = lambda: True,
               timeout: float | None = None, max_frame: int | None = None) -> tuple[dict, list[bytes], int]:
    """Receive one frame: (header, blobs, bytes). ``alive()`` is polled while waiting; ``timeout``
    bounds the wait for the frame's first byte and any pause inside it (None: no bound);
    ``max_frame``: the most bytes the frame may announce (refused from its prefix, before its
    body is read). Every blob's size and SHA-256 are checked against the body's manifest.
    Raises ChannelError for a malformed frame, a timeout or a peer whose ``alive()`` turned False;
    ChannelClosed (a ChannelError) when the connection ends or breaks.
    """
    prefix = _recv_exact(sock, _PREFIX.size, alive, timeout)
    hlen, blen = check_prefix(prefix, max_frame)
    rest = _recv_exact(sock, hlen + blen, alive, timeout)
    header, blobs = decode_frame(prefix + rest)
    return header, blobs, _PREFIX.size + hlen + blen


def answer_limit(request_bytes: int) -> int:
    """The most bytes an answer to a request frame of ``request_bytes`` may have."""
    return max(ANSWER_FACTOR * request_bytes, MIN_ANSWER_LIMIT)


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
            raise ChannelClosed(f"the refresh channel broke ({exc})") from None
        if not chunk:
            raise ChannelClosed("the other side closed the refresh channel")
        buf += chunk
        waited = 0.0
    return bytes(buf)


def _peer_uid(sock: socket.socket) -> int:
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]


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
    """Inverse of ``encode_state``: name -> ciphertext (or list) from ``layout`` (name -> index or list of
    indices into ``blobs``). Raises ChannelError for a layout that does not index ``blobs``, and the engine's
    SerializationError/KeyMismatch for a blob it cannot load.
    """
    cts = [engine.deserialize(b) for b in blobs]
    try:
        return {name: ([cts[i] for i in v] if isinstance(v, list) else cts[v]) for name, v in layout.items()}
    except (IndexError, TypeError) as exc:
        raise ChannelError(f"malformed state on the refresh channel ({exc})") from None


# ---------------------------------------------------------------------- where the server listens
def channel_location(jobdir: str | os.PathLike) -> pathlib.Path:
    """Where the server of JOBDIR listens: the path recorded in JOBDIR/channel.json when there is a
    valid one (a server started with another ``--channel``, or an earlier call), else
    JOBDIR/refresh.sock when that path is short enough for a Unix socket (< 100 bytes), else a
    short private temporary directory (mode 0700) that this call creates and records in
    JOBDIR/channel.json (mode 0600). Both parties call it: whoever comes first creates the
    location, the other reads it; the data owner then waits for the socket to appear.
    Raises ChannelError when the two parties cannot agree on a location (no valid JOBDIR/channel.json after
    another process claimed it).
    """
    jobdir = pathlib.Path(jobdir).resolve()
    recorded = _recorded(jobdir)
    if recorded is not None:
        return recorded
    default = jobdir / SOCKET_NAME
    if len(os.fsencode(default)) < _MAX_SOCKET_PATH:
        return default
    (jobdir / CHANNEL_RECORD).unlink(missing_ok=True)  # a stale record (its directory is gone)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=_short_tmp()))
    path = tmp / SOCKET_NAME
    if _write_record(jobdir, path, exclusive=True):
        return path
    tmp.rmdir()  # another process recorded its location first: use that one
    recorded = _recorded(jobdir)
    if recorded is None:
        raise ChannelError(f"cannot agree on the refresh channel's location ({jobdir / CHANNEL_RECORD})")
    return recorded


def _short_tmp() -> str:
    """The temporary directory, or a shorter system one when its socket paths would be too long."""
    room = len(os.fsencode(os.path.join(_TMP_PREFIX + "x" * 8, SOCKET_NAME))) + 1
    for base in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):
        if len(os.fsencode(base)) + room < _MAX_SOCKET_PATH and os.path.isdir(base) and os.access(base, os.W_OK):
            return base
    raise ChannelError("no temporary directory with a path short enough for the refresh channel's socket")


def job_id_of(jobdir: str | os.PathLike) -> str:
    """The job id a server of JOBDIR says in its hello: job.json's job_id, else the manifest's key id."""
    from . import files
    jobdir = pathlib.Path(jobdir)
    try:
        job = json.loads((jobdir / files.JOB).read_text())
    except (OSError, ValueError):
        job = {}
    return str(job.get("job_id") or files.read_manifest(jobdir)["key_id"])


def _recorded(jobdir: pathlib.Path) -> pathlib.Path | None:
    """The socket path in JOBDIR/channel.json if its directory still exists and is ours."""
    try:
        path = pathlib.Path(json.loads((jobdir / CHANNEL_RECORD).read_text())["socket"])
        st = os.stat(path.parent)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not path.is_absolute() or st.st_uid != os.getuid() or len(os.fsencode(path)) >= _SUN_PATH:
        return None
    return path


def _write_record(jobdir: pathlib.Path, path: pathlib.Path, exclusive: bool) -> bool:
    """Write JOBDIR/channel.json (0600) naming ``path``; with ``exclusive``, only if there is none."""
    try:
        atomic_write(jobdir / CHANNEL_RECORD, json.dumps({"socket": os.fspath(path)}), mode=0o600, exclusive=exclusive)
    except FileExistsError:
        return False
    return True


def _publish(jobdir: pathlib.Path, path: pathlib.Path) -> pathlib.Path | None:
    """Make channel_location(JOBDIR) name ``path``; returns the record written (None: none needed)."""
    jobdir = pathlib.Path(jobdir).resolve()
    if path == jobdir / SOCKET_NAME and len(os.fsencode(path)) < _MAX_SOCKET_PATH:
        (jobdir / CHANNEL_RECORD).unlink(missing_ok=True)  # a stale record would send the data owner elsewhere
        return None
    if _recorded(jobdir) != path:
        _write_record(jobdir, path, exclusive=False)
    return jobdir / CHANNEL_RECORD


def _remove_channel(listener: socket.socket, path: pathlib.Path, inode: int, record: pathlib.Path | None) -> None:
    """Close the listener; remove our socket (not one a later server bound at the same path), the
    record naming it, and the private temporary directory holding it."""
    listener.close()
    try:
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode) and st.st_ino == inode:
            os.unlink(path)
    except OSError:
        pass
    if record is not None:
        try:
            if pathlib.Path(json.loads(record.read_text())["socket"]) == path:
                record.unlink()
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if path.parent.name.startswith(_TMP_PREFIX):
        try:
            path.parent.rmdir()
        except OSError:
            pass


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------- server side
class ServerChannel:
    """The server's listening end. Callable as a trainer's ``refresh`` hook, and a ``monitor``.

    Build it with ``ServerChannel.listen``. A data-owner session is accepted when a request needs
    one (sessions that connect meanwhile wait in the listen queue); the same session then answers
    the following requests until it goes away."""

    def __init__(self, listener: socket.socket, path: pathlib.Path, engine, job_id: str, timeout: float,
                 jobdir: pathlib.Path | None, record: pathlib.Path | None) -> None:
        self.listener, self.path, self.engine, self.job_id, self.timeout = listener, path, engine, str(job_id), timeout
        self.jobdir = jobdir
        self.stats = ChannelStats()
        self.conn: socket.socket | None = None
        self._seq = 0
        inode = os.lstat(path).st_ino
        # the socket and its record go away even when the job fails before run_job's close (e.g. a plan check)
        self._cleanup = weakref.finalize(self, _remove_channel, listener, path, inode, record)

    @classmethod
    def listen(cls, path: str | os.PathLike, engine, job_id: str, timeout: float = DEFAULT_TIMEOUT_S, *,
               jobdir: str | os.PathLike | None = None) -> "ServerChannel":
        """Bind a Unix socket at ``path`` (mode 0600; its directory must exist) and listen, without
        blocking. A stale socket there (a killed run's) is replaced; a live one is refused. With
        ``jobdir``, the location is recorded for channel_location(jobdir) when it is not the
        default one (otherwise nothing else is written).
        Raises ChannelError for a path too long for a Unix socket, a missing directory, a file there that is not
        a socket, another live server on it, or a failed bind.
        """
        path = pathlib.Path(path).absolute()
        if len(os.fsencode(path)) >= _SUN_PATH:
            raise ChannelError(f"refresh channel path too long for a Unix socket ({path}): "
                               "use channel_location(JOBDIR)")
        if not path.parent.is_dir():
            raise ChannelError(f"cannot listen on {path}: its directory does not exist")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise ChannelError(f"{path} exists and is not a socket: refusing to replace it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(os.fspath(path))
                live = True
            except OSError:
                live = False
            finally:
                probe.close()
            if live:
                raise ChannelError(f"another server already listens on {path}")
            os.unlink(path)  # a stale socket of a killed run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600: only this user can even try to connect
        try:
            sock.bind(os.fspath(path))
        except OSError as exc:
            sock.close()
            raise ChannelError(f"cannot listen on {path}: {exc}") from None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(8)
        sock.setblocking(False)
        record = _publish(pathlib.Path(jobdir), path) if jobdir is not None else None
        return cls(sock, path, engine, job_id, timeout, None if jobdir is None else pathlib.Path(jobdir), record)

    # ------------------------------------------------------------ sessions
    def _attach(self) -> None:
        """Accept the next data-owner session (hello/ok); ChannelError after ``timeout`` s without one."""
        start = time.monotonic()
        announced = False
        while True:
            left = self.timeout - (time.monotonic() - start)
            ready, _, _ = select.select([self.listener], [], [], max(0.0, left) if announced else 0)
            if not ready:
                if not announced:
                    announced = True
                    where = self.jobdir if self.jobdir is not None else "JOBDIR"
                    _say(f"waiting for the data owner to attach (hetrain refresh --job {where}); "
                         f"giving up in {self.timeout:.0f} s")
                    continue
                if time.monotonic() - start >= self.timeout:
                    raise ChannelError(f"no data owner attached to the refresh channel within {self.timeout:.0f} s "
                                       f"({self.path}); giving up")
                continue
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                raise ChannelError(f"the refresh channel's socket failed ({exc})") from None
            if self._handshake(conn):
                return

    def _handshake(self, conn: socket.socket) -> bool:
        if _peer_uid(conn) != os.getuid():  # only this user may answer (and so learn what we send)
            conn.close()
            _say("refresh channel: refused a connection from another user")
            return False
        try:
            send_frame(conn, {"op": "hello", "key_id": self.engine.key_id, "job_id": self.job_id}, timeout=self.timeout)
            reply, _, _ = recv_frame(conn, timeout=self.timeout, max_frame=MIN_ANSWER_LIMIT)
        except ChannelClosed:  # the session left before saying ok: wait for the next one
            conn.close()
            return False
        except ChannelError:
            conn.close()
            raise
        if reply.get("op") == "error":
            conn.close()
            _say(f"refresh channel: a data owner session refused this job: "
                 f"{ERROR_CODES.get(reply.get('code'), 'no reason given')}")
            return False
        if reply.get("op") != "ok" or reply.get("key_id") != self.engine.key_id:
            conn.close()
            _say("refresh channel: a session answered hello with something else than ok under this job's key")
            return False
        self.conn = conn
        self.stats.attaches += 1
        return True

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _request(self, header: dict, blobs: list[bytes], expect: str) -> tuple[dict, list[bytes]]:
        """Send one request and return its answer, resending it to the next session after a drop."""
        self._seq += 1
        frame = {**header, "seq": self._seq, "key_id": self.engine.key_id}
        sent_before = False
        while True:
            if self.conn is None:
                self._attach()
            if sent_before:
                self.stats.resent += 1
            sent_before = True
            try:
                sent = send_frame(self.conn, frame, blobs, timeout=self.timeout)
                self.stats.bytes_to_client += sent
                reply, back, n = recv_frame(self.conn, timeout=self.timeout, max_frame=answer_limit(sent))
            except ChannelClosed:  # the session went away before answering: the next one gets the same request
                self._drop()
                continue
            break
        if reply.get("op") == "error":
            raise ChannelError(f"the data owner refused: {ERROR_CODES.get(reply.get('code'), 'no reason given')}")
        if reply.get("seq") != self._seq:
            raise ChannelError(f"the data owner answered request {reply.get('seq')!r}, not {self._seq}")
        if reply.get("op") != expect:
            raise ChannelError(f"unexpected {reply.get('op')!r} on the refresh channel (expected {expect!r})")
        if reply.get("key_id") != self.engine.key_id:
            raise ChannelError("the data owner answered under another key")
        self.stats.bytes_to_server += n
        return reply, back

    def _trip(self, header: dict, state: dict, expect: str) -> tuple[dict, dict | None]:
        layout, blobs = encode_state(self.engine, state)
        t0 = time.perf_counter()
        reply, back = self._request({**header, "state": layout}, blobs, expect)
        self.stats.wait_seconds += time.perf_counter() - t0
        self.stats.round_trips += 1
        fresh = decode_state(self.engine, reply["state"], back) if reply.get("state") is not None else None
        return reply, fresh

    # ------------------------------------------------------------ hooks
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

    # ------------------------------------------------------------ end
    def close(self) -> None:
        """The job is done: 'done' to the attached session and to any waiting to attach (each may
        say 'bye' within a few seconds), then remove the socket."""
        try:
            if self.conn is not None:
                self._done(self.conn)
            while True:  # sessions queued meanwhile learn that the job ended, rather than see a reset
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    break
                if _peer_uid(conn) == os.getuid():
                    self._done(conn)
                conn.close()
        finally:
            self.abort()

    def _done(self, conn: socket.socket) -> None:
        try:
            send_frame(conn, {"op": "done", "seq": self._seq + 1}, timeout=_BYE_WAIT_S)
            recv_frame(conn, timeout=_BYE_WAIT_S, max_frame=MIN_ANSWER_LIMIT)
        except ChannelError:
            pass

    def abort(self) -> None:
        """Close without 'done' (the job failed): an attached session sees the channel end."""
        self._drop()
        self._cleanup()


# ---------------------------------------------------------------------- data owner side
class ChannelAnswerer:
    """The data owner's answers, transport-free: ``answer(header, blobs)`` takes one frame from the
    server and returns the one frame to send back.

    ``handler`` has ``refresh(state, step) -> state`` and ``evaluate(state, step, epoch, refresh)
    -> (state | None, stop)`` on deserialised ciphertexts of ``engine`` (the secret-key engine).
    A refusal is an ``error`` frame with a fixed code (ERROR_CODES); the local reason is then in
    ``failure`` (the exception to raise after sending the frame: a ChannelError, or the handler's
    own). The last answer is kept: the same request resent to this answerer (same seq, same
    bytes: its first answer was lost) gets the same answer without asking the handler twice.
    """

    def __init__(self, engine, handler, job_id: str) -> None:
        if not engine.has_secret_key:
            raise ChannelError("the data owner's end of the refresh channel needs the engine with the secret key")
        self.engine, self.handler, self.job_id = engine, handler, str(job_id)
        self.stats = ChannelStats()
        self.done = False
        self.failure: BaseException | None = None
        self._last: tuple[str, dict, list[bytes]] | None = None  # (request digest, reply, blobs)
        self.frames = 0  # frames answered (hello and done included)

    def answer(self, header: dict, blobs: list[bytes]) -> tuple[dict, list[bytes]]:
        """The reply frame ``(header, blobs)`` to one request frame: ``ok`` to a hello of this job, the refreshed
        state or a verdict to refresh/evaluate, ``bye`` to done, or an ``error`` frame with a fixed code (then
        ``failure`` holds the local reason). A resent request gets the same reply without a second decryption.
        Never raises for what the server sent; counts into ``stats``.
        """
        self.failure = None
        self.frames += 1
        op, seq = header.get("op"), header.get("seq")
        if op == "done":
            self.done = True
            return {"op": "bye", "seq": seq}, []
        key = self.engine.key_id
        if header.get("key_id") != key:
            return self._refuse(seq, "key_mismatch", f"the server sent {op!r} under key {header.get('key_id')}, "
                                f"the data owner's key is {key}")
        if op == "hello":
            if header.get("job_id") != self.job_id:
                return self._refuse(seq, "job_mismatch", f"the server runs job {header.get('job_id')}, "
                                    f"this session answers job {self.job_id}")
            return {"op": "ok", "key_id": key, "seq": seq}, []
        if op not in ("refresh", "evaluate"):
            return self._refuse(seq, "unknown_request", f"unknown request {op!r}")
        self.stats.bytes_to_client += frame_size(header, blobs)
        digest = _digest(header, blobs)  # seq alone would match another server run's request of that seq
        if self._last is not None and self._last[0] == digest:
            reply, out = self._last[1], self._last[2]
        else:
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
                layout, out = encode_state(self.engine, fresh) if fresh is not None else (None, [])
            except Exception as exc:
                # a fixed code only: the client's reason may hold numbers computed from decrypted values
                # (a span, a min, a max), and a malicious server chooses the state it sends
                self.failure = exc
                return {"op": "error", "code": "client_refused", "seq": seq}, []
            reply = {**reply, "key_id": key, "state": layout, "seq": seq}
            self.stats.client_seconds += time.perf_counter() - t0
            self._last = (digest, reply, out)
        self.stats.bytes_to_server += frame_size(reply, out)
        self.stats.round_trips += 1
        return reply, out

    def _refuse(self, seq, code: str, message: str) -> tuple[dict, list[bytes]]:
        self.failure = ChannelError(message)
        return {"op": "error", "code": code, "seq": seq}, []


def _digest(header: dict, blobs: list[bytes]) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for b in blobs:
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()


def serve_socket(path: str | os.PathLike, engine, handler, job_id: str, *, alive: Callable[[], bool] = lambda: True,
                 connect_timeout: float = DEFAULT_TIMEOUT_S, answerer: ChannelAnswerer | None = None) -> ChannelStats:
    """One data-owner session: connect to the server listening at ``path`` (retrying every 0.2 s
    while the socket is not there yet, or refuses, and ``alive()`` holds, up to
    ``connect_timeout``), answer its frames until 'done', return this session's stats.

    ChannelError if the server goes away (or ``alive()`` turns false) before 'done', or if this
    session refuses the server (another key or job); a handler's exception is raised after the
    server has been told ``client_refused``. ``answerer``: one to reuse across sessions (its cache
    answers a request resent after a drop without asking the handler twice)."""
    sock = _connect(pathlib.Path(path), alive, connect_timeout)
    ans = answerer if answerer is not None else ChannelAnswerer(engine, handler, job_id)
    ans.done = False
    try:
        while True:
            try:
                header, blobs, _ = recv_frame(sock, alive)
            except ChannelError as exc:
                raise ChannelError(f"the training server went away before the end of the job ({exc})") from None
            reply, out = ans.answer(header, blobs)
            try:
                send_frame(sock, reply, out)
            except ChannelError as exc:
                if ans.failure is None:
                    raise ChannelError(f"the training server went away before the end of the job ({exc})") from None
            if ans.failure is not None:
                raise ans.failure
            if ans.done:
                return ans.stats
    finally:
        sock.close()


def _connect(path: pathlib.Path, alive: Callable[[], bool], timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.fspath(path))
            break
        except (FileNotFoundError, ConnectionRefusedError):  # not listening yet (or a killed run's socket)
            sock.close()
            if not alive():
                raise ChannelError("the training server exited before it listened on its refresh channel") from None
            if time.monotonic() >= deadline:
                raise ChannelError(f"no server listens on the refresh channel {path} after {timeout:.0f} s") from None
            time.sleep(_POLL_S)
        except OSError as exc:
            sock.close()
            raise ChannelError(f"cannot connect to the refresh channel {path}: {exc}") from None
    if _peer_uid(sock) != os.getuid():  # never answer (decrypt for) another user's process
        sock.close()
        raise ChannelError(f"the refresh channel {path} belongs to another user: refusing to answer it")
    return sock
