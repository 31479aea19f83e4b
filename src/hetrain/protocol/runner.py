"""Starting, following and stopping the server process: the one place that does it.

    proc = ServerProcess.start(jobdir, channel=sock_path)   # python -m hetrain.protocol.server_main JOBDIR ...
    proc.follow(lambda done, total, message: ...)           # reads its progress events to the end
    rc = proc.wait()
    stats = proc.result()                                   # server_stats.json, or ServerFailed with its message

    stats = run_server(jobdir, progress=True, during=answer_channel)   # all of the above, with a bar

Used by the local pipeline (the client's own server process) and by the HTTP service (one per
job, under the service's limits: ``memory_limit`` bytes of data segment (RLIMIT_DATA) and
``time_limit`` seconds of wall time, after which the process is stopped; a failure from either
says so in ``result()``). Every server process runs in a session (process group) of its own and,
on Linux, is killed when the process that started it dies (PR_SET_PDEATHSIG), even by SIGKILL. The process gets public material only (the job directory); its stderr goes to
JOBDIR/server.log, its stdout carries its progress events (JSON lines: protocol/events.py,
whose ``parse_progress`` reads them here). Its own explanation of a failure is
JOBDIR/server_error.json (else the log's tail): ``result()`` raises it as ``ServerFailed``.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import resource
import signal
import subprocess
import sys
import threading
from typing import Callable

from hetrain._proc import die_with_parent

from . import files
from .errors import ServerError
from .refresh_channel import ChannelError
from .events import parse_progress
from .server import server_argv

log = logging.getLogger("hetrain.runner")
LOG_NAME = "server.log"
STOP_GRACE_S = 10.0      # SIGTERM, then this long before SIGKILL
CHANNEL_GRACE_S = 10.0   # after the channel broke, how long the server gets to exit with its own error
LOG_TAIL_CHARS = 2000

OnProgress = Callable[[int, int, str], None]
GIB = 1024 ** 3


def memory_limit_message(limit: int) -> str:
    """The one line reported when the server exceeded ``limit`` bytes of memory (shown in GB)."""
    return f"the job exceeded the service's memory limit of {limit / GIB:.3g} GB"


def time_limit_message(limit: float) -> str:
    """The one line reported when the server ran past ``limit`` seconds and was stopped."""
    return f"the job exceeded the time limit of {limit:g} s and was stopped"


def _child_setup(memory_limit: int | None, parent: int):
    """What the forked child runs before exec: its memory limit, and death with its parent."""
    def setup() -> None:
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))
        die_with_parent(parent)
    return setup


class ServerFailed(ServerError):
    """The server process failed. ``detail``: its own message (server_error.json) or its log's tail,
    without the "server failed: " prefix; ``rc``: its exit status."""

    def __init__(self, message: str, detail: str, rc: int | None) -> None:
        super().__init__(message)
        self.detail, self.rc = detail, rc


def child_env(extra: dict | None = None) -> dict:
    """The server's environment: ours, with PYTHONPATH set so that it imports what this process can
    (editable installs, test modules, an operator's trainer modules), plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    env.update(extra or {})
    return env


class ServerProcess:
    """One server process on one job directory, started by ``ServerProcess.start``."""

    def __init__(self, jobdir: pathlib.Path, popen: subprocess.Popen, log_path: pathlib.Path, *,
                 memory_limit: int | None = None, time_limit: float | None = None) -> None:
        self.jobdir, self.popen, self.log_path = jobdir, popen, log_path
        self.done, self.total, self.message = 0, None, ""  # the last progress line
        self._reader: threading.Thread | None = None
        self.memory_limit, self.time_limit = memory_limit, time_limit
        self.timed_out = False  # stopped by the time limit
        self.signalled = False  # we stopped or killed it (a cancelled job, the service stopping)
        self._timer: threading.Timer | None = None
        if time_limit is not None:
            self._timer = threading.Timer(time_limit, self._time_is_up)
            self._timer.daemon = True
            self._timer.start()

    @classmethod
    def start(cls, jobdir, *, trainer_modules=(), channel=None, channel_timeout: float | None = None,
              resume: bool = False, progress: bool = True, env: dict | None = None,
              memory_limit: int | None = None, time_limit: float | None = None,
              argv: list[str] | None = None, workers: int | None = None, executor: str | None = None,
              ray_address: str | None = None) -> "ServerProcess":
        """Start ``python -m hetrain.protocol.server_main JOBDIR`` (command from server.server_argv).

        ``channel``: the refresh channel's socket path (``channel_timeout``: how long the server waits
        for the data owner); ``resume``: continue from the job's checkpoint; ``progress``: ask for
        progress lines; ``env``: extra environment variables; ``memory_limit``: bytes of data segment
        (RLIMIT_DATA: heap and anonymous mappings) the process may use; ``time_limit``: seconds of
        wall time, after which it is stopped (``stop``); ``argv``: another server command on the same
        directory (the inference server, inference.infer_argv), run under the same limits; ``workers``:
        the server's worker processes (None: its default, every core); ``executor``, ``ray_address``:
        where they run (server_argv: processes, or actors of a Ray cluster).
        Raises ValueError for a non-positive ``memory_limit`` or ``time_limit``.
        """
        if memory_limit is not None and memory_limit <= 0:
            raise ValueError("memory_limit must be positive")
        if time_limit is not None and time_limit <= 0:
            raise ValueError("time_limit must be positive")
        jobdir = pathlib.Path(jobdir)
        cmd = list(argv) if argv is not None else server_argv(
            jobdir, progress=progress, trainer_modules=tuple(trainer_modules), channel=channel,
            channel_timeout=channel_timeout, resume=resume, workers=workers,
            **{k: v for k, v in (("executor", executor), ("ray_address", ray_address)) if v is not None})
        log_path = jobdir / LOG_NAME
        for stale in (files.SERVER_ERROR, files.SERVER_STATS):  # a previous run's must not be read as this one's
            (jobdir / stale).unlink(missing_ok=True)
        with open(log_path, "wb") as log_file:
            popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL,
                                     env=child_env(env), text=True, bufsize=1, start_new_session=True,
                                     preexec_fn=_child_setup(memory_limit, os.getpid()))
        return cls(jobdir, popen, log_path, memory_limit=memory_limit, time_limit=time_limit)

    def _time_is_up(self) -> None:
        if self.popen.poll() is None:
            self.timed_out = True
            log.info("server process %d: time limit of %g s reached, stopping it", self.pid, self.time_limit)
            self.stop()

    def _signal_group(self, sig: int) -> None:
        """``sig`` to the process's own group (it leads a session of its own), so that nothing it
        started outlives it; to the process alone if the group is gone."""
        self.signalled = True
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    @property
    def pid(self) -> int:
        """Process id of the server child."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the server child is still running."""
        return self.popen.poll() is None

    def follow(self, on_progress: OnProgress | None = None) -> None:
        """Read the server's output to its end (the process exited or closed stdout), recording the
        last progress line and calling ``on_progress(done, total, message)`` for each. If the
        callback fails it is not called again, but reading goes on: a server blocked on a full
        stdout pipe would never exit."""
        for line in self.popen.stdout:
            p = parse_progress(line)
            if p is None:
                continue
            self.done, self.total, self.message = p
            if on_progress is not None:
                try:
                    on_progress(*p)
                except Exception as exc:  # e.g. a progress bar whose terminal is gone
                    log.debug("progress callback failed (%s): no more progress calls", exc)
                    on_progress = None

    def follow_in_thread(self, on_progress: OnProgress | None = None) -> threading.Thread:
        """``follow`` in a daemon thread (joined by ``wait``)."""
        self._reader = threading.Thread(target=self.follow, args=(on_progress,), daemon=True,
                                        name=f"hetrain-server-{self.pid}-progress")
        self._reader.start()
        return self._reader

    def wait(self, timeout: float | None = None) -> int:
        """The exit status (subprocess.TimeoutExpired after ``timeout``); joins a follow thread."""
        rc = self.popen.wait(timeout)
        if self._timer is not None:
            self._timer.cancel()
        if self._reader is not None:
            self._reader.join()
        return rc

    def stop(self, grace: float = STOP_GRACE_S) -> int:
        """End the process politely (SIGTERM), then SIGKILL after ``grace`` seconds; its status."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int:
        """SIGKILL now (e.g. a cancelled job); its status."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGKILL)
        return self.popen.wait()

    def close(self) -> None:
        """Stop the process if it still runs and release its pipe."""
        if self._timer is not None:
            self._timer.cancel()
        self.stop()
        if self._reader is not None:
            self._reader.join(timeout=STOP_GRACE_S)
        if self.popen.stdout is not None and (self._reader is None or not self._reader.is_alive()):
            self.popen.stdout.close()

    # ------------------------------------------------------------------ outcome
    def error_detail(self, rc: int | None = None, *, traceback: bool = True) -> str:
        """Why the process failed: its own message (server_error.json; with the traceback of an
        unexpected error when ``traceback``), else its exit status and the tail of its log."""
        rc = self.popen.returncode if rc is None else rc
        limit = self.limit_exceeded(rc)
        if limit is not None:
            return limit
        try:
            err = json.loads((self.jobdir / files.SERVER_ERROR).read_text())
            if err.get("user_error"):
                return str(err["message"])
            tb = f"\n{err.get('traceback') or ''}" if traceback else ""
            return f"{err['type']}: {err['message']}{tb}"
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        try:
            tail = self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            tail = ""
        return f"server process exited with status {rc}:\n{tail}".rstrip()

    def limit_exceeded(self, rc: int | None = None) -> str | None:
        """The message for a process ended by one of its limits (None otherwise): stopped at its time
        limit; or, under a memory limit, out of memory (its own MemoryError report, a C++ bad_alloc in
        its log, or killed by a signal without a word: SEAL aborts when an allocation fails)."""
        rc = self.popen.returncode if rc is None else rc
        if rc in (None, 0):
            return None
        if self.timed_out:
            return time_limit_message(self.time_limit)
        if self.memory_limit is None:
            return None
        try:
            err = json.loads((self.jobdir / files.SERVER_ERROR).read_text())
            if isinstance(err, dict) and (err.get("type") == "MemoryError" or err.get("memory_limit")):
                return memory_limit_message(self.memory_limit)
            if isinstance(err, dict):
                return None  # the server explained its failure itself
        except (OSError, ValueError):
            pass
        try:
            tail = self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            tail = ""
        crashed = rc < 0 and not self.signalled  # SIGABRT (bad_alloc unhandled), SIGSEGV, the kernel's SIGKILL
        if crashed or any(s in tail for s in ("bad_alloc", "MemoryError", "Cannot allocate memory", "emory allocation")):
            return memory_limit_message(self.memory_limit)
        return None

    def result(self, *, during: str = "", traceback: bool = True) -> dict:
        """After ``wait``: the server's stats (JOBDIR/server_stats.json), or ``ServerFailed`` with
        the server's own message. ``during``: what went wrong on our side meanwhile (e.g. "refresh
        channel: ..."), named in the message when the server left no message of its own.
        Raises ServerFailed (with the exit status), RuntimeError when called before the process exited.
        """
        rc = self.popen.returncode
        if rc is None:
            raise RuntimeError("ServerProcess.result() before the process exited: call wait() first")
        if rc != 0:
            detail = self.error_detail(rc, traceback=traceback)
            if self.limit_exceeded(rc) is not None:
                exc = ServerFailed(f"server failed: {detail}", detail, rc)
                exc.public_message = detail  # the service may show it: it says which limit, nothing more
                raise exc
            if (self.jobdir / files.SERVER_ERROR).exists():
                raise ServerFailed(f"server failed: {detail}", detail, rc)
            if during:
                detail = detail.replace(f"status {rc}:", f"status {rc} during training ({during}):", 1)
            raise ServerFailed(detail, detail, rc)
        try:
            return json.loads((self.jobdir / files.SERVER_STATS).read_text())
        except (OSError, ValueError) as exc:
            detail = f"the server exited cleanly but its stats are unreadable ({exc})"
            raise ServerFailed(f"server failed: {detail}", detail, rc) from None


