"""Remote refresh through the service: the data owner answers a running job's refresh requests over
HTTP (long polls), may come and go, and a dropped connection on either side does not kill the job.

The server process here is a fake (FAKE_SERVER, started through the service's real runner): it
listens on the channel socket, sends hello and numbered requests with refresh_channel.send_frame,
checks each answer, drops its connection when told to and sends the request again on the next
one, as the real server does. The data owner's side is a fake answerer (one frame in, one out).
"""
from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from hetrain.data import load_builtin  # noqa: E402
from hetrain.protocol import files  # noqa: E402
from hetrain.protocol import runner as runner_mod  # noqa: E402
from hetrain.protocol import transport  # noqa: E402
from hetrain.protocol.errors import ServerError  # noqa: E402
from hetrain.protocol.transport import HttpTransport, decode_frame, encode_frame, serve_http  # noqa: E402

from jobkit import make_job  # noqa: E402
from servicekit import DEADLINE_S, Service, assert_error  # noqa: E402

FAKE_SERVER = r'''
import json, os, pathlib, socket, sys
from hetrain.protocol.events import write_progress
from hetrain.protocol.refresh_channel import recv_frame, send_frame

jobdir, path = pathlib.Path(sys.argv[1]), sys.argv[sys.argv.index("--channel") + 1]
cfg = json.loads((jobdir / "job.json").read_text())["fake"]
log = []

def fail(msg):
    (jobdir / "server_error.json").write_text(json.dumps({"type": "FakeError", "message": msg, "user_error": True}))
    sys.exit(2)

if os.path.exists(path):
    os.unlink(path)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(1)
listener.settimeout(60)
connections = 0

def connect():
    global connections
    conn, _ = listener.accept()
    connections += 1
    send_frame(conn, {"op": "hello", "key_id": "k"})
    h, _, _ = recv_frame(conn, timeout=60)
    if h.get("op") != "ok":
        fail(f"hello answered with {h}")
    return conn

conn = connect()
i, dropped = 0, set()
while i < cfg["requests"]:
    blob = bytes([i % 256]) * cfg["blob"] + i.to_bytes(4, "big")
    send_frame(conn, {"op": "refresh", "seq": i}, [blob])
    write_progress(sys.stdout, i, cfg["requests"], f"request {i}")
    if i in cfg.get("drop_at", []) and i not in dropped:  # the connection breaks: send it again on the next
        dropped.add(i)
        conn.close()
        conn = connect()
        continue
    h, b, _ = recv_frame(conn, timeout=60)
    if h.get("op") == "error":
        fail(f"the client refused: {h.get('code')}")
    if h.get("op") != "refreshed" or h.get("seq") != i or b != [blob[::-1]]:
        fail(f"wrong answer to request {i}: {h}")
    i += 1
send_frame(conn, {"op": "done"})
if recv_frame(conn, timeout=60)[0].get("op") != "bye":
    fail("no bye")
(jobdir / "outputs.bin").write_bytes(b"fake outputs")
(jobdir / "server_stats.json").write_text(json.dumps({"fake": True, "answers": i, "connections": connections,
                                                      "download_bytes": 12}))
'''


class FakeAnswerer:
    """What refresh_channel.ChannelAnswerer does, for the fake server's requests: one frame in, one out."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.done, self.answered, self.fail_at = False, [], fail_at

    def answer(self, header, blobs):
        op = header.get("op")
        if op == "hello":
            return {"op": "ok", "key_id": header.get("key_id")}, []
        if op == "done":
            self.done = True
            return {"op": "bye"}, []
        if header.get("seq") == self.fail_at:
            raise RuntimeError("the client's check refused the state")
        self.answered.append(header["seq"])
        return {"op": "refreshed", "seq": header["seq"]}, [b[::-1] for b in blobs]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("relay"), max_upload_bytes=256 * 2**20)
    yield s
    s.stop()


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The service's server processes run FAKE_SERVER (the real runner starts and follows them)."""
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)

    starts = []

    def argv(jobdir, *, progress=True, trainer_modules=(), channel=None, channel_timeout=None, resume=False,
             workers=None):
        starts.append({"jobdir": str(jobdir), "channel": channel, "channel_timeout": channel_timeout,
                       "resume": resume})
        return [sys.executable, str(script), str(jobdir)] + (["--channel", str(channel)] if channel else [])

    monkeypatch.setattr(runner_mod, "server_argv", argv)
    return starts


