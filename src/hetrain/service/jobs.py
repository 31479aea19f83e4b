"""The service's job queue: accepted bundles wait here and run one at a time in a server process.

Each job is a directory ``WORKDIR/jobs/<hash of its id>/`` (auth.dir_name; WORKDIR and every
directory below it mode 0700) holding the bundle as uploaded, what the server
process writes (outputs.bin, server_stats.json, server_error.json, server.log) and the service's
own ``state.json`` (the id and only the SHA-256 of the job's token). Log lines name a job by its
tag (auth.tag), never by its id. Worker threads (``workers``, default 1: the machine has 2 cores and
SEAL is single-threaded per process) take jobs in order and run ``python -m hetrain.protocol.server_main JOBDIR
--progress`` — the same server as a local fit, in its own process, with public material only —
following its progress lines (protocol/runner.py starts, follows and stops it). On restart, jobs
that were queued or running are queued again (a running one resumes from its checkpoint).

Limits (the service's options): each server process runs under ``job_memory_bytes`` (RLIMIT_DATA)
and ``job_time_limit`` seconds of wall time (runner.ServerProcess), and a job that hits one fails
saying which. Finished jobs (done or failed) expire ``job_ttl_s`` seconds after they finished: a
janitor thread removes their directories (status 410 from then on, 404 after a later restart),
including those a restarted service finds on disk. ``disk_quota_bytes`` bounds the bytes of all
job directories and uploads in progress together (``DiskQuota``).

A job whose job.json says ``"refresh": "client"`` needs the data owner to answer its refresh
requests: its server process listens on a Unix socket (``--channel``, in or near the job
directory) and a relay thread (relay.py) passes each request to the data owner's HTTP session
and its answer back (app.py: ``/v1/jobs/{id}/channel``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import queue
import secrets
import shutil
import threading
import time

from hetrain.protocol import files, refresh_channel
from hetrain.protocol.errors import ServerError
from hetrain.protocol.runner import ServerProcess

from .auth import dir_name, tag
from .relay import ChannelRelay

log = logging.getLogger("hetrain.service")
STATE = "state.json"
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
SERVER_PROCESS_FAILED = "the server process failed (see the service log)"


@dataclasses.dataclass
class Job:
    id: str
    dir: pathlib.Path
    status: str = QUEUED
    backend: str | None = None
    model: str | None = None
    created_at: float = dataclasses.field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    done: int = 0
    total: int | None = None
    message: str = ""
    error: str | None = None
    stats: dict | None = None
    refresh: str = "none"          # the job's refresh mode (job.json); "client": it has a channel
    resume: bool = False           # it was running when the service stopped: continue from its checkpoint
    channel: dict | None = None    # the relay's counts (relay.RelayStats), once it ran
    token_sha256: str | None = None  # SHA-256 of the job's bearer token (auth.py); never the token
    task: str = "train"            # "inference": a query bundle (service/inference.py), scored, not trained
    parent: str | None = None      # inference, case (a): the id of the training job whose encrypted model scores
    spec_id: str | None = None     # inference, case (b): the spec id of the service's plaintext model
    deleted: bool = False
    proc: ServerProcess | None = dataclasses.field(default=None, repr=False)
    relay: ChannelRelay | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.refresh == "client" and self.relay is None:
            self.relay = ChannelRelay()  # exists while queued: a data owner may attach before the run

    def public(self) -> dict:
        """What GET /v1/jobs/{id} returns."""
        now = time.time()
        timings = {"queued_s": (self.started_at or now) - self.created_at}
        if self.started_at is not None:
            timings["run_s"] = (self.finished_at or now) - self.started_at
        if self.stats:
            timings.update({k: self.stats[k] for k in ("server_load_s", "server_train_s", "server_write_s") if k in self.stats})
        channel = self.relay.stats.as_dict() if self.relay is not None else self.channel
        return {"id": self.id, "status": self.status, "backend": self.backend, "model": self.model,
                "progress": {"done": self.done, "total": self.total, "message": self.message},
                "timings": timings, "error": self.error, "stats": self.stats if self.status == DONE else None,
                "created_at": self.created_at, "refresh": self.refresh, "channel": channel, "task": self.task}

    def save(self) -> None:
        if self.relay is not None:
            self.channel = self.relay.stats.as_dict()
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                 if f.name not in ("dir", "proc", "relay", "deleted")}
        files.atomic_write(self.dir / STATE, json.dumps(state))


class QuotaExceeded(Exception):
    """An upload would take the job directories over the service's disk quota (HTTP 507)."""


