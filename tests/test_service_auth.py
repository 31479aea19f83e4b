"""The service, hardened (issue 13, items 1 and 3): per-job bearer tokens, API keys, private
directories and log lines, TLS, and errors that are JSON with a meaningful status and never a
traceback or an internal path.

Services run as in test_service.py (uvicorn in a thread on 127.0.0.1) or, for the command line,
as a `hetrain serve` child process.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import pathlib
import shutil
import ssl
import stat
import struct
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from hetrain.ckks import collection  # noqa: E402
from hetrain.ckks.container import MAGIC  # noqa: E402
from hetrain.cli.main import main  # noqa: E402
from hetrain.errors import HetrainUserError  # noqa: E402
from hetrain.protocol import ServerError, files  # noqa: E402
from hetrain.protocol import runner as runner_mod  # noqa: E402
from hetrain.protocol.transport import (HttpTransport, RemoteJob, load_remote, save_remote,  # noqa: E402
                                        tar_stream)
from hetrain.service import upload as upload_mod  # noqa: E402
from hetrain.service.app import INTERNAL_ERROR, create_app  # noqa: E402
from hetrain.service.auth import dir_name, tag  # noqa: E402
from hetrain.service.jobs import SERVER_PROCESS_FAILED, STATE  # noqa: E402

from servicekit import (service_fixture, Service, with_manifest_sha, assert_error, bundle_members,  # noqa: E402
                          make_bundle, tar_of)

API_KEY = "k3y-" + "a" * 28


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, iris_third):
    kit, job = make_bundle(tmp_path_factory.mktemp("bundle"), iris_third)
    return kit.jobdir


service = service_fixture("auth", max_upload_bytes=256 * 2**20)


@pytest.fixture
def raw(service):
    """A client that holds no token."""
    with httpx.Client(base_url=service.url, timeout=30) as c:
        yield c


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_clean(r: httpx.Response, *secrets: str) -> None:
    """An error answer: JSON {"error": str}, no traceback, no internal path, none of ``secrets``."""
    assert r.headers["content-type"].startswith("application/json"), (r.status_code, r.text)
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    for bad in ("Traceback", "/src/", "/tmp/", 'File "', *secrets):
        assert bad not in r.text, (bad, r.text)


# ---------------------------------------------------------------------- tokens
def test_every_job_endpoint_needs_the_jobs_token(service, raw, bundle):
    first = raw.post("/v1/jobs", content=b"".join(tar_stream(bundle)))
    other = raw.post("/v1/jobs", content=b"".join(tar_stream(bundle)))
    assert first.status_code == other.status_code == 201, first.text
    job_id, token = first.json()["id"], first.json()["token"]
    assert set(first.json()) == {"id", "token", "status"} and len(token) >= 43 and token != other.json()["token"]
    endpoints = [("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/result"),
                 ("GET", f"/v1/jobs/{job_id}/channel?wait=0"), ("POST", f"/v1/jobs/{job_id}/channel/1"),
                 ("DELETE", f"/v1/jobs/{job_id}")]
    unknown = raw.get("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA", headers=bearer(token))
    assert_error(unknown, 404, "no job with id")
    for method, path in endpoints:
        for headers in ({}, {"Authorization": f"Basic {token}"}, {"Authorization": "Bearer"}, {"X-Token": token}):
            r = raw.request(method, path, headers=headers, content=b"x" if method == "POST" else None)
            assert_error(r, 401, "Authorization: Bearer")
            assert r.headers["www-authenticate"] == "Bearer"
            assert_clean(r, token)
        for wrong in ("x" * 43, token[:-1] + ("A" if token[-1] != "A" else "B"), other.json()["token"]):
            r = raw.request(method, path, headers=bearer(wrong), content=b"x" if method == "POST" else None)
            # 404, as for an id that does not exist: without the token nobody learns whether it does
            assert_error(r, 404, "no job with id")
            assert r.json()["error"].replace(job_id, "ID") == unknown.json()["error"].replace("AAAAAAAAAAAAAAAAAAAAAA", "ID")
            assert_clean(r, token)
    # the right token opens each of them (the channel: 410, this job asks its data owner nothing)
    auth = bearer(token)
    assert raw.get(f"/v1/jobs/{job_id}", headers=auth).json()["id"] == job_id
    assert raw.get(f"/v1/jobs/{job_id}/result", headers=auth).status_code in (200, 409)
    assert_error(raw.get(f"/v1/jobs/{job_id}/channel", headers=auth), 410, "no refresh channel")
    assert_error(raw.post(f"/v1/jobs/{job_id}/channel/1", headers=auth, content=b"x"), 410)
    r = raw.delete(f"/v1/jobs/{job_id}", headers=auth)
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert_error(raw.get(f"/v1/jobs/{job_id}", headers=auth), 404)
    assert raw.delete(f"/v1/jobs/{other.json()['id']}", headers=bearer(other.json()["token"])).status_code == 200
    assert raw.get("/v1/health").status_code == 200  # health needs nothing


def test_client_steps_carry_the_token(service, bundle, tmp_path, monkeypatch):
    job = tmp_path / "job"
    shutil.copytree(bundle, job)
    transport = HttpTransport(service.url)
    remote = transport.submit(job, progress=False)
    assert isinstance(remote, RemoteJob) and remote.url == service.url and remote.token not in repr(remote)
    path = save_remote(job, remote)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": service.url, "id": remote.id, "token": remote.token}
    # refresh/decrypt --server find the id and token there; --remote-job with $HETRAIN_JOB_TOKEN otherwise
    monkeypatch.delenv("HETRAIN_JOB_TOKEN", raising=False)
    assert load_remote(job, service.url + "/") == remote
    assert load_remote(job, service.url, remote.id) == remote
    with pytest.raises(HetrainUserError, match="HETRAIN_JOB_TOKEN"):
        load_remote(job, service.url, "BBBBBBBBBBBBBBBBBBBBBB")  # another job: remote.json's token is not its
    with pytest.raises(HetrainUserError, match=f"is for the service at {service.url}"):
        load_remote(job, "http://127.0.0.1:9")  # never send a token to another service
    with pytest.raises(HetrainUserError, match="--remote-job ID"):
        load_remote(tmp_path, service.url)
    monkeypatch.setenv("HETRAIN_JOB_TOKEN", "from-env")
    assert load_remote(tmp_path, service.url, "CCCCCCCCCCCCCCCCCCCCCC").token == "from-env"
    with pytest.raises(HetrainUserError, match="no token"):
        HttpTransport(service.url).fetch(remote.id, job, progress=False)
    with pytest.raises(ServerError, match="HTTP 404"):
        HttpTransport(service.url, token="from-env").fetch(remote.id, job, progress=False)
    stats = HttpTransport(service.url, token=remote.token).fetch(remote.id, job, progress=False)
    assert stats["server_train_s"] > 0 and (job / files.OUTPUTS).is_file()
    assert service.http.get("/v1/health").json()["jobs"]["done"] == 0  # fetch deleted it


# ---------------------------------------------------------------------- API keys
def test_api_keys_say_who_may_submit(tmp_path, bundle, monkeypatch):
    s = Service(tmp_path / "w", api_keys=[API_KEY, "another-key-0123456789"])
    try:
        with httpx.Client(base_url=s.url, timeout=30) as raw:
            body = b"".join(tar_stream(bundle))
            r = raw.post("/v1/jobs", content=body)
            assert_error(r, 401, "API key")
            assert r.headers["www-authenticate"] == "Bearer"
            assert_error(raw.post("/v1/jobs", content=body, headers=bearer("not-a-key-" * 3)), 403, "API key")
            assert raw.get("/v1/health").status_code == 200
            r = raw.post("/v1/jobs", content=body, headers=bearer("another-key-0123456789"))
            assert r.status_code == 201, r.text
            job_id, token = r.json()["id"], r.json()["token"]
            # the API key is not a job's token: the job answers its own token only
            assert_error(raw.get(f"/v1/jobs/{job_id}", headers=bearer(API_KEY)), 404)
            assert raw.delete(f"/v1/jobs/{job_id}", headers=bearer(token)).status_code == 200
        monkeypatch.delenv("HETRAIN_API_KEY", raising=False)
        with pytest.raises(ServerError, match=r"HTTP 401.*--api-key or \$HETRAIN_API_KEY"):
            HttpTransport(s.url).run(bundle, progress=False)
        with pytest.raises(ServerError, match="HTTP 403"):
            HttpTransport(s.url, api_key="wrong-key-0123456789").run(bundle, progress=False)
        monkeypatch.setenv("HETRAIN_API_KEY", API_KEY)
        assert HttpTransport(s.url).run(bundle, progress=False)["server_train_s"] > 0
    finally:
        s.stop()
    # nothing of the keys on disk
    for path in (tmp_path / "w").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert API_KEY.encode() not in data and hashlib.sha256(API_KEY.encode()).hexdigest().encode() not in data


def test_serve_reads_api_keys_from_a_file_and_the_environment(tmp_path, monkeypatch):
    from hetrain.cli.serve import load_api_keys

    f = tmp_path / "keys"
    f.write_text(f"# service keys\n{API_KEY}\n\n  another-key-0123456789  \n")
    os.chmod(f, 0o600)
    assert load_api_keys(str(f), None) == [API_KEY, "another-key-0123456789"]
    assert load_api_keys(None, f" {API_KEY} ,third-key-0123456789,") == [API_KEY, "third-key-0123456789"]
    with pytest.raises(HetrainUserError, match="shorter than 16"):
        load_api_keys(None, "short")
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(HetrainUserError, match="holds no API key"):
        load_api_keys(str(tmp_path / "empty"), None)


# ---------------------------------------------------------------------- nothing readable by others
def test_tokens_ids_directories_and_log_lines(tmp_path, bundle):
    work = tmp_path / "work"
    work.mkdir(mode=0o755)
    os.chmod(work, 0o755)
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(f"{record.name}: {record.getMessage()}")

    handler, loggers = Keep(), [logging.getLogger(n) for n in ("hetrain.service", "uvicorn.access", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    s = Service(work, uvicorn_options={"log_level": "info"})  # uvicorn (re)configures its loggers: then ours
    for lg in loggers:
        lg.addHandler(handler)
    logging.getLogger("hetrain.service").setLevel(logging.INFO)
    try:
        r = s.upload(bundle)
        job_id, token = r.json()["id"], r.json()["token"]
        st = s.wait(job_id)
        assert st["status"] == "done"
        s.http.get(f"/v1/jobs/{job_id}/channel")
        assert s.http.get(f"/v1/jobs/{job_id}/result").status_code == 200
        jobdir = work / "jobs" / dir_name(job_id)
        assert jobdir.is_dir() and dir_name(job_id).startswith(tag(job_id))
        for d in (work, work / "jobs", work / "incoming", jobdir):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        state = json.loads((jobdir / STATE).read_text())
        assert state["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
        for path in work.rglob("*"):
            assert job_id not in path.name and token not in str(path)
            if path.is_file():
                data = path.read_bytes()
                assert token.encode() not in data, path
                assert path.name == STATE or job_id.encode() not in data, path  # the id: in state.json only
        assert s.http.delete(f"/v1/jobs/{job_id}").status_code == 200
    finally:
        s.stop()
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
    text = "\n".join(lines)
    assert f"job {tag(job_id)} queued" in text and f"/v1/jobs/job-{tag(job_id)}/result" in text, text
    assert job_id not in text and token not in text, text


# ---------------------------------------------------------------------- TLS
def self_signed(d: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM)."""
    cert, key = d / "cert.pem", d / "key.pem"
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a self-signed certificate (the cryptography package is not a dependency)")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