@pytest.fixture(scope="module")
def client_bundle(tmp_path_factory):
    """A real (sim) data owner's encryption (its engine, the ciphertexts and job.json of its bundle),
    to write bundles with any job.json."""
    X, y = load_builtin("iris")
    kit = make_job(tmp_path_factory.mktemp("owner"), X[::3], y[::3], "mlr", {"iterations": 1, "sigmoid": "deg3:16"},
                   backend="sim", preset="n16384")
    inputs = files.read_ciphertext_map(kit.jobdir / files.INPUTS, kit.engine, "inputs")
    job = json.loads((kit.jobdir / files.JOB).read_text())
    assert job["refresh"] == "none" and job["channel"] is False
    return kit.engine, inputs, job


def write_bundle(d, client_bundle, **fake):
    engine, inputs, job = client_bundle
    # refresh "client": the data owner answers, so the server opens the channel
    files.write_job(d, engine, inputs, {**job, "refresh": "client", "channel": True,
                                        "fake": {"requests": 4, "blob": 3000, **fake}})
    return d


def upload(service, d) -> str:
    r = service.upload(d)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def poll(service, job_id, wait=10.0) -> httpx.Response:
    return service.http.get(f"/v1/jobs/{job_id}/channel", params={"wait": wait})


def answer(service, job_id, r: httpx.Response, answerer) -> httpx.Response:
    reply, out = answerer.answer(*decode_frame(r.content))
    return service.http.post(f"/v1/jobs/{job_id}/channel/{r.headers['X-Hetrain-Seq']}", content=encode_frame(reply, out))


# ---------------------------------------------------------------------- the HTTP endpoints
def test_frames_relayed_one_at_a_time_with_their_refusals(service, fake, client_bundle, tmp_path):
    job_id = upload(service, write_bundle(tmp_path / "b", client_bundle, requests=2))
    ans = FakeAnswerer()
    r = poll(service, job_id)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    seq = int(r.headers["X-Hetrain-Seq"])
    assert decode_frame(r.content)[0]["op"] == "hello"
    again = poll(service, job_id, wait=0)  # not consumed by reading: a data owner who drops gets it again
    assert again.headers["X-Hetrain-Seq"] == str(seq) and again.content == r.content
    path = f"/v1/jobs/{job_id}/channel"
    assert_error(service.http.post(f"{path}/{seq + 1}", content=b"x"), 409, "not pending")
    assert_error(service.http.post(f"{path}/abc", content=b"x"), 400, "non-negative integer")
    assert_error(service.http.post(f"{path}/{seq}", content=b"XXXX" + bytes(12)), 400, "not a refresh-channel frame")
    assert_error(service.http.post(f"{path}/{seq}", content=b"HTRF"), 400, "too short")
    good = encode_frame({"op": "ok", "key_id": "k"})
    assert_error(service.http.post(f"{path}/{seq}", content=good + b"!"), 400, "announces")
    assert_error(service.http.post(f"{path}/{seq}", content=good[:16] + b"{not json}"[:len(good) - 16]), 400)
    # larger than max(2 x request, 1 MiB): refused from the frame's prefix, before the body
    huge = struct.pack(">4sIQ", b"HTRF", 2, 5 << 20) + b"{}"

    def body():
        yield huge
        time.sleep(0.2)  # a real client would still be sending

    assert_error(service.http.post(f"{path}/{seq}", content=body()), 413, "larger than this request's limit")
    # a declared Content-Length over the limit: answered at once, the body is never read
    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(f"POST {path}/{seq} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {service.token(job_id)}\r\n"
                    f"Content-Length: {3 << 20}\r\n\r\nHTRF".encode())
        reply = b""
        while b"}" not in reply and (chunk := raw.recv(4096)):
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "larger than this request's limit" in reply, reply
    ok = answer(service, job_id, r, ans)
    assert ok.status_code == 200 and ok.json() == {"id": job_id, "seq": seq, "accepted": True}
    assert_error(answer(service, job_id, r, ans), 409, "not pending")  # answered already
    while (r := poll(service, job_id)).status_code != 410:
        assert r.status_code in (200, 204), r.text
        if r.status_code == 200:
            assert answer(service, job_id, r, ans).status_code == 200
    st = service.wait(job_id)
    assert st["status"] == "done" and st["stats"]["answers"] == 2 and ans.done and ans.answered == [0, 1]
    assert st["refresh"] == "client"
    ch = st["channel"]
    assert ch["requests"] == ch["answers"] == 4 and ch["connections"] == 1  # hello, 2 requests, done
    assert ch["bytes_to_client"] > 6000 and ch["bytes_to_server"] > 6000 and ch["polls"] >= 5
    assert_error(poll(service, job_id, wait=0), 410, "done")
    assert_error(service.http.post(f"{path}/1", content=good), 410, "done")
    service.http.delete(f"/v1/jobs/{job_id}")


