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

Every error is JSON: {"error": "<message>"}.
"""
from __future__ import annotations

import contextlib
import os
import re

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

import hetrain
from hetrain.errors import HetrainUserError
from hetrain.protocol import files

from .jobs import DONE, JobQueue
from .upload import UploadError, UploadTooLarge, check_bundle, receive_bundle

DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 ** 3  # a public context at N=32768 with ~30 rotation keys, plus data
_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(workdir: str | os.PathLike, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, workers: int = 1,
               trainer_modules: tuple[str, ...] = ()) -> FastAPI:
    """The app; its job queue (and worker threads) lives from startup to shutdown."""
    state: dict[str, JobQueue] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state["queue"] = JobQueue(workdir, workers=workers, trainer_modules=trainer_modules)
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
            received = await receive_bundle(request.stream(), upload_dir, max_upload_bytes)
            manifest = await anyio.to_thread.run_sync(check_bundle, upload_dir, received)
        except UploadTooLarge as exc:
            queue.discard_upload(upload_dir)
            return _error(exc.status, str(exc))
        except UploadError as exc:
            queue.discard_upload(upload_dir)
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

    return app
