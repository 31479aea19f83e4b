"""The service's job queue: accepted bundles wait here and run one at a time in a server process.

Each job is a directory ``WORKDIR/jobs/<id>/`` holding the bundle as uploaded, what the server
process writes (outputs.bin, server_stats.json, server_error.json, server.log) and the service's
own ``state.json``. Worker threads (``workers``, default 1: the machine has 2 cores and SEAL is
single-threaded per process) take jobs in order and run ``python -m hetrain.protocol.server_main JOBDIR
--progress`` — the same server as a local fit, in its own process, with public material only —
following its progress lines. On restart, jobs that were queued or running are queued again.
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
import subprocess
import sys
import threading
import time

from hetrain.protocol import files
from hetrain.protocol.server import PROGRESS_PREFIX, server_argv

log = logging.getLogger("hetrain.service")
STATE = "state.json"
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


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
    deleted: bool = False
    proc: subprocess.Popen | None = dataclasses.field(default=None, repr=False)

    def public(self) -> dict:
        """What GET /v1/jobs/{id} returns."""
        now = time.time()
        timings = {"queued_s": (self.started_at or now) - self.created_at}
        if self.started_at is not None:
            timings["run_s"] = (self.finished_at or now) - self.started_at
        if self.stats:
            timings.update({k: self.stats[k] for k in ("server_load_s", "server_train_s", "server_write_s") if k in self.stats})
        return {"id": self.id, "status": self.status, "backend": self.backend, "model": self.model,
                "progress": {"done": self.done, "total": self.total, "message": self.message},
                "timings": timings, "error": self.error, "stats": self.stats if self.status == DONE else None,
                "created_at": self.created_at}

    def save(self) -> None:
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("dir", "proc", "deleted")}
        files.atomic_write(self.dir / STATE, json.dumps(state))


class JobQueue:
    """Jobs by id, a FIFO of ids to run and ``workers`` threads that run them."""

    def __init__(self, workdir: str | os.PathLike, workers: int = 1, trainer_modules: tuple[str, ...] = ()) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.root = pathlib.Path(workdir)
        self.jobs_dir = self.root / "jobs"
        self.incoming_dir = self.root / "incoming"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.incoming_dir, ignore_errors=True)  # half uploads of a previous run
        self.incoming_dir.mkdir()
        self.trainer_modules = tuple(trainer_modules)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._work, name=f"hetrain-worker-{i}", daemon=True)
                         for i in range(workers)]
        self._recover()
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ used by the app
    def new_upload(self) -> tuple[str, pathlib.Path]:
        """A fresh random id and an empty directory to receive its bundle."""
        job_id = secrets.token_urlsafe(16)
        d = self.incoming_dir / job_id
        d.mkdir()
        return job_id, d

    def discard_upload(self, upload_dir: pathlib.Path) -> None:
        shutil.rmtree(upload_dir, ignore_errors=True)

    def submit(self, job_id: str, upload_dir: pathlib.Path, manifest: dict) -> Job:
        """Move a checked upload into place and queue it."""
        d = self.jobs_dir / job_id
        os.replace(upload_dir, d)
        job = Job(job_id, d, backend=manifest.get("backend"), model=manifest.get("model"))
        job.save()
        with self._lock:
            self._jobs[job_id] = job
        self._queue.put(job_id)
        log.info("job %s queued (%s, backend %s)", job_id, job.model, job.backend)  # sim says "sim-INSECURE"
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def delete(self, job_id: str) -> Job | None:
        """Forget a job: a queued one never runs, a running one is killed; its files are removed."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
            if job is None:
                return None
            job.deleted = True
            proc = job.proc
        if proc is not None and proc.poll() is None:
            proc.kill()  # the worker removes the directory once the process is gone
        else:
            shutil.rmtree(job.dir, ignore_errors=True)
        log.info("job %s deleted (was %s)", job_id, job.status)
        return job

    def counts(self) -> dict[str, int]:
        with self._lock:
            statuses = [j.status for j in self._jobs.values()]
        return {s: statuses.count(s) for s in (QUEUED, RUNNING, DONE, FAILED)}

    def close(self) -> None:
        """Stop the workers and kill running server processes (their jobs run again on restart)."""
        with self._lock:
            procs = [j.proc for j in self._jobs.values() if j.proc is not None]
        for _ in self._threads:
            self._queue.put(None)
        for p in procs:
            if p.poll() is None:
                p.kill()
        for t in self._threads:
            t.join(timeout=10)

    # ------------------------------------------------------------------ workers
    def _recover(self) -> None:
        for state_path in sorted(self.jobs_dir.glob(f"*/{STATE}")):
            try:
                state = json.loads(state_path.read_text())
                job = Job(dir=state_path.parent, **state)
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring job directory %s: unreadable state (%s)", state_path.parent, exc)
                continue
            if job.status in (QUEUED, RUNNING):
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
            except Exception as exc:  # keep the worker alive whatever happens to one job
                log.exception("job %s: worker error", job_id)
                job.status, job.error, job.finished_at = FAILED, f"service error: {exc}", time.time()
            if job.deleted:
                shutil.rmtree(job.dir, ignore_errors=True)
                continue
            try:
                job.save()
            except OSError as exc:
                log.error("job %s: cannot save its state: %s", job_id, exc)

    def _run(self, job: Job) -> None:
        env = dict(os.environ)
        # the server process imports what this one can (editable installs, operator's trainer modules)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        cmd = server_argv(job.dir, trainer_modules=self.trainer_modules)
        with self._lock:
            if job.deleted:
                return
            job.status, job.started_at = RUNNING, time.time()
            with open(job.dir / "server.log", "wb") as log_file:
                job.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL,
                                            env=env, text=True, bufsize=1)
        job.save()
        log.info("job %s running (server pid %d)", job.id, job.proc.pid)
        for line in job.proc.stdout:
            if line.startswith(PROGRESS_PREFIX):
                done, total, *msg = line[len(PROGRESS_PREFIX):].strip().split(" ", 2) + ["", ""]
                if done.isdigit() and total.isdigit():
                    job.done, job.total, job.message = int(done), int(total), msg[0].strip()
        rc = job.proc.wait()
        job.proc = None
        job.finished_at = time.time()
        if job.deleted:
            return
        if rc == 0:
            job.stats = json.loads((job.dir / files.SERVER_STATS).read_text())
            job.status = DONE
        else:
            job.status, job.error = FAILED, _server_error(job.dir, rc)
        log.info("job %s %s in %.1f s", job.id, job.status, job.finished_at - job.started_at)


def _server_error(jobdir: pathlib.Path, rc: int) -> str:
    """The server's own message (server_error.json), else the tail of its log."""
    try:
        err = json.loads((jobdir / files.SERVER_ERROR).read_text())
        return err["message"] if err.get("user_error") else f"{err['type']}: {err['message']}"
    except (OSError, ValueError, KeyError):
        tail = (jobdir / "server.log").read_text(errors="replace")[-2000:] if (jobdir / "server.log").exists() else ""
        return f"server process exited with status {rc}: {tail}".strip()