def test_jobs_without_a_channel_and_unknown_jobs(service, fake, client_bundle, tmp_path):
    engine, inputs, job = client_bundle
    files.write_job(tmp_path / "plain", engine, inputs, job)  # refresh "none": no channel
    job_id = upload(service, tmp_path / "plain")
    assert_error(poll(service, job_id, wait=0), 410, "no refresh channel", "'none'")
    assert service.wait(job_id)["channel"] is None
    service.http.delete(f"/v1/jobs/{job_id}")
    assert_error(poll(service, "AAAAAAAAAAAAAAAAAAAAAA"), 401, "Bearer")
    unknown = service.http.get("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA/channel", headers={"Authorization": "Bearer x" * 5})
    assert_error(unknown, 404, "no job with id")
    job_id = upload(service, write_bundle(tmp_path / "b", client_bundle))
    assert_error(service.http.get(f"/v1/jobs/{job_id}/channel", params={"wait": "soon"}), 400, "number of seconds")
    assert poll(service, job_id).status_code == 200
    service.http.delete(f"/v1/jobs/{job_id}")  # the server waits for its data owner: deleting ends it
    assert_error(poll(service, job_id, wait=0), 404)


# ---------------------------------------------------------------------- serve_http, drops on both sides
def test_serve_http_answers_until_done(service, fake, client_bundle, tmp_path):
    job_id = upload(service, write_bundle(tmp_path / "b", client_bundle, requests=5))
    ans = FakeAnswerer()
    stats = serve_http(service.url, job_id, None, None, token=service.token(job_id), answerer=ans, poll_wait=5)
    st = service.wait(job_id)
    assert st["status"] == "done" and ans.done and ans.answered == [0, 1, 2, 3, 4]
    assert stats.round_trips == 7 and stats.refreshes == 5  # hello + 5 + done
    assert stats.bytes_to_client == st["channel"]["bytes_to_client"]
    assert stats.bytes_to_server == st["channel"]["bytes_to_server"]
    service.http.delete(f"/v1/jobs/{job_id}")


def test_the_server_side_connection_drops_and_the_relay_reconnects(service, fake, client_bundle, tmp_path):
    job_id = upload(service, write_bundle(tmp_path / "b", client_bundle, requests=5, drop_at=[1, 3]))
    ans = FakeAnswerer()
    stats = serve_http(service.url, job_id, None, None, token=service.token(job_id), answerer=ans, poll_wait=5)
    st = service.wait(job_id)
    assert st["status"] == "done", st
    assert st["stats"]["connections"] == 3 and st["channel"]["connections"] == 3
    assert sorted(set(ans.answered)) == [0, 1, 2, 3, 4] and ans.done
    assert stats.round_trips >= 9  # 3 hellos + 5 + done (+ answers to dropped requests that arrived in time)
    service.http.delete(f"/v1/jobs/{job_id}")


def test_the_data_owner_comes_and_goes(service, fake, client_bundle, tmp_path):
    job_id = upload(service, write_bundle(tmp_path / "b", client_bundle, requests=6))
    ans = FakeAnswerer()
    # session 1: answers hello and two requests, then leaves
    stop = threading.Event()

    class Leaving(FakeAnswerer):
        def answer(self, header, blobs):
            out = ans.answer(header, blobs)
            if len(ans.answered) == 2:
                stop.set()
            return out

    first = serve_http(service.url, job_id, None, None, token=service.token(job_id), answerer=Leaving(), poll_wait=2,
                       stop=stop)
    assert first.round_trips == 3 and service.http.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    # session 2: fetches the next request and vanishes without answering
    r = poll(service, job_id)
    assert r.status_code == 200 and decode_frame(r.content)[0]["seq"] == 2
    time.sleep(0.5)  # nobody attached: the job waits
    assert service.http.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    # session 3: the same request again, then to the end
    third = serve_http(service.url, job_id, None, None, token=service.token(job_id), answerer=ans, poll_wait=2)
    st = service.wait(job_id)
    assert st["status"] == "done" and ans.answered == [0, 1, 2, 3, 4, 5] and ans.done
    assert first.round_trips + third.round_trips == st["channel"]["answers"] == 8
    service.http.delete(f"/v1/jobs/{job_id}")


