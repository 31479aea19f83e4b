"""Test helper: the HTTP training service in a thread of the test process, and bundles to send it.

    s = Service(tmp_path / "service", max_upload_bytes=...)   # uvicorn on 127.0.0.1:<ephemeral>
    r = s.upload(jobdir); st = s.wait(r.json()["id"]); s.stop()
    kit, job = make_bundle(root, (X, y))                      # the data owner's steps up to the bundle
    assert_error(r, 413, "upload")                            # status and words of a refusal
    service = service_fixture("svc", max_upload_bytes=...)    # a module-scoped fixture of a test module
"""
from __future__ import annotations

import io
import json
import pathlib
import tarfile
import threading
import time

import httpx
import pytest
import uvicorn

from hetrain.protocol import files
from hetrain.protocol.transport import tar_stream
from hetrain.service.app import create_app

from jobkit import make_job

DEADLINE_S = 60.0
CONFIG = {"iterations": 1, "sigmoid": "deg3:16"}  # one mlr iteration fits n8192's 2 levels


def service_fixture(name: str, **options):
    """A module-scoped pytest fixture: a Service(**options) in a fresh directory ``name``, stopped after
    the module. Assign it to a module-level name: ``service = service_fixture("limits", ...)``."""

    @pytest.fixture(scope="module")
    def _service(tmp_path_factory):
        s = Service(tmp_path_factory.mktemp(name), **options)
        yield s
        s.stop()

    return _service


class JobTokens(httpx.Auth):
    """The test client's own jobs: remembers the token of each job it submitted (POST /v1/jobs) and
    sends it with every request on that job (unless the request carries its own Authorization)."""

    requires_response_body = True

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}

    def auth_flow(self, request):
        parts = request.url.path.split("/")
        if len(parts) > 3 and parts[1:3] == ["v1", "jobs"] and parts[3] in self.tokens \
                and "authorization" not in request.headers:
            request.headers["Authorization"] = f"Bearer {self.tokens[parts[3]]}"
        response = yield request
        if request.method == "POST" and request.url.path == "/v1/jobs" and response.status_code == 201:
            body = response.json()
            self.tokens[body["id"]] = body["token"]


class Service:
    """uvicorn in a daemon thread on 127.0.0.1:<ephemeral>; ``stop`` ends it and its job queue.
    ``http``: a client that holds the tokens of the jobs it submitted (JobTokens)."""

    def __init__(self, workdir: pathlib.Path, *, scheme: str = "http", uvicorn_options: dict | None = None,
                 client_options: dict | None = None, **options) -> None:
        self.workdir = workdir
        config = uvicorn.Config(create_app(workdir, **options), **{"host": "127.0.0.1", "port": 0,
                                                                   "log_level": "warning", **(uvicorn_options or {})})
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "service did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.auth = JobTokens()
        self.http = httpx.Client(base_url=self.url, timeout=30, auth=self.auth, **(client_options or {}))

    def upload(self, jobdir: pathlib.Path, **kw) -> httpx.Response:
        return self.http.post("/v1/jobs", content=b"".join(tar_stream(jobdir)), **kw)

    def token(self, job_id: str) -> str:
        return self.auth.tokens[job_id]

    def wait(self, job_id: str, until=("done", "failed")) -> dict:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            st = self.http.get(f"/v1/jobs/{job_id}").json()
            if st["status"] in until:
                return st
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} still {st['status']} after {DEADLINE_S} s")

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


def make_bundle(root, iris, backend="sim", preset="n16384", config=CONFIG):
    """The data owner's steps up to the bundle on disk (ROOT/job; the keys in ROOT/keys-*, beside it,
    never in it); returns the JobKit (its engine holds the secret key) and the bundle's job.json."""
    X, y = iris
    kit = make_job(root, X, y, "mlr", config, backend=backend, preset=preset)
    return kit, json.loads((kit.jobdir / files.JOB).read_text())


def tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def bundle_members(jobdir) -> dict[str, bytes]:
    return {n: (pathlib.Path(jobdir) / n).read_bytes() for n in (files.MANIFEST, files.JOB, files.PUBLIC_CONTEXT, files.INPUTS)}


def assert_error(r: httpx.Response, status: int, *needles: str) -> None:
    assert r.status_code == status, r.text
    message = r.json()["error"]
    for needle in needles:
        assert needle in message, message


def with_manifest_sha(members: dict[str, bytes]) -> dict[str, bytes]:
    """Recompute the manifest's checksums, so only the secret-key check can refuse the upload."""
    m = json.loads(members[files.MANIFEST])
    m["sha256"] = {n: files._sha(members[n]) for n in (files.PUBLIC_CONTEXT, files.INPUTS, files.JOB)}
    return {**members, files.MANIFEST: json.dumps(m).encode()}
