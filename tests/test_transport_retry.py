"""HttpTransport's retries (protocol/http_retry.py, tenacity) against a fake service (httpx.MockTransport).

A status request that fails is retried and the run completes; a service that stays unreachable
ends the run with RequestFailed, and the job is NOT deleted (its id and token stay in
JOB/remote.json); a job that failed on the service is deleted as before.
"""
from __future__ import annotations

import json
import stat

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("tenacity")

from hetrain.data import load_builtin  # noqa: E402
from hetrain.protocol import files, http_retry  # noqa: E402
from hetrain.protocol.errors import RequestFailed, ServerError  # noqa: E402
from hetrain.protocol.transport import REMOTE, HttpTransport  # noqa: E402

from jobkit import make_job  # noqa: E402

URL = "http://fake-service"
RESULT = b"encrypted outputs" * 1000


class FakeService:
    """Just enough of service/app.py: health, upload, status, result, delete. ``fail_status``: how
    many status requests fail (a connection error each) before they answer; ``status``: what they
    answer then."""

    def __init__(self, fail_status: int = 0, status: str = "done", fail_result: int = 0) -> None:
        self.fail_status, self.status, self.fail_result = fail_status, status, fail_result
        self.requests: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append((request.method, path))
        if path == "/v1/health":
            return httpx.Response(200, json={"status": "ok", "max_upload_bytes": None})
        if request.method == "POST" and path == "/v1/jobs":
            request.read()
            return httpx.Response(201, json={"id": "j1", "token": "secret-token", "status": "queued"})
        if request.method == "GET" and path == "/v1/jobs/j1":
            if self.fail_status:
                self.fail_status -= 1
                raise httpx.ConnectError("connection refused", request=request)
            if self.status == "failed":
                return httpx.Response(200, json={"status": "failed", "error": "out of levels"})
            return httpx.Response(200, json={"status": self.status, "stats": {"download_bytes": len(RESULT)}})
        if request.method == "GET" and path == "/v1/jobs/j1/result":
            if self.fail_result:
                self.fail_result -= 1
                return httpx.Response(503, json={"error": "restarting"})
            return httpx.Response(200, content=RESULT)
        if request.method == "DELETE" and path == "/v1/jobs/j1":
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"error": f"no route {request.method} {path}"})

    @property
    def deletes(self) -> int:
        return sum(m == "DELETE" for m, _ in self.requests)


@pytest.fixture
def jobdir(tmp_path):
    X, y = load_builtin("iris")
    return make_job(tmp_path, X[::5], y[::5], "mlr", {"iterations": 1, "sigmoid": "deg3:16"},
                    backend="sim", preset="n16384").jobdir


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(http_retry, "FIRST_PAUSE_S", 0.01)
    monkeypatch.setattr(http_retry, "LONGEST_PAUSE_S", 0.02)


def transport(monkeypatch, service: FakeService, **options) -> HttpTransport:
    t = HttpTransport(URL, poll_s=0.01, **options)
    monkeypatch.setattr(t, "_client", lambda timeout=None, token=None: httpx.Client(
        base_url=URL, transport=httpx.MockTransport(service),
        headers={"Authorization": f"Bearer {token}"} if token else None))
    return t


def test_a_failed_status_request_is_retried_and_the_run_completes(monkeypatch, jobdir):
    service = FakeService(fail_status=2, fail_result=1)
    stats = transport(monkeypatch, service).run(jobdir, progress=False)
    assert stats["download_bytes"] == len(RESULT)
    assert (jobdir / files.OUTPUTS).read_bytes() == RESULT
    gets = [p for m, p in service.requests if m == "GET"]
    assert gets.count("/v1/jobs/j1") == 3 and gets.count("/v1/jobs/j1/result") == 2  # retried, then answered
    # deleted once, at the end, after the result was downloaded: never because a request failed
    assert service.deletes == 1 and service.requests[-1] == ("DELETE", "/v1/jobs/j1")


def test_an_unreachable_service_keeps_the_job(monkeypatch, jobdir):
    service = FakeService(fail_status=10**6)
    with pytest.raises(RequestFailed, match=r"cannot reach the training service .* left on the service"):
        transport(monkeypatch, service, retry_s=0.3).run(jobdir, progress=False)
    assert service.deletes == 0
    remote = jobdir / REMOTE
    assert json.loads(remote.read_text()) == {"url": URL, "id": "j1", "token": "secret-token"}
    assert stat.S_IMODE(remote.stat().st_mode) == 0o600
    assert not (jobdir / files.OUTPUTS).exists()


def test_a_job_that_failed_on_the_service_is_deleted(monkeypatch, jobdir):
    service = FakeService(status="failed")
    with pytest.raises(ServerError, match="server failed: out of levels") as info:
        transport(monkeypatch, service).run(jobdir, progress=False)
    assert not isinstance(info.value, RequestFailed) and service.deletes == 1


def test_retry_gives_up_on_5xx_with_the_services_message():
    calls = []

    def send():
        calls.append(1)
        return httpx.Response(502, json={"error": "bad gateway"})

    with pytest.raises(RequestFailed, match=r"for 0.2 s \(HTTP 502: bad gateway\); still there"):
        http_retry.retry_idempotent(send, url=URL, give_up_s=0.2, what="test", after="; still there")
    assert len(calls) >= 2
    # any answer below 500 is returned at once, without a retry
    assert http_retry.retry_idempotent(lambda: httpx.Response(404), url=URL, give_up_s=0.2,
                                       what="test").status_code == 404


def test_a_set_stop_event_ends_the_retries():
    import threading

    stop = threading.Event()

    def send():
        stop.set()
        raise httpx.ConnectError("down")

    assert http_retry.retry_idempotent(send, url=URL, give_up_s=None, what="test", stop=stop) is None