def test_a_refusing_data_owner_stops_the_job_with_a_fixed_code(service, fake, client_bundle, tmp_path):
    job_id = upload(service, write_bundle(tmp_path / "b", client_bundle, requests=4))
    with pytest.raises(RuntimeError, match="check refused"):
        serve_http(service.url, job_id, None, None, token=service.token(job_id), answerer=FakeAnswerer(fail_at=2),
                   poll_wait=2)
    st = service.wait(job_id)
    assert st["status"] == "failed" and st["error"] == "the client refused: client_refused"
    service.http.delete(f"/v1/jobs/{job_id}")


def test_serve_http_retries_then_gives_up_on_an_unreachable_service():
    t0 = time.monotonic()
    with pytest.raises(ServerError, match="cannot reach the training service at http://127.0.0.1:9"):
        serve_http("http://127.0.0.1:9", "AAAAAAAAAAAAAAAAAAAAAA", None, None, answerer=FakeAnswerer(), give_up_s=1.0)
    assert 1.0 <= time.monotonic() - t0 < 15


def test_a_lost_service_connection_is_retried_not_fatal(service, fake, client_bundle, tmp_path, monkeypatch):
    job_id = upload(service, write_bundle(tmp_path / "b", client_bundle, requests=4))
    real_send = httpx.Client.send
    failures = {"get": 2, "post": 2}

    def flaky(self, request, **kw):  # the first two polls and the first two answers never arrive
        kind = request.method.lower()
        if "/channel" in request.url.path and failures.get(kind, 0) > 0:
            failures[kind] -= 1
            raise httpx.ConnectError("connection reset by peer (test)")
        return real_send(self, request, **kw)

    monkeypatch.setattr(httpx.Client, "send", flaky)
    ans = FakeAnswerer()
    stats = serve_http(service.url, job_id, None, None, token=service.token(job_id), answerer=ans, poll_wait=2)
    assert service.wait(job_id)["status"] == "done" and ans.answered == [0, 1, 2, 3]
    assert failures == {"get": 0, "post": 0} and stats.round_trips == 6
    service.http.delete(f"/v1/jobs/{job_id}")


# ---------------------------------------------------------------------- HttpTransport
def test_http_transport_answers_while_it_follows_the_job(service, fake, client_bundle, tmp_path, monkeypatch):
    d = write_bundle(tmp_path / "b", client_bundle, requests=3, drop_at=[1])
    with pytest.raises(ServerError, match="needs refresh_handler"):
        HttpTransport(service.url).run(d, progress=False)
    made = []

    def make(engine, handler, job_id):
        made.append((engine, handler, job_id))
        return FakeAnswerer()

    monkeypatch.setattr(transport, "make_answerer", make)
    stats = HttpTransport(service.url, poll_wait=2).run(d, False, refresh_handler="H", client_engine="E",
                                                        job_id="J")
    assert made[0] == ("E", "H", "J")
    assert stats["fake"] is True and (d / files.OUTPUTS).read_bytes() == b"fake outputs"
    ch = stats["client_channel"]
    assert ch["round_trips"] >= 6 and ch["refreshes"] >= 3 and ch["bytes_to_client"] > 9000
    assert json.loads((d / files.SERVER_STATS).read_text())["client_channel"] == ch
    assert service.http.get("/v1/health").json()["jobs"]["running"] == 0