class DiskQuota:
    """Bytes of all job directories plus uploads in progress, against ``limit`` (None: no limit).

    The job directories are measured when an upload starts (server processes write outputs and
    checkpoints there meanwhile); each upload in progress counts the bytes it received so far."""

    def __init__(self, root: pathlib.Path, limit: int | None) -> None:
        self.root, self.limit = root, limit
        self._lock = threading.Lock()
        self._inflight: dict[str, int] = {}
        self._stored = 0

    def usage(self) -> int:
        return _tree_bytes(self.root / "jobs") + sum(self._inflight.values())

    def begin(self, upload_id: str, declared: int | None) -> None:
        """Start counting an upload; QuotaExceeded if its declared size (Content-Length) cannot fit."""
        stored = _tree_bytes(self.root / "jobs") if self.limit is not None else 0
        with self._lock:
            self._stored = stored
            self._inflight[upload_id] = 0
            if self.limit is not None and declared is not None:
                self._check(upload_id, declared)

    def grow(self, upload_id: str, n: int) -> None:
        """``n`` more bytes of an upload arrived; QuotaExceeded once over the quota."""
        with self._lock:
            if upload_id in self._inflight:
                self._inflight[upload_id] += n
                if self.limit is not None:
                    self._check(upload_id, self._inflight[upload_id])

    def end(self, upload_id: str) -> None:
        with self._lock:
            self._inflight.pop(upload_id, None)

    def _check(self, upload_id: str, size: int) -> None:
        others = sum(v for k, v in self._inflight.items() if k != upload_id)
        if self._stored + others + size > self.limit:
            raise QuotaExceeded(f"the service's disk quota of {self.limit / 1024 ** 3:g} GB for all jobs would be "
                                f"exceeded ({self._stored + others} bytes in use, this upload {size} bytes): "
                                "try again later")