def run_server(jobdir, *, progress: bool, mem=None, on_progress: OnProgress | None = None, env: dict | None = None,
               trainer_modules=(), channel=None, channel_timeout: float | None = None, resume: bool = False,
               during: Callable[[ServerProcess], object] | None = None, workers: int | None = None,
               executor: str | None = None, ray_address: str | None = None) -> dict:
    """Run the server process on ``jobdir`` to its end; returns its stats or raises ServerError
    with its own message.

    ``progress``: draw a "server train" bar (tqdm, stderr); ``mem``: a monitor.PeakRSS that
    watches the process as "server"; ``on_progress(done, total, message)``: called on each
    progress line; ``during(proc)``: runs in this thread while the process runs (e.g. answering
    the refresh channel). If ``during`` raises ChannelError the server gets CHANNEL_GRACE_S to
    exit with its own error, which is raised (naming the channel error when it has none);
    any other exception stops the server and is raised as it is.
    """
    from tqdm import tqdm

    jobdir = pathlib.Path(jobdir)
    with tqdm(desc="server train", unit="it", disable=not progress) as bar:
        drawing = [progress]

        def show(done: int, total: int, message: str) -> None:
            bar.total, bar.n = total, done
            if message:
                bar.set_postfix_str(message, refresh=False)
            if drawing[0]:
                try:
                    bar.refresh()
                except OSError:  # our own stderr is gone (a closed pipe): stop drawing, keep reading
                    drawing[0] = False
            if on_progress is not None:
                on_progress(done, total, message)

        proc = ServerProcess.start(jobdir, trainer_modules=trainer_modules, channel=channel,
                                   channel_timeout=channel_timeout, resume=resume, env=env, workers=workers,
                                   executor=executor, ray_address=ray_address)
        channel_error = None
        try:
            if mem is not None:
                mem.watch("server", proc.pid)
            proc.follow_in_thread(show)
            if during is not None:
                try:
                    during(proc)
                except ChannelError as exc:  # the server died or broke the channel: its own error says why
                    channel_error = exc
                    try:
                        proc.wait(CHANNEL_GRACE_S)
                    except subprocess.TimeoutExpired:
                        proc.stop()
            proc.wait()
        except BaseException:  # our side failed (a client check, Ctrl-C): the server must not outlive us
            proc.close()
            raise
        finally:
            if proc.popen.stdout is not None and not proc.alive():
                proc.close()
    if channel_error is not None and proc.popen.returncode == 0:
        raise ServerError(f"the refresh channel failed although the server exited cleanly: {channel_error}")
    return proc.result(during=f"refresh channel: {channel_error}" if channel_error else "")