def test_http_transport_stops_the_job_when_its_answers_fail(service, fake, client_bundle, tmp_path, monkeypatch):
    d = write_bundle(tmp_path / "b", client_bundle, requests=3)
    monkeypatch.setattr(transport, "make_answerer", lambda *a: FakeAnswerer(fail_at=1))
    with pytest.raises(RuntimeError, match="check refused"):
        HttpTransport(service.url, poll_wait=2).run(d, False, refresh_handler="H", client_engine="E")
    deadline = time.monotonic() + DEADLINE_S  # the job was deleted: nothing left running
    while service.http.get("/v1/health").json()["jobs"]["running"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert np.isfinite(0.0)


def test_a_job_stopped_with_the_service_resumes_with_its_channel_on_restart(fake, client_bundle, tmp_path):
    from hetrain.service.jobs import STATE, JobQueue

    starts = fake
    job_dir = write_bundle(tmp_path / "jobs" / "AAAAAAAAAAAAAAAAAAAAAA", client_bundle, requests=2)
    (job_dir / STATE).write_text(json.dumps({"id": job_dir.name, "status": "queued"}))
    jobs = JobQueue(tmp_path)
    try:
        job = jobs.get(job_dir.name)
        assert job.refresh == "client" and job.relay is not None  # read from job.json (an old state has no field)
        got = job.relay.wait_request(DEADLINE_S)  # the server waits for its data owner at hello
        assert got is not None and decode_frame(bytes(got[1]))[0]["op"] == "hello"
    finally:
        jobs.close()
    state = json.loads((job_dir / STATE).read_text())
    assert state["status"] == "running" and state["channel"]["requests"] == 1  # killed by close: not failed
    jobs = JobQueue(tmp_path)
    try:
        job = jobs.get(job_dir.name)
        ans = FakeAnswerer()
        deadline = time.monotonic() + DEADLINE_S
        while job.status != "done":
            assert time.monotonic() < deadline and job.status in ("queued", "running"), job.error
            got = job.relay.wait_request(1.0)
            if got is not None:
                reply, out = ans.answer(*decode_frame(bytes(got[1])))
                assert job.relay.answer(got[0], encode_frame(reply, out))
        assert ans.answered == [0, 1] and starts[-1]["resume"] is True and starts[0]["resume"] is False
        while json.loads((job_dir / STATE).read_text())["status"] != "done":  # saved after the status is set
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert json.loads((job_dir / STATE).read_text())["resume"] is False
    finally:
        jobs.close()


# ---------------------------------------------------------------------- end to end: the real server
def _iris():
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)  # 150 rows: the client keeps 30 (0.2) for validation, trains on 120


class _LeavesAfter:
    """The data owner's answerer that ends its HTTP session (``stop``) after ``k`` answers."""

    def __init__(self, answerer, k: int, stop: threading.Event) -> None:
        self.inner, self.k, self.stop = answerer, k, stop

    def answer(self, header, blobs):
        out = self.inner.answer(header, blobs)
        self.k -= 1
        if self.k <= 0:
            self.stop.set()
        return out

    def __getattr__(self, name):  # failure, stats, done
        return getattr(self.inner, name)


def test_minibatch_mlr_through_the_service_with_the_data_owner_dropping_mid_run(service, tmp_path):
    from hetrain.protocol.refresh_channel import ChannelAnswerer

    X, y = _iris()
    cfg = {"epochs": 3, "batch_size": 64, "learning_rate": 0.5, "patience": 0}  # 6 steps, a refresh before 5

    def new_job(name):
        kit = make_job(tmp_path, X, y, "mlr", cfg, backend="sim", preset="n16384", refresh="client",
                       jobdir=tmp_path / name, plan=False, validation_fraction=0.2)
        assert kit.job.Xp.shape[0] == 120 and kit.job.Xv.shape[0] == 30
        return kit, kit.handler

    def weights(kit, jobdir):
        outputs = files.unpack_ciphertexts(kit.engine, files.read_bytes(jobdir / files.OUTPUTS, "outputs"), "outputs")
        return kit.job.trainer.client_decrypt(kit.engine, outputs, {"d": kit.job.Xp.shape[1], "c": kit.job.Y.shape[1]})["W"]

    def history(kit):  # the client's validation record of the job (kept in KEYS/jobs/<job id>/)
        return kit.job.validation(kit.engine, kit.keys.job_dir(kit.job_id)).history

    # without a drop: HttpTransport.run answers in a thread while it follows the job
    ref, ref_handler = new_job("ref")
    stats = HttpTransport(service.url, poll_wait=5).run(tmp_path / "ref", False,
                                                        refresh_handler=ref_handler, client_engine=ref.engine,
                                                        job_id=ref.job_id)
    W_ref = weights(ref, tmp_path / "ref")
    ch = stats["client_channel"]
    assert stats["refresh"]["round_trips"] == 5 and ch["round_trips"] == 7  # hello + 5 + done
    assert ch["refreshes"] == 5 and ch["evaluations"] == 2 and ch["bytes_to_client"] > 0

    # with drops: session 1 answers hello and two requests, then leaves; session 2 takes the next
    # request and vanishes without answering; session 3 (the same data owner, same answerer) finishes
    job, handler = new_job("drop")
    job_id = upload(service, tmp_path / "drop")
    answerer = ChannelAnswerer(job.engine, handler, job.job_id)
    stop = threading.Event()
    first = serve_http(service.url, job_id, job.engine, handler, token=service.token(job_id),
                       answerer=_LeavesAfter(answerer, 3, stop),
                       poll_wait=2, stop=stop)
    assert first.round_trips == 3 and service.http.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    r = poll(service, job_id)
    assert r.status_code == 200 and decode_frame(r.content)[0]["op"] in ("refresh", "evaluate")
    time.sleep(0.5)
    assert service.http.get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # the job waits for its data owner
    third = serve_http(service.url, job_id, job.engine, handler, token=service.token(job_id), answerer=answerer, poll_wait=2)
    st = service.wait(job_id)
    assert st["status"] == "done", st
    assert first.round_trips + third.round_trips == 7 and st["stats"]["refresh"]["round_trips"] == 5
    # HTTP sessions came and went; the relay kept its one connection: the server saw one session
    assert st["channel"]["connections"] == 1 and st["channel"]["answers"] == 7
    assert st["stats"]["refresh"]["attaches"] == 1 and st["stats"]["refresh"]["resent"] == 0
    r = service.http.get(f"/v1/jobs/{job_id}/result")
    (tmp_path / "drop" / files.OUTPUTS).write_bytes(r.content)
    service.http.delete(f"/v1/jobs/{job_id}")
    W = weights(job, tmp_path / "drop")
    # the same run: sim arithmetic without noise, the same steps, refreshes and evaluations
    np.testing.assert_allclose(W, W_ref, rtol=0, atol=1e-9)
    accuracies = [h.get("val_accuracy") for h in history(job)]
    assert len(accuracies) >= 5 and accuracies == [h.get("val_accuracy") for h in history(ref)]
    assert np.abs(W).max() > 0.05


