"""The HTTP training service (FastAPI): job bundles in, encrypted models out.

The service holds PUBLIC MATERIAL ONLY: public contexts (public, relinearisation, Galois keys)
and ciphertexts. It refuses any upload carrying a secret key, and the server processes it starts
build engines that cannot decrypt. It has no authentication of its own: job ids are random
tokens that act as capabilities, so bind it to loopback or put it behind an authenticating TLS
proxy.

    POST   /v1/jobs              body: the job bundle as an uncompressed tar -> 201 {"id", "status"}
    GET    /v1/jobs/{id}         status (queued/running/done/failed), progress, timings, error
    GET    /v1/jobs/{id}/result  outputs.bin (streamed) once done; 409 before
    DELETE /v1/jobs/{id}         cancel (kills a running job) and remove
    GET    /v1/health            liveness, queue counts, upload limit

A job with ``"refresh": "client"`` asks its data owner to refresh its state; the data owner
answers over HTTP and may come and go (service/relay.py):

    GET    /v1/jobs/{id}/channel?wait=S  long poll (S <= 30): 200, the pending request frame
                                         (application/octet-stream, header X-Hetrain-Seq: N);
                                         204 nothing within S; 410 job finished or no channel
    POST   /v1/jobs/{id}/channel/{N}     body: the answer frame -> 200; 409 N is not the pending
                                         request (answered, or stale: poll again); 413 larger than
                                         max(32 x the request, 1 MiB) (relay.ANSWER_FACTOR: fresh
                                         ciphertexts outweigh low-level ones); 400 not a frame

Every error is JSON: {"error": "<message>"}.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

import hetrain
from hetrain.errors import HetrainUserError
from hetrain.protocol import files

from .jobs import DONE, FAILED, JobQueue, QuotaExceeded
from .relay import FRAME_PREFIX, FrameError, check_frame, frame_size
from .upload import DEFAULT_STALL_S, UploadError, UploadTooLarge, check_bundle, receive_bundle

DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 ** 3  # a public context at N=32768 with ~30 rotation keys, plus data
DEFAULT_JOB_MEMORY_BYTES = 16 * 1024 ** 3  # a job at N=32768 with its keys and a few hundred ciphertexts in memory
DEFAULT_JOB_TTL_S = 24 * 3600.0            # finished jobs: a day to download the result
_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_CHANNEL_WAIT_S = 30.0
SEQ_HEADER = "X-Hetrain-Seq"
_CHANNEL_POLLS = 32  # long polls waiting at once (their own thread pool: uploads never wait behind them)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(workdir: str | os.PathLike, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, workers: int = 1,
               trainer_modules: tuple[str, ...] = (), job_memory_bytes: int | None = DEFAULT_JOB_MEMORY_BYTES,
               job_time_limit: float | None = None, job_ttl_s: float | None = DEFAULT_JOB_TTL_S,
               disk_quota_bytes: int | None = None, upload_timeout_s: float | None = DEFAULT_STALL_S) -> FastAPI:
    """The app; its job queue (and worker threads) lives from startup to shutdown.

    Limits (None: none): ``job_memory_bytes`` per server process (RLIMIT_DATA), ``job_time_limit``
    seconds of wall time per run, ``job_ttl_s`` after which finished jobs are removed,
    ``disk_quota_bytes`` for all job directories and uploads together (507 beyond it),
    ``upload_timeout_s`` without a byte before an upload is dropped (408)."""
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state["queue"] = JobQueue(workdir, workers=workers, trainer_modules=trainer_modules,
                                  job_memory_bytes=job_memory_bytes, job_time_limit=job_time_limit,
                                  job_ttl_s=job_ttl_s, disk_quota_bytes=disk_quota_bytes)
        state["polls"] = anyio.CapacityLimiter(_CHANNEL_POLLS)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(state["queue"].close)

    app = FastAPI(title="hetrain training service", version=hetrain.__version__, lifespan=lifespan,
                  description=__doc__)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    def find(job_id: str):
        job = state["queue"].get(job_id) if _ID.match(job_id) else None
        if job is None and _ID.match(job_id) and state["queue"].expired(job_id):
            raise StarletteHTTPException(410, f"job {job_id!r} finished and expired (the service keeps finished jobs "
                                              f"{job_ttl_s:g} s): its files are removed")
        if job is None:
            raise StarletteHTTPException(404, f"no job with id {job_id!r} (unknown, or deleted)")
        return job

    @app.get("/v1/health")
    async def health() -> dict:
        return {"status": "ok", "version": hetrain.__version__, "jobs": state["queue"].counts(),
                "workers": workers, "max_upload_bytes": max_upload_bytes, "holds_secret_keys": False}

    @app.post("/v1/jobs", status_code=201)
    async def submit(request: Request):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_upload_bytes:
            return _error(413, f"upload of {int(declared)} bytes is larger than this service's limit of "
                               f"{max_upload_bytes} bytes")
        queue = state["queue"]
        job_id, upload_dir = queue.new_upload()
        try:
            await anyio.to_thread.run_sync(queue.quota.begin, job_id, int(declared) if declared and declared.isdigit() else None)
            received = await receive_bundle(request.stream(), upload_dir, max_upload_bytes,
                                            on_bytes=lambda n: queue.quota.grow(job_id, n), stall_timeout=upload_timeout_s)
            manifest = await anyio.to_thread.run_sync(
                functools.partial(check_bundle, upload_dir, received, trainer_modules=trainer_modules))
        except QuotaExceeded as exc:
            queue.discard_upload(upload_dir)
            return _error(507, str(exc))
        except UploadTooLarge as exc:
            queue.discard_upload(upload_dir)
            return _error(exc.status, str(exc))
        except UploadError as exc:
            queue.discard_upload(upload_dir)
            if exc.status in (408, 507):  # nothing wrong with the bundle: the service's limits
                return _error(exc.status, str(exc))
            return _error(exc.status, f"job bundle refused: {exc}")
        except HetrainUserError as exc:  # e.g. a model this service does not know
            queue.discard_upload(upload_dir)
            return _error(400, f"job bundle refused: {exc}")
        except ClientDisconnect:
            queue.discard_upload(upload_dir)
            return _error(400, "the client disconnected during the upload")
        except BaseException:
            queue.discard_upload(upload_dir)
            raise
        finally:
            queue.quota.end(job_id)
        job = queue.submit(job_id, upload_dir, manifest)
        return {"id": job.id, "status": job.status}

    @app.get("/v1/jobs/{job_id}")
    async def status(job_id: str):
        return find(job_id).public()

    @app.get("/v1/jobs/{job_id}/result")
    async def result(job_id: str):
        job = find(job_id)
        if job.status != DONE:
            detail = f": {job.error}" if job.error else ""
            return _error(409, f"job {job_id} is {job.status}, its result is not available{detail}")
        return FileResponse(job.dir / files.OUTPUTS, media_type="application/octet-stream", filename=files.OUTPUTS)

    @app.delete("/v1/jobs/{job_id}")
    async def delete(job_id: str):
        job = find(job_id)
        await anyio.to_thread.run_sync(state["queue"].delete, job_id)
        return {"id": job_id, "deleted": True, "was": job.status}

    def channel_of(job_id: str):
        """The job's relay, or the 410 that says why there is none to talk to."""
        job = find(job_id)
        if job.relay is None:
            raise StarletteHTTPException(410, f"job {job_id} has no refresh channel (its refresh mode is "
                                              f"{job.refresh!r}; only \"client\" jobs ask their data owner)")
        if job.status in (DONE, FAILED):
            raise StarletteHTTPException(410, f"job {job_id} is {job.status}: its refresh channel is closed")
        return job, job.relay

    @app.get("/v1/jobs/{job_id}/channel")
    async def channel_request(job_id: str, request: Request):
        job, relay = channel_of(job_id)
        raw = request.query_params.get("wait", "0")
        try:
            wait = min(max(float(raw), 0.0), MAX_CHANNEL_WAIT_S)
        except ValueError:
            return _error(400, f"wait must be a number of seconds, got {raw!r}")
        if wait != wait:  # NaN
            return _error(400, f"wait must be a number of seconds, got {raw!r}")
        got = await anyio.to_thread.run_sync(relay.wait_request, wait, limiter=state["polls"])
        if got is None:
            if job.deleted:
                return _error(404, f"no job with id {job_id!r} (unknown, or deleted)")
            if job.status in (DONE, FAILED):
                return _error(410, f"job {job_id} is {job.status}: its refresh channel is closed")
            if relay.finished:  # the relay ended but the job has no final status yet: it is being closed
                return _error(503, f"job {job_id}'s refresh channel is closing; ask again")
            return Response(status_code=204)
        seq, frame = got
        return Response(frame, media_type="application/octet-stream", headers={SEQ_HEADER: str(seq)})

    @app.post("/v1/jobs/{job_id}/channel/{seq}")
    async def channel_answer(job_id: str, seq: str, request: Request):
        job, relay = channel_of(job_id)
        if not seq.isdigit() or len(seq) > 18:
            return _error(400, f"the request number must be a non-negative integer, got {seq!r}")
        n = int(seq)
        limit = relay.answer_limit(n)
        if limit is None:
            return _error(409, f"request {n} of job {job_id} is not pending (already answered, or sent again "
                               "after a reconnection): ask for the pending request")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(413, f"answer of {int(declared)} bytes is larger than this request's limit of {limit} bytes")
        try:
            body = await _read_frame(request.stream(), limit, int(declared) if declared and declared.isdigit() else None)
        except _TooLarge as exc:
            return _error(413, str(exc))
        except FrameError as exc:
            return _error(400, f"the answer is not a refresh-channel frame: {exc}")
        except ClientDisconnect:
            return _error(400, "the client disconnected while sending its answer")
        if not relay.answer(n, body):
            if job.status in (DONE, FAILED) or relay.finished:
                return _error(410, f"job {job_id} is {job.status}: its refresh channel is closed")
            return _error(409, f"request {n} of job {job_id} is no longer pending (answered meanwhile, or sent "
                               "again after a reconnection): ask for the pending request")
        return {"id": job_id, "seq": n, "accepted": True}

    return app


class _TooLarge(Exception):
    pass


async def _read_frame(chunks, limit: int, declared: int | None) -> bytes:
    """One answer frame from the request body, refused (FrameError, _TooLarge) from its prefix,
    before the rest of the body is read: never more than ``limit`` bytes in memory."""
    buf = bytearray()
    size = None
    async for chunk in chunks:
        buf += chunk
        if size is None and len(buf) >= FRAME_PREFIX.size:
            size = frame_size(bytes(buf[:FRAME_PREFIX.size]))
            if size > limit:
                raise _TooLarge(f"the answer's frame announces {size} bytes, larger than this request's limit "
                                f"of {limit} bytes")
            if declared is not None and declared != size:
                raise FrameError(f"the frame announces {size} bytes, the request body has {declared}")
        if len(buf) > (size if size is not None else limit):
            raise FrameError(f"the body is longer than the frame it starts with ({size} bytes)")
    if size is None:
        raise FrameError(f"the body ({len(buf)} bytes) is too short to be a frame")
    check_frame(buf)  # the exact length, a JSON header whose blob sizes add up
    return bytes(buf)