class JobQueue:
    """Jobs by id, a FIFO of ids to run and ``workers`` threads that run them."""

    def __init__(self, workdir: str | os.PathLike, workers: int = 1, trainer_modules: tuple[str, ...] = (), *,
                 job_memory_bytes: int | None = None, job_time_limit: float | None = None,
                 job_ttl_s: float | None = None, disk_quota_bytes: int | None = None, models=None,
                 noise_std: float = 0.0, job_workers: int | None = None, ray_address: str | None = None) -> None:
        """``models``: service/inference.ModelRegistry (case (b) inference jobs score with them);
        ``noise_std``: the Gaussian noise those jobs add to every encrypted score (inference.infer);
        ``workers``: jobs trained at the same time; ``job_workers``: worker processes of each job's
        server (``--workers``; default: this machine's cores shared among the concurrent jobs);
        ``ray_address``: each job's server runs its workers as actors of this Ray cluster
        (``--executor ray --ray-address``; then give ``job_workers`` from the cluster's CPUs)."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if job_workers is not None and job_workers < 1:
            raise ValueError("job_workers must be at least 1")
        self.job_workers = job_workers if job_workers is not None else max(1, (os.cpu_count() or 1) // workers)
        self.ray_address = ray_address
        self.job_memory_bytes, self.job_time_limit, self.job_ttl_s = job_memory_bytes, job_time_limit, job_ttl_s
        self.root = pathlib.Path(workdir)
        self.jobs_dir = self.root / "jobs"
        self.incoming_dir = self.root / "incoming"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.incoming_dir, ignore_errors=True)  # half uploads of a previous run
        self.incoming_dir.mkdir()
        for d in (self.root, self.jobs_dir, self.incoming_dir):  # nobody else may list job directories
            os.chmod(d, 0o700)
        self.trainer_modules = tuple(trainer_modules)
        self.models, self.noise_std = models, float(noise_std)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._expired: set[str] = set()
        self.quota = DiskQuota(self.root, disk_quota_bytes)
        self._threads = [threading.Thread(target=self._work, name=f"hetrain-worker-{i}", daemon=True)
                         for i in range(workers)]
        self._recover()
        self.expire()  # what expired while the service was down goes before anything runs
        for t in self._threads:
            t.start()
        if job_ttl_s is not None:
            self._janitor = threading.Thread(target=self._sweep, name="hetrain-expiry", daemon=True)
            self._janitor.start()

    # ------------------------------------------------------------------ used by the app
    def new_upload(self) -> tuple[str, pathlib.Path]:
        """A fresh random id and an empty directory to receive its bundle."""
        job_id = secrets.token_urlsafe(16)
        d = self.incoming_dir / dir_name(job_id)
        d.mkdir(mode=0o700)
        return job_id, d

    def discard_upload(self, upload_dir: pathlib.Path) -> None:
        shutil.rmtree(upload_dir, ignore_errors=True)

    def submit(self, job_id: str, upload_dir: pathlib.Path, manifest: dict, token_sha256: str | None = None, *,
               task: str = "train", parent: str | None = None, spec_id: str | None = None) -> Job:
        """Move a checked upload into place and queue it (``token_sha256``: auth.digest of its token;
        ``task``, ``parent``, ``spec_id``: an inference job's, see Job)."""
        d = self.jobs_dir / dir_name(job_id)
        os.replace(upload_dir, d)
        os.chmod(d, 0o700)
        job = Job(job_id, d, backend=manifest.get("backend"), model=manifest.get("model"), refresh=_refresh_mode(d),
                  token_sha256=token_sha256, task=task, parent=parent, spec_id=spec_id)
        job.save()
        with self._lock:
            self._jobs[job_id] = job
        self._queue.put(job_id)
        log.info("job %s queued (%s, backend %s)", tag(job_id), job.model, job.backend)  # sim says "sim-INSECURE"
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def expired(self, job_id: str) -> bool:
        """The job finished and was removed after the TTL (while this service ran)."""
        with self._lock:
            return job_id in self._expired

    def expire(self, now: float | None = None) -> list[str]:
        """Remove the finished jobs older than the TTL (and job directories without a readable state
        whose files are older than it); returns the ids removed."""
        if self.job_ttl_s is None:
            return []
        now = time.time() if now is None else now
        with self._lock:
            old = [j for j in self._jobs.values()
                   if j.status in (DONE, FAILED) and j.finished_at is not None and now - j.finished_at >= self.job_ttl_s]
            for j in old:
                del self._jobs[j.id]
                self._expired.add(j.id)
            # directories are named by a hash of the id (auth.dir_name), not by the id
            known = {j.dir.name for j in self._jobs.values()} | {j.dir.name for j in old}
        for j in old:
            shutil.rmtree(j.dir, ignore_errors=True)
        if old:
            log.info("%d finished job(s) expired after %g s", len(old), self.job_ttl_s)
        for d in self.jobs_dir.iterdir():  # left behind: no state, or one that cannot be read
            try:
                if d.name not in known and now - _newest_mtime(d) >= self.job_ttl_s:
                    log.warning("removing %s: no readable job state, older than the TTL", d)
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                continue
        return [j.id for j in old]

    def _sweep(self) -> None:
        interval = max(0.05, min(60.0, self.job_ttl_s / 4))
        while not self._closing.wait(interval):
            try:
                self.expire()
            except Exception:  # keep sweeping whatever one pass met
                log.exception("expiry pass failed")

    def delete(self, job_id: str) -> Job | None:
        """Forget a job: a queued one never runs, a running one is killed; its files are removed."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
            if job is None:
                return None
            job.deleted = True
            proc = job.proc
        if job.relay is not None:
            job.relay.finish()
        if proc is not None and proc.alive():
            proc.kill()  # the worker removes the directory once the process is gone
        elif job.status != RUNNING:
            shutil.rmtree(job.dir, ignore_errors=True)
        log.info("job %s deleted (was %s)", tag(job_id), job.status)
        return job

    def counts(self) -> dict[str, int]:
        with self._lock:
            statuses = [j.status for j in self._jobs.values()]
        return {s: statuses.count(s) for s in (QUEUED, RUNNING, DONE, FAILED)}

    def close(self) -> None:
        """Stop the workers and kill running server processes (their jobs run again on restart)."""
        with self._lock:
            procs = [j.proc for j in self._jobs.values() if j.proc is not None]
            relays = [j.relay for j in self._jobs.values() if j.relay is not None]
        self._closing.set()
        for _ in self._threads:
            self._queue.put(None)
        for r in relays:
            r.finish()
        for p in procs:
            if p.alive():
                p.kill()
        for t in self._threads:
            t.join(timeout=10)

    # ------------------------------------------------------------------ workers
    def _recover(self) -> None:
        for state_path in sorted(self.jobs_dir.glob(f"*/{STATE}")):
            try:
                state = json.loads(state_path.read_text())
                if "refresh" not in state:  # written before the service knew refresh modes
                    state["refresh"] = _refresh_mode(state_path.parent)
                job = Job(dir=state_path.parent, **state)
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring job directory %s: unreadable state (%s)", state_path.parent, exc)
                continue
            if job.status in (QUEUED, RUNNING):
                job.resume = job.resume or job.status == RUNNING
                job.status, job.started_at, job.done = QUEUED, None, 0
                self._queue.put(job.id)
            self._jobs[job.id] = job

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None:
            job = self.get(job_id)
            if job is None:  # deleted while queued
                continue
            try:
                self._run(job)
            except Exception:  # keep the worker alive whatever happens to one job
                log.exception("job %s: worker error", tag(job_id))
                job.status, job.finished_at = FAILED, time.time()
                job.error = "the service failed to run this job (see the service log)"
            finally:
                if job.relay is not None:
                    job.relay.finish()  # pollers get 410 from now on
            if job.deleted:
                shutil.rmtree(job.dir, ignore_errors=True)
                continue
            try:
                job.save()
            except OSError as exc:
                log.error("job %s: cannot save its state: %s", tag(job_id), exc)

    def _inference_argv(self, job: Job) -> list[str] | str:
        """The inference server's command for ``job``, or why it cannot run (a message for its owner)."""
        from hetrain.protocol.inference import infer_argv

        if job.parent is not None:
            parent = self.get(job.parent)
            train_dir = self.jobs_dir / dir_name(job.parent)
            if parent is None or parent.status != DONE or not (train_dir / files.OUTPUTS).is_file():
                return "the training job whose encrypted model scores these queries is gone (deleted or expired)"
            return infer_argv(job.dir, job=train_dir)
        path = self.models.path(job.spec_id) if self.models else None
        if path is None:
            return f"this service no longer scores with model spec {job.spec_id}"
        return infer_argv(job.dir, model=path, noise_std=self.noise_std)

    def _run(self, job: Job) -> None:
        channel = refresh_channel.channel_location(job.dir) if job.relay is not None else None
        argv = self._inference_argv(job) if job.task == "inference" else None
        if isinstance(argv, str):
            job.status, job.started_at = FAILED, time.time()
            job.finished_at, job.error = job.started_at, argv
            log.warning("job %s failed: %s", tag(job.id), argv)
            return
        try:
            with self._lock:
                if job.deleted:
                    return
                job.status, job.started_at = RUNNING, time.time()
                job.proc = ServerProcess.start(job.dir, trainer_modules=self.trainer_modules, channel=channel,
                                               resume=job.resume, memory_limit=self.job_memory_bytes,
                                               time_limit=self.job_time_limit, argv=argv, workers=self.job_workers,
                                               executor="ray" if self.ray_address and argv is None else None,
                                               ray_address=self.ray_address if argv is None else None)
            job.save()
            log.info("job %s running (server pid %d%s)", tag(job.id), job.proc.pid, ", refresh by the data owner" if channel else "")
            relay_thread = None
            if channel is not None:
                relay_thread = threading.Thread(target=job.relay.run, args=(channel, job.proc.alive), daemon=True,
                                                name=f"hetrain-relay-{tag(job.id)}")
                relay_thread.start()

            def progress(done: int, total: int, message: str) -> None:
                job.done, job.total, job.message = done, total, message

            job.proc.follow(progress)
            rc = job.proc.wait()
            if relay_thread is not None:  # it ends by itself with the process; finished (410) once the status is set
                relay_thread.join(timeout=10)
            if job.deleted:
                job.finished_at = time.time()
                return
            if rc != 0 and self._closing.is_set():  # killed by close(): saved as running, it runs again on restart
                log.info("job %s stopped with the service; it resumes on restart", tag(job.id))
                return
            job.finished_at = time.time()
            try:
                job.stats = job.proc.result(traceback=False)
                job.status = DONE
            except ServerError as exc:  # the client reads job.error: no traceback, log tail or path
                job.status, job.error = FAILED, _public_error(job.dir, exc)
                log.warning("job %s failed: %s", tag(job.id), getattr(exc, "detail", None) or exc)
            job.resume = False
        finally:
            if job.proc is not None:
                job.proc.close()
            job.proc = None
            if channel is not None:
                _remove_channel(job.dir, channel)
        if job.finished_at is not None:
            log.info("job %s %s in %.1f s", tag(job.id), job.status, job.finished_at - job.started_at)


def _public_error(jobdir: pathlib.Path, exc: ServerError) -> str:
    """What a client may read of a failed job: the server's own message for a user error (bad job,
    refused state...), else SERVER_PROCESS_FAILED (the detail, which may hold a traceback, the log's
    tail or paths, goes to the service log only). An exception may carry ``public_message`` (e.g. a
    resource limit that was hit), used as it is."""
    message = None
    try:
        err = json.loads((jobdir / files.SERVER_ERROR).read_text())
        if isinstance(err, dict) and err.get("user_error") is True and isinstance(err.get("message"), str):
            message = err["message"]
    except (OSError, ValueError):
        pass
    if message is None:
        public = getattr(exc, "public_message", None)
        message = public if isinstance(public, str) else SERVER_PROCESS_FAILED
    for d in {str(jobdir.resolve()), str(jobdir)}:  # a user error may name a file of the job: not where it lives
        message = message.replace(d + os.sep, "").replace(d, "the job")
    for d in {str(jobdir.parent.resolve()), str(jobdir.parent)}:  # another job's (an inference job's model)
        message = message.replace(d + os.sep, "")
    return message


def _tree_bytes(root: pathlib.Path) -> int:
    """Bytes of the regular files under ``root`` (files vanishing meanwhile count 0)."""
    total = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                pass
    return total


def _newest_mtime(d: pathlib.Path) -> float:
    newest = d.lstat().st_mtime
    for p in d.iterdir():
        try:
            newest = max(newest, p.lstat().st_mtime)
        except OSError:
            pass
    return newest


def _refresh_mode(jobdir: pathlib.Path) -> str:
    """The job's refresh mode from its job.json ("none" if it says nothing or is unreadable: the
    server process refuses such a job with its own message)."""
    try:
        mode = json.loads((jobdir / files.JOB).read_text()).get("refresh", "none")
    except (OSError, ValueError, AttributeError):
        return "none"
    return mode if isinstance(mode, str) else "none"


def _remove_channel(jobdir: pathlib.Path, path: pathlib.Path) -> None:
    """After the server process ended: what a killed one could not remove (its socket, and the
    private temporary directory that channel_location made for a long job directory)."""
    try:
        path.unlink(missing_ok=True)
        if path.parent != jobdir.resolve():
            (jobdir / refresh_channel.CHANNEL_RECORD).unlink(missing_ok=True)
            path.parent.rmdir()
    except OSError:
        pass