def test_a_long_job_directory_gets_a_short_socket_path_that_is_removed(fake, client_bundle, tmp_path):
    import glob
    import pathlib
    import tempfile

    from hetrain.service.jobs import STATE, JobQueue

    starts = fake
    work = tmp_path / ("w" * 90)  # JOBDIR/refresh.sock would be too long for a Unix socket
    job_dir = write_bundle(work / "jobs" / "AAAAAAAAAAAAAAAAAAAAAA", client_bundle, requests=1)
    (job_dir / STATE).write_text(json.dumps({"id": job_dir.name, "status": "queued"}))
    before = set(glob.glob(f"{tempfile.gettempdir()}/hetrain-ch-*"))
    jobs = JobQueue(work)
    try:
        job, ans = jobs.get(job_dir.name), FakeAnswerer()
        deadline = time.monotonic() + DEADLINE_S
        while job.status != "done":
            assert time.monotonic() < deadline and job.status in ("queued", "running"), job.error
            got = job.relay.wait_request(1.0)
            if got is not None:
                assert job.relay.answer(got[0], encode_frame(*ans.answer(*decode_frame(bytes(got[1])))))
        assert len(str(starts[0]["channel"])) < 100 and not str(starts[0]["channel"]).startswith(str(work))
    finally:
        jobs.close()
    channel = pathlib.Path(starts[0]["channel"])
    assert channel.parent.name.startswith("hetrain-ch-") and str(channel.parent) not in before
    # its short directory is removed with the job (other processes may make their own meanwhile)
    assert not channel.parent.exists()


@pytest.mark.slow  # SEAL end to end, 9-15 s on 2 shared cores (pytest --durations)
def test_fit_server_client_refresh_under_real_seal(tmp_path):
    """Real CKKS (SEAL, n16384): mini-batch mlr through the service with the data owner refreshing
    over HTTP; every decrypted state is checked against the twin on the way, and the released model
    matches its twin within CKKS noise."""
    from hetrain.protocol import fit

    X, y = load_builtin("iris")
    svc = Service(tmp_path / "svc", max_upload_bytes=1024 * 2**20)
    try:
        r = fit(X, y, "mlr", {"epochs": 2, "batch_size": 64, "patience": 0}, backend="seal", preset="n16384",
                plan=False, progress=False, server=svc.url)
    finally:
        svc.stop()
    s = r.stats
    assert s["steps"] == 4 and s["round_trips"] >= 3 and s["refresh"]["mode"] == "client"
    assert s["twin_max_abs_diff"] < 1e-3 and s["twin_best_max_abs_diff"] < 1e-3
    assert s["server_engine_has_secret_key"] is False and r.model.accuracy(X, y) > 0.7