def test_tls_round_trip_with_a_private_ca_and_refusal_without_it(tmp_path, bundle, cert, monkeypatch):
    cert_file, key_file = cert
    s = Service(tmp_path / "w", scheme="https",
                uvicorn_options={"ssl_certfile": str(cert_file), "ssl_keyfile": str(key_file)},
                client_options={"verify": ssl.create_default_context(cafile=str(cert_file))})
    try:
        assert s.url.startswith("https://") and s.http.get("/v1/health").json()["status"] == "ok"
        monkeypatch.delenv("HETRAIN_SERVER_CA", raising=False)
        # the system's CAs do not know this certificate: refused before anything is sent
        with pytest.raises(ServerError, match="CERTIFICATE_VERIFY_FAILED"):
            HttpTransport(s.url).run(bundle, progress=False)
        assert s.http.get("/v1/health").json()["jobs"] == {"queued": 0, "running": 0, "done": 0, "failed": 0}
        stats = HttpTransport(s.url, ca=cert_file).run(bundle, progress=False)
        assert stats["server_train_s"] > 0
        monkeypatch.setenv("HETRAIN_SERVER_CA", str(cert_file))
        assert HttpTransport(s.url).run(bundle, progress=False)["server_train_s"] > 0
        with pytest.raises(HetrainUserError, match="cannot load the CA certificate"):
            HttpTransport(s.url, ca=tmp_path / "missing.pem").preflight()
        with pytest.raises(ServerError, match="cannot reach"):  # plain http to the TLS port
            HttpTransport(s.url.replace("https://", "http://")).preflight()
    finally:
        s.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_hetrain_serve_with_tls_and_api_keys_and_fit_through_it(tmp_path, cert, capsys, monkeypatch):
    cert_file, key_file = cert
    keys = tmp_path / "keys"
    keys.write_text(API_KEY + "\n")
    os.chmod(keys, 0o600)
    port = _free_port()
    url = f"https://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "wb")
    env = {k: v for k, v in os.environ.items() if k != "HETRAIN_API_KEYS"}
    proc = subprocess.Popen([sys.executable, "-m", "hetrain.cli.main", "serve", "--port", str(port), "--workdir",
                             str(tmp_path / "w"), "--tls-cert", str(cert_file), "--tls-key", str(key_file),
                             "--api-keys", str(keys)], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        ctx = ssl.create_default_context(cafile=str(cert_file))
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{url}/v1/health", timeout=2, verify=ctx).json()["status"] == "ok"
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        data = tmp_path / "iris.csv"
        assert main(["datasets", "export", "iris", "--out", str(data)]) == 0
        fit = ["fit", "--data", str(data), "--model", "mlr", "--refresh", "none", "--iterations", "1", "--sigmoid",
               "deg3:16", "--backend", "sim", "--preset", "n16384", "--quiet", "--server", url]
        monkeypatch.delenv("HETRAIN_SERVER_CA", raising=False)
        monkeypatch.delenv("HETRAIN_API_KEY", raising=False)
        capsys.readouterr()
        assert main([*fit, "--out", str(tmp_path / "a.json"), "--api-key", API_KEY]) == 1
        assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err  # no --server-ca: refused before any work
        assert main([*fit, "--out", str(tmp_path / "b.json"), "--server-ca", str(cert_file)]) == 1
        assert "HTTP 401" in capsys.readouterr().err  # no API key
        monkeypatch.setenv("HETRAIN_API_KEY", API_KEY)
        assert main([*fit, "--out", str(tmp_path / "m.json"), "--server-ca", str(cert_file)]) == 0
        out = capsys.readouterr().out
        job_id = out.split("service job id: ")[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    served = (tmp_path / "serve.log").read_text()
    assert f"on https://127.0.0.1:{port}" in served and "1 API key(s) may submit" in served, served
    assert f"/v1/jobs/job-{tag(job_id)}" in served and job_id not in served and API_KEY not in served, served


def test_serve_refuses_beyond_loopback_without_tls(tmp_path, capsys, cert):
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.org"):
        rc = main(["serve", "--host", host, "--workdir", str(tmp_path / "w")])
        err = capsys.readouterr().err
        assert rc == 1 and f"refusing to listen on {host} without TLS" in err, err
        assert "--tls-cert FILE --tls-key FILE" in err and "--insecure-bind" in err
    assert main(["serve", "--workdir", str(tmp_path / "w"), "--tls-cert", str(cert[0])]) == 1
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
    assert main(["serve", "--workdir", str(tmp_path / "w"), "--tls-cert", str(cert[0]),
                 "--tls-key", str(tmp_path / "none.pem")]) == 1
    assert "cannot load the TLS certificate" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # refused before anything was made
    # forced, or with TLS: past the bind check (to the next one: the API keys file that is not there)
    for extra in (["--insecure-bind"], ["--tls-cert", str(cert[0]), "--tls-key", str(cert[1])]):
        assert main(["serve", "--host", "0.0.0.0", "--workdir", str(tmp_path / "w"), "--api-keys",
                     str(tmp_path / "no-keys"), *extra]) == 1
        err = capsys.readouterr().err
        assert "cannot read the API keys" in err and "refusing" not in err, err


# ---------------------------------------------------------------------- errors: JSON, meaningful, clean
def _container(header) -> bytes:
    hb = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return MAGIC + struct.pack("<I", len(hb)) + hb + b"\0" * 64


def _malformed(members: dict[str, bytes]):
    nested = b"[" * 100_000 + b"]" * 100_000
    yield "manifest []", {**members, files.MANIFEST: b"[]"}
    yield "manifest string", {**members, files.MANIFEST: b'"x"'}
    yield "manifest null", {**members, files.MANIFEST: b"null"}
    yield "manifest nested", {**members, files.MANIFEST: nested}
    yield "manifest sha256 a list", {**members, files.MANIFEST: json.dumps(
        {**json.loads(members[files.MANIFEST]), "sha256": ["x"]}).encode()}
    yield "job.json nested", with_manifest_sha({**members, files.JOB: nested})
    yield "job.json []", with_manifest_sha({**members, files.JOB: b"[]"})
    for name, parts in [("parts a number", 5), ("parts of strings", ["x"]), ("parts a string", "abc"),
                        ("size not a number", [{"name": "a", "size": "big"}]),
                        ("negative size", [{"name": "a", "size": -1000}, {"name": "b", "size": 1}]),
                        ("huge size", [{"name": "a", "size": 10**30}, {"name": "b", "size": 1}]),
                        ("size a list", [{"name": "a", "size": [1]}])]:
        yield f"inputs {name}", with_manifest_sha(
            {**members, files.INPUTS: _container({"kind": collection.KIND, "version": collection.VERSION,
                                                "key_id": "x", "counts": {}, "parts": parts})})
    yield "inputs header nested", with_manifest_sha({**members, files.INPUTS: _container(nested)})
    yield "inputs header a list", with_manifest_sha({**members, files.INPUTS: _container([1, 2])})


def test_malformed_manifests_and_headers_are_400_json(service, raw, bundle):
    members = bundle_members(bundle)
    before = service.http.get("/v1/health").json()["jobs"]
    for what, body in _malformed(members):
        r = raw.post("/v1/jobs", content=tar_of(body))
        assert r.status_code == 400, (what, r.status_code, r.text)
        assert_clean(r)
        assert r.json()["error"].startswith("job bundle refused"), (what, r.text)
    assert service.http.get("/v1/health").json()["jobs"] == before  # nothing queued
    assert list((service.workdir / "incoming").iterdir()) == []  # nothing kept


def test_status_codes_and_bodies_of_every_refusal_are_json(service, raw):
    auth = bearer("t" * 43)
    for r in [raw.get("/v1/nothing"), raw.put("/v1/jobs"), raw.patch("/v1/health"),
              raw.get("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA"), raw.get("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA", headers=auth),
              raw.post("/v1/jobs", content=b"x" * 600), raw.post("/v1/jobs", content=b""),
              raw.get("/v1/jobs/%00%ff/result", headers=auth)]:
        assert r.status_code in (400, 401, 404, 405), (r.status_code, r.text)
        assert_clean(r)


def test_validation_errors_are_400_and_bugs_a_generic_500(tmp_path):
    import asyncio

    app = create_app(tmp_path)

    @app.get("/v1/test/typed")
    async def typed(n: int):
        return {"n": n}

    @app.get("/v1/test/bug")
    async def bug():
        raise RuntimeError(f"a bug at {tmp_path}/secret.txt")

    async def get(path, **kw):  # no lifespan: these routes need no queue
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, **kw)

    r = asyncio.run(get("/v1/test/typed", params={"n": "many"}))
    assert r.status_code == 400 and r.json() == {"error": "malformed request (query.n)"}, r.text
    assert "pydantic" not in r.text and "int_parsing" not in r.text
    r = asyncio.run(get("/v1/test/bug"))
    assert r.status_code == 500 and r.json() == {"error": INTERNAL_ERROR}
    assert str(tmp_path) not in r.text


def test_a_full_disk_during_upload_is_507(service, raw, bundle, monkeypatch):
    def full(f, sha, piece):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(upload_mod, "_write_and_hash", full)
    r = raw.post("/v1/jobs", content=b"".join(tar_stream(bundle)))
    assert_error(r, 507, "disk is full")
    assert_clean(r)
    assert list((service.workdir / "incoming").iterdir()) == []


FAILING_SERVER = r'''
import json, pathlib, sys
jobdir = pathlib.Path(sys.argv[1])
how = json.loads((jobdir / "job.json").read_text())["fail"]
if how == "crash":  # a bug before the server could write its error: a traceback in its log
    open("/nonexistent/" + str(jobdir) + "/x")
err = {"type": "OSError", "message": f"[Errno 28] No space left on device: '{jobdir}/state.ckpt'",
       "user_error": how == "user", "traceback": f'Traceback (most recent call last):\n  File "{jobdir}/x.py"'}
if how == "user":
    err["message"] = f"the job asks too much: see {jobdir}/job.json"
(jobdir / "server_error.json").write_text(json.dumps(err))
sys.exit(2)
'''


@pytest.mark.parametrize("how", ["crash", "bug", "user"])
def test_a_failed_job_says_what_a_client_may_read(service, bundle, tmp_path, monkeypatch, how):
    script = tmp_path / "failing_server.py"
    script.write_text(FAILING_SERVER)

    def argv(jobdir, *, progress=True, trainer_modules=(), channel=None, channel_timeout=None, resume=False,
             workers=None):
        return [sys.executable, str(script), str(jobdir)]

    monkeypatch.setattr(runner_mod, "server_argv", argv)
    members = bundle_members(bundle)
    job = {**json.loads(members[files.JOB]), "fail": how}
    members = with_manifest_sha({**members, files.JOB: json.dumps(job).encode()})
    r = service.http.post("/v1/jobs", content=tar_of(members))
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    st = service.wait(job_id)
    assert st["status"] == "failed"
    if how == "user":
        assert st["error"] == "the job asks too much: see job.json"
    else:
        assert st["error"] == SERVER_PROCESS_FAILED
    res = service.http.get(f"/v1/jobs/{job_id}/result")
    assert_error(res, 409, "failed")
    for answer in (service.http.get(f"/v1/jobs/{job_id}"), res):
        for bad in ("Traceback", "No space", "/tmp/", str(service.workdir), "File \""):
            assert bad not in answer.text, (bad, answer.text)
    with pytest.raises(ServerError) as caught:
        HttpTransport(service.url, token=service.token(job_id)).fetch(job_id, tmp_path, progress=False)
    assert "Traceback" not in str(caught.value)
    service.http.delete(f"/v1/jobs/{job_id}")
