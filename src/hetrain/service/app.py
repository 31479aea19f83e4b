"""The HTTP training service (FastAPI): job bundles in, encrypted models out.

The service holds PUBLIC MATERIAL ONLY: public contexts (public, relinearisation, Galois keys)
and ciphertexts. It refuses any upload carrying a secret key, and the server processes it starts
build engines that cannot decrypt.

Authentication (auth.py): POST /v1/jobs answers a bearer token with the job's id; every other job
endpoint needs ``Authorization: Bearer <token>`` (401 without one; 404, the answer to an unknown
id, with a token that is not the job's: nobody learns whether an id exists without its token).
With API keys (``create_app(api_keys=...)``, `hetrain serve --api-keys FILE`), POST /v1/jobs
needs ``Authorization: Bearer <api key>`` (401 without, 403 with a key that is not one of them).
TLS is uvicorn's (`hetrain serve --tls-cert --tls-key`).

    POST   /v1/jobs              body: the job bundle as an uncompressed tar
                                 -> 201 {"id", "token", "status"}
    GET    /v1/jobs/{id}         status (queued/running/done/failed), progress, timings, error
    GET    /v1/jobs/{id}/result  outputs.bin (streamed) once done; 409 before
    DELETE /v1/jobs/{id}         cancel (kills a running job) and remove
    GET    /v1/health            liveness, queue counts, upload limit (no token needed)

Encrypted inference (service/inference.py; a query bundle is written by `hetrain encrypt-queries`):

    POST   /v1/jobs/{id}/queries         (case a) the TRAINING job's token; body: a query bundle (tar)
                                         encrypted under its key for its encrypted model -> 201
                                         {"id", "token", "status"} of a new inference job; 409 until
                                         the training job is done
    GET    /v1/models                    (case b) the specs of the plaintext models the service
                                         scores with (`hetrain serve --model`), no weights
    GET    /v1/models/{spec_id}          one spec; 404 unknown
    POST   /v1/models/{spec_id}/queries  (case b) body: a query bundle for that spec -> 201 as above
                                         (an API key when the service has them)

An inference job is then followed like any job with its own token: GET /v1/jobs/{qid}, its
encrypted scores at GET /v1/jobs/{qid}/result, DELETE /v1/jobs/{qid}.

A job with ``"refresh": "client"`` asks its data owner to refresh its state; the data owner
answers over HTTP and may come and go (service/relay.py):

    GET    /v1/jobs/{id}/channel?wait=S  long poll (S <= 30): 200, the pending request frame
                                         (application/octet-stream, header X-Hetrain-Seq: N);
                                         204 nothing within S; 410 job finished or no channel
    POST   /v1/jobs/{id}/channel/{N}     body: the answer frame -> 200; 409 N is not the pending
                                         request (answered, or stale: poll again); 413 larger than
                                         max(32 x the request, 1 MiB) (refresh_channel.ANSWER_FACTOR: fresh
                                         ciphertexts outweigh low-level ones); 400 not a frame

Every error is JSON: {"error": "<message>"}: 400 malformed input (never 422), 401/403 auth, 404
unknown (or not yours), 409 wrong state, 410 channel closed, 413 too large, 507 the service's
disk is full, 500 only for a bug, with a generic message (the traceback goes to the service log).
A failed job's error is the server's message for a user error, else a generic line.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import pathlib
import re
import struct

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

import hetrain
from hetrain.errors import HetrainUserError
from hetrain.protocol import files

from .auth import ApiKeys, bearer, digest, install_log_redaction, matches, new_token
from .jobs import DONE, FAILED, JobQueue, QuotaExceeded
from .relay import FRAME_PREFIX, FrameError, check_frame, frame_size
from .inference import ModelRegistry, check_for_job, check_for_model, has_model
from .upload import DEFAULT_STALL_S, UploadError, UploadTooLarge, check_bundle, receive_bundle

DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 ** 3  # a public context at N=32768 with ~30 rotation keys, plus data
DEFAULT_JOB_MEMORY_BYTES = 16 * 1024 ** 3  # a job at N=32768 with its keys and a few hundred ciphertexts in memory
DEFAULT_JOB_TTL_S = 24 * 3600.0            # finished jobs: a day to download the result
_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_CHANNEL_WAIT_S = 30.0
SEQ_HEADER = "X-Hetrain-Seq"
_CHANNEL_POLLS = 32  # long polls waiting at once (their own thread pool: uploads never wait behind them)
INTERNAL_ERROR = "internal error (see the service log)"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# what parsing a client's manifest or container headers raises when a field has the wrong type,
# size or nesting (upload.py checks what it expects; anything it did not foresee is still the
# client's malformed input, not a bug of ours: 400, never 500)
_MALFORMED = (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError, OverflowError,
              struct.error, UnicodeError)
log = logging.getLogger("hetrain.service")


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _unauthorized(message: str) -> JSONResponse:
    return _error(401, message, {"WWW-Authenticate": "Bearer"})


def create_app(workdir: str | os.PathLike, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, workers: int = 1,
               trainer_modules: tuple[str, ...] = (), api_keys=(),
               job_memory_bytes: int | None = DEFAULT_JOB_MEMORY_BYTES, job_time_limit: float | None = None,
               job_ttl_s: float | None = DEFAULT_JOB_TTL_S, disk_quota_bytes: int | None = None,
               upload_timeout_s: float | None = DEFAULT_STALL_S, models=(), noise_std: float = 0.0,
               job_workers: int | None = None, ray_address: str | None = None) -> FastAPI:
    """The app; its job queue (and worker threads) lives from startup to shutdown. ``api_keys``:
    who may submit (hashed here; empty: anyone who reaches the service).

    Limits (None: none): ``job_memory_bytes`` per server process (RLIMIT_DATA), ``job_time_limit``
    seconds of wall time per run, ``job_ttl_s`` after which finished jobs are removed,
    ``disk_quota_bytes`` for all job directories and uploads together (507 beyond it),
    ``upload_timeout_s`` without a byte before an upload is dropped (408).

    Encrypted inference (service/inference.py): ``models``, paths of plaintext models the service
    scores other parties' encrypted queries with (case b; ``noise_std``: Gaussian noise added to
    their encrypted scores); any finished training job scores its owner's queries (case a).

    ``job_workers``, ``ray_address``: each training job's workers and the Ray cluster they run on
    (service/jobs.JobQueue; None: this machine's cores shared among the concurrent jobs)."""
    state: dict = {}
    keys = ApiKeys(api_keys)
    models = models if isinstance(models, ModelRegistry) else ModelRegistry(models)
    roots = {str(pathlib.Path(workdir)), str(pathlib.Path(workdir).resolve())}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        install_log_redaction()  # after uvicorn configured its loggers: access lines name jobs by tag
        state["queue"] = JobQueue(workdir, workers=workers, trainer_modules=trainer_modules,
                                  job_memory_bytes=job_memory_bytes, job_time_limit=job_time_limit,
                                  job_ttl_s=job_ttl_s, disk_quota_bytes=disk_quota_bytes, models=models,
                                  noise_std=noise_std, job_workers=job_workers, ray_address=ray_address)
        state["polls"] = anyio.CapacityLimiter(_CHANNEL_POLLS)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(state["queue"].close)

    app = FastAPI(title="hetrain training service", version=hetrain.__version__, lifespan=lifespan,
                  description=__doc__)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, _scrub(str(exc.detail)), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = [".".join(str(x) for x in e.get("loc", ()) if x != "body") or "the request" for e in exc.errors()]
        return _error(400, f"malformed request ({', '.join(where)})")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        # starlette re-raises it after this answer: uvicorn logs the traceback in the service log
        return _error(500, INTERNAL_ERROR)

    def _scrub(message: str) -> str:
        for root in roots:  # no internal path in an answer
            message = message.replace(root, "<service workdir>")
        return message

    def find(job_id: str, request: Request):
        """The job, for the holder of its token only: 401 without a token, 404 (as for an unknown
        id) with a token that is not the job's."""
        token = bearer(request.headers)
        if token is None:
            raise StarletteHTTPException(401, "this job's endpoints need its token: send the header "
                                              "'Authorization: Bearer <token>' (POST /v1/jobs returned it)",
                                         headers={"WWW-Authenticate": "Bearer"})
        job = state["queue"].get(job_id) if _ID.match(job_id) else None
        if job is None and _ID.match(job_id) and state["queue"].expired(job_id):
            raise StarletteHTTPException(410, f"job {job_id!r} finished and expired (the service keeps finished jobs "
                                              f"{job_ttl_s:g} s): its files are removed")
        if not matches(token, job.token_sha256 if job is not None else None):
            raise StarletteHTTPException(404, f"no job with id {job_id!r} for this token (unknown, deleted, or "
                                              "the token is not this job's)")
        return job

    @app.get("/v1/health")
    async def health() -> dict:
        return {"status": "ok", "version": hetrain.__version__, "jobs": state["queue"].counts(),
                "workers": workers, "max_upload_bytes": max_upload_bytes, "holds_secret_keys": False}

    async def receive(request: Request, check) -> tuple[str, pathlib.Path, dict, dict] | JSONResponse:
        """Receive an upload into a new directory, check it (``check(upload_dir, received)`` in a
        worker thread: returns the manifest, raises for a refusal) and queue nothing yet: (its id,
        directory, manifest, job.json), or the JSON refusal."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_upload_bytes:
            return _error(413, f"upload of {int(declared)} bytes is larger than this service's limit of "
                               f"{max_upload_bytes} bytes")
        queue = state["queue"]
        job_id = upload_dir = None
        try:
            job_id, upload_dir = queue.new_upload()
            await anyio.to_thread.run_sync(queue.quota.begin, job_id,
                                           int(declared) if declared and declared.isdigit() else None)
            received = await receive_bundle(request.stream(), upload_dir, max_upload_bytes,
                                            on_bytes=lambda n: queue.quota.grow(job_id, n),
                                            stall_timeout=upload_timeout_s)
            manifest, job = await anyio.to_thread.run_sync(functools.partial(check, upload_dir, received))
        except QuotaExceeded as exc:
            queue.discard_upload(upload_dir)
            return _error(507, str(exc))
        except OSError as exc:
            if upload_dir is not None:
                queue.discard_upload(upload_dir)
            if exc.errno in DISK_FULL:
                log.error("upload refused: %s", exc)
                return _error(507, "the service has no room to store this upload (its disk is full): try again "
                                   "later, or ask its operator")
            if exc.errno == errno.EINVAL:  # e.g. a seek to a negative offset from a part's declared size
                log.warning("upload refused as malformed: %s", exc)
                return _error(400, "job bundle refused: a container header is malformed (a part's size or "
                                   "offset is impossible)")
            raise
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
            return _error(400, f"job bundle refused: {_scrub(str(exc))}")
        except ClientDisconnect:
            queue.discard_upload(upload_dir)
            return _error(400, "the client disconnected during the upload")
        except _MALFORMED as exc:
            queue.discard_upload(upload_dir)
            log.warning("upload refused as malformed: %s: %s", type(exc).__name__, exc, exc_info=True)
            return _error(400, "job bundle refused: its manifest, job.json or a container header is malformed "
                               "(a field of the wrong type, size or nesting)")
        except BaseException:
            if upload_dir is not None:
                queue.discard_upload(upload_dir)
            raise
        finally:
            if job_id is not None:
                queue.quota.end(job_id)
        return job_id, upload_dir, manifest, job

    def enqueue(job_id: str, upload_dir: pathlib.Path, manifest: dict, **task) -> dict | JSONResponse:
        """Queue a checked upload under a new token: 201's body {"id", "token", "status"}."""
        queue = state["queue"]
        token = new_token()
        try:
            job = queue.submit(job_id, upload_dir, manifest, token_sha256=digest(token), **task)
        except OSError as exc:
            queue.discard_upload(upload_dir)
            if exc.errno in DISK_FULL:
                log.error("upload refused: %s", exc)
                return _error(507, "the service has no room to store this job (its disk is full): try again later, "
                                   "or ask its operator")
            raise
        return {"id": job.id, "token": token, "status": job.status}

    def api_key_refusal(request: Request) -> JSONResponse | None:
        """With API keys: 401 without one, 403 with a key that is not one of them."""
        if keys:
            key = bearer(request.headers)
            if key is None:
                return _unauthorized("this service takes jobs from holders of an API key: send the header "
                                     "'Authorization: Bearer <api key>' (hetrain: --api-key or HETRAIN_API_KEY)")
            if not keys.allows(key):
                return _error(403, "this API key is not one of this service's")
        return None

    def check_training(upload_dir: pathlib.Path, received) -> tuple[dict, None]:
        return check_bundle(upload_dir, received, trainer_modules=trainer_modules), None

    @app.post("/v1/jobs", status_code=201)
    async def submit(request: Request):
        refusal = api_key_refusal(request)
        if refusal is not None:
            return refusal
        got = await receive(request, check_training)
        if isinstance(got, JSONResponse):
            return got
        job_id, upload_dir, manifest, _ = got
        return enqueue(job_id, upload_dir, manifest)

    # ------------------------------------------------------------------ encrypted inference (service/inference.py)
    @app.post("/v1/jobs/{job_id}/queries", status_code=201)
    async def submit_queries_for_job(job_id: str, request: Request):
        train = find(job_id, request)  # the training job's token: 401 / 404 as for its other endpoints
        if train.task != "train":
            return _error(409, f"job {job_id} is an inference job: queries go to the training job whose encrypted "
                               "model scores them")
        if train.status != DONE or not has_model(train.dir):
            return _error(409, f"job {job_id} is {train.status}: its encrypted model scores queries once it is done")

        def check(upload_dir: pathlib.Path, received):
            manifest = check_bundle(upload_dir, received, query=True)
            return manifest, check_for_job(upload_dir, train.dir)

        got = await receive(request, check)
        if isinstance(got, JSONResponse):
            return got
        qid, upload_dir, manifest, _ = got
        return enqueue(qid, upload_dir, manifest, task="inference", parent=train.id)

    @app.get("/v1/models")
    async def list_models():
        return {"models": list(models.specs.values())}

    def model_of(spec_id: str) -> dict:
        spec = models.specs.get(spec_id)
        if spec is None:
            raise StarletteHTTPException(404, f"this service has no model of spec {spec_id!r}" +
                                         ("" if models else " (it scores with none: `hetrain serve --model "
                                                            "MODEL.json` makes it a model owner's scoring service)"))
        return spec

    @app.get("/v1/models/{spec_id}")
    async def get_model(spec_id: str):
        return model_of(spec_id)

    @app.post("/v1/models/{spec_id}/queries", status_code=201)
    async def submit_queries_for_model(spec_id: str, request: Request):
        spec = model_of(spec_id)
        refusal = api_key_refusal(request)
        if refusal is not None:
            return refusal

        def check(upload_dir: pathlib.Path, received):
            manifest = check_bundle(upload_dir, received, query=True)
            return manifest, check_for_model(upload_dir, spec)

        got = await receive(request, check)
        if isinstance(got, JSONResponse):
            return got
        qid, upload_dir, manifest, _ = got
        return enqueue(qid, upload_dir, manifest, task="inference", spec_id=spec_id)

    @app.get("/v1/jobs/{job_id}")
    async def status(job_id: str, request: Request):
        return find(job_id, request).public()

    @app.get("/v1/jobs/{job_id}/result")
    async def result(job_id: str, request: Request):
        job = find(job_id, request)
        if job.status != DONE:
            detail = f": {job.error}" if job.error else ""
            return _error(409, f"job {job_id} is {job.status}, its result is not available{detail}")
        return FileResponse(job.dir / files.OUTPUTS, media_type="application/octet-stream", filename=files.OUTPUTS)

    @app.delete("/v1/jobs/{job_id}")
    async def delete(job_id: str, request: Request):
        job = find(job_id, request)
        await anyio.to_thread.run_sync(state["queue"].delete, job_id)
        return {"id": job_id, "deleted": True, "was": job.status}

    def channel_of(job_id: str, request: Request):
        """The job's relay, or the 410 that says why there is none to talk to."""
        job = find(job_id, request)
        if job.relay is None:
            raise StarletteHTTPException(410, f"job {job_id} has no refresh channel (its refresh mode is "
                                              f"{job.refresh!r}; only \"client\" jobs ask their data owner)")
        if job.status in (DONE, FAILED):
            raise StarletteHTTPException(410, f"job {job_id} is {job.status}: its refresh channel is closed")
        return job, job.relay

    @app.get("/v1/jobs/{job_id}/channel")
    async def channel_request(job_id: str, request: Request):
        job, relay = channel_of(job_id, request)
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
                return _error(404, f"no job with id {job_id!r} for this token (unknown, deleted, or the token is "
                                   "not this job's)")
            if job.status in (DONE, FAILED):
                return _error(410, f"job {job_id} is {job.status}: its refresh channel is closed")
            if relay.finished:  # the relay ended but the job has no final status yet: it is being closed
                return _error(503, f"job {job_id}'s refresh channel is closing; ask again")
            return Response(status_code=204)
        seq, frame = got
        return Response(frame, media_type="application/octet-stream", headers={SEQ_HEADER: str(seq)})

    @app.post("/v1/jobs/{job_id}/channel/{seq}")
    async def channel_answer(job_id: str, seq: str, request: Request):
        job, relay = channel_of(job_id, request)
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
