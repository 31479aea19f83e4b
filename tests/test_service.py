"""The HTTP training service: full fits through HTTP (sim and SEAL), refusals, ids, cancellation, CLI.

Each service runs uvicorn in a thread of this process, bound to 127.0.0.1 on an ephemeral port,
and stops when its fixture ends. Every wait on it is bounded (DEADLINE_S).
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from hetrain.ckks import collection  # noqa: E402
from hetrain.ckks.container import pack, unpack  # noqa: E402
from hetrain.cli.main import main  # noqa: E402
from hetrain.protocol import ServerError, files, fit  # noqa: E402
from hetrain.protocol.transport import HttpTransport, tar_size, tar_stream  # noqa: E402
from hetrain.service.auth import dir_name  # noqa: E402

from servicekit import (service_fixture, CONFIG, DEADLINE_S, Service, assert_error, bundle_members, make_bundle,  # noqa: E402
                        tar_of, with_manifest_sha)


service = service_fixture("service", max_upload_bytes=256 * 2**20)


@pytest.fixture(scope="module")
def tiny_service(tmp_path_factory):
    """A service whose upload limit (64 KiB) is below any real bundle."""
    s = Service(tmp_path_factory.mktemp("tiny"), max_upload_bytes=64 * 1024)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sim_bundle(tmp_path_factory, iris_third):
    kit, job = make_bundle(tmp_path_factory.mktemp("bundle"), iris_third)
    return kit.jobdir, kit, job


# ---------------------------------------------------------------------- full fits through HTTP
def test_fit_through_http_sim_equals_local_pipeline(service, iris_third):
    X, y = iris_third
    kw = dict(preset="n16384", backend="sim", seed=0, progress=False)
    remote = fit(X, y, "mlr", CONFIG, server=service.url, **kw)
    local = fit(X, y, "mlr", CONFIG, **kw)
    # same seed, same bundle arithmetic, same server code: the released weights are identical
    for k, w in local.model.weights.items():
        np.testing.assert_array_equal(remote.model.weights[k], w)
    assert remote.twin_max_abs_diff < 1e-12  # sim without noise: float64 reordering only
    assert remote.stats["server_train_s"] > 0 and remote.stats["download_bytes"] > 0
    assert remote.stats["server_operations"]["rotate"]["count"] > 0
    assert service.http.get("/v1/health").json()["jobs"] == {"queued": 0, "running": 0, "done": 0, "failed": 0}


def test_fit_through_http_shows_the_servers_steps_in_the_display(service, iris_third):
    """Issue 17: the one display follows the service's training too (its status reports the steps)."""
    import io
    import re

    from hetrain.protocol.progress import RunProgress

    X, y = iris_third
    stream = io.StringIO()
    display = RunProgress(stream=stream, tty=False, out=io.StringIO())
    fit(X, y, "mlr", {"iterations": 3, "sigmoid": "deg3:16"}, preset="n16384-deep", backend="sim", progress=display,
        server=service.url)
    lines = stream.getvalue().splitlines()
    start = lines.index("train: started")
    steps = [ln for ln in lines[start:] if re.match(r"train: step \d+/3", ln)]
    assert steps, lines  # the server's iterations reached this side's display while it trained


def test_fit_through_http_seal_matches_twin(service, iris_third):
    X, y = iris_third
    r = fit(X, y, "mlr", CONFIG, preset="n8192", backend="seal", progress=False, server=service.url)
    # one iteration at scale 2^40: CKKS noise ~1e-6 (measured 4e-6 locally) on weights of order 0.1;
    # 1e-4 keeps a wide margin while any wrong product or lost ciphertext would be off by > 1e-2
    assert r.twin_max_abs_diff < 1e-4
    assert r.stats["params"] == "n8192" and r.model.accuracy(X, y) > 0.6
    stats = r.stats
    assert stats["server_peak_rss_bytes"] > 10 * 2**20  # measured in the service's server process


def test_raw_api_status_progress_result(service, sim_bundle):
    jobdir, kit, job = sim_bundle
    r = service.upload(jobdir)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert len(job_id) >= 16 and r.json()["status"] == "queued" and len(r.json()["token"]) >= 43
    st = service.wait(job_id)
    assert st["status"] == "done", st
    assert st["progress"]["done"] == st["progress"]["total"] == 1  # from the server's progress events
    assert st["timings"]["run_s"] > 0 and st["timings"]["server_train_s"] > 0 and st["error"] is None
    assert st["backend"] == "sim-INSECURE" and st["model"] == "mlr"
    res = service.http.get(f"/v1/jobs/{job_id}/result")
    assert res.status_code == 200
    outputs = files.unpack_ciphertexts(kit.engine, res.content, "outputs")
    trainer = kit.job.trainer
    weights = trainer.client_decrypt(kit.engine, outputs, job)
    twin = trainer.twin(kit.job.Xp, kit.job.Y)
    assert max(float(np.max(np.abs(weights[k] - twin[k]))) for k in weights) < 1e-12
    assert service.http.delete(f"/v1/jobs/{job_id}").json() == {"id": job_id, "deleted": True, "was": "done"}
    assert_error(service.http.get(f"/v1/jobs/{job_id}"), 404, job_id)
    assert not (service.workdir / "jobs" / dir_name(job_id)).exists()


# ---------------------------------------------------------------------- refusals
@pytest.fixture(scope="module")
def seal_secret(tmp_path_factory, iris_third):
    """A real SEAL (n8192) bundle and its secret key bytes."""
    kit, _ = make_bundle(tmp_path_factory.mktemp("seal-bundle"), iris_third, backend="seal", preset="n8192")
    return kit.jobdir, kit.engine.secret_key_bytes()


def _secret_as_extra_file(members, sk):
    return {**members, "secret_key.bin": sk}


def _secret_as_public_context(members, sk):
    return with_manifest_sha({**members, files.PUBLIC_CONTEXT: sk})


def _secret_inside_inputs(members, sk):
    meta, parts = unpack(members[files.INPUTS], expect_kind=collection.KIND)
    meta = {k: v for k, v in meta.items() if k != "parts"}
    meta["counts"] = {**meta["counts"], "extra": 1}
    return with_manifest_sha({**members, files.INPUTS: pack(meta, {**parts, "extra/0": sk})})


@pytest.mark.parametrize("smuggle", [_secret_as_extra_file, _secret_as_public_context, _secret_inside_inputs])
def test_upload_with_a_secret_key_is_refused(service, seal_secret, smuggle):
    jobdir, sk = seal_secret
    assert unpack(sk)[0]["kind"] == "secret_key"
    before = service.http.get("/v1/health").json()["jobs"]
    r = service.http.post("/v1/jobs", content=tar_of(smuggle(bundle_members(jobdir), sk)))
    assert_error(r, 400, "secret-key material")
    assert service.http.get("/v1/health").json()["jobs"] == before  # nothing was queued
    assert list((service.workdir / "incoming").iterdir()) == []  # and nothing of it kept on disk


def test_the_same_seal_bundle_without_the_key_is_accepted(service, seal_secret):
    r = service.http.post("/v1/jobs", content=tar_of(bundle_members(seal_secret[0])))
    assert r.status_code == 201, r.text
    service.http.delete(f"/v1/jobs/{r.json()['id']}")


def test_corrupted_bundles_are_refused(service, sim_bundle):
    members = bundle_members(sim_bundle[0])
    flipped = bytearray(members[files.INPUTS])
    flipped[-1] ^= 1
    cases = [
        ({**members, files.INPUTS: bytes(flipped)}, "inputs.bin does not match the manifest"),
        ({k: v for k, v in members.items() if k != files.JOB}, "lacks job.json"),
        ({**members, files.MANIFEST: b"{not json"}, "corrupted"),
        ({**members, files.PUBLIC_CONTEXT: b"garbage" * 100}, "public_context.bin is not a hetrain container"),
    ]
    for body, needle in cases:
        assert_error(service.http.post("/v1/jobs", content=tar_of(body)), 400, "job bundle refused", needle)
    assert_error(service.http.post("/v1/jobs", content=b"x" * 5000), 400, "tar")
    assert_error(service.http.post("/v1/jobs", content=tar_of(members)[:-3000]), 400, "truncated")
    # a link instead of a file
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(files.INPUTS)
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    assert_error(service.http.post("/v1/jobs", content=buf.getvalue()), 400, "not a regular file")


def test_unknown_model_is_refused(service, sim_bundle):
    members = bundle_members(sim_bundle[0])
    job = json.loads(members[files.JOB])
    job["model"] = "no-such-model"
    m = json.loads(members[files.MANIFEST])
    m["model"] = "no-such-model"
    members = with_manifest_sha({**members, files.JOB: json.dumps(job).encode(), files.MANIFEST: json.dumps(m).encode()})
    assert_error(service.http.post("/v1/jobs", content=tar_of(members)), 400, "unknown model 'no-such-model'")


def test_oversized_upload_is_refused(tiny_service, sim_bundle):
    jobdir = sim_bundle[0]
    assert tar_size(jobdir) > 64 * 1024
    body = b"".join(tar_stream(jobdir))
    assert len(body) == tar_size(jobdir)
    # declared length over the limit: refused before reading the body
    assert_error(tiny_service.http.post("/v1/jobs", content=body), 413, "limit of 65536 bytes")
    # chunked (no declared length): refused as the bytes arrive
    assert_error(tiny_service.http.post("/v1/jobs", content=iter([body[i:i + 8192] for i in range(0, len(body), 8192)])),
                 413, "limit of 65536 bytes")
    # the client checks the limit itself before sending anything
    with pytest.raises(ServerError, match="accepts at most 0.1 MiB"):
        HttpTransport(tiny_service.url).run(jobdir, progress=False)
    assert tiny_service.http.get("/v1/health").json()["jobs"]["queued"] == 0


# ---------------------------------------------------------------------- ids and states
def test_unknown_and_malformed_ids_are_404(service):
    some_token = {"Authorization": "Bearer " + "t" * 43}
    for path in ("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA", "/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA/result", "/v1/jobs/x.y"):
        assert_error(service.http.get(path, headers=some_token), 404, "no job with id")
        assert_error(service.http.get(path), 401, "Authorization: Bearer")  # no token: 401 before any lookup
    assert_error(service.http.get("/v1/jobs/..%2F..%2Fetc"), 404)  # no route: ids never become paths
    assert_error(service.http.delete("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA", headers=some_token), 404, "no job with id")
    assert service.http.get("/v1/nothing-here").json() == {"error": "Not Found"}


def test_result_before_done_is_409_and_delete_cancels(service, sim_bundle):
    job_id = service.upload(sim_bundle[0]).json()["id"]
    # the server process needs ~1 s just to start: the job cannot be done yet
    assert_error(service.http.get(f"/v1/jobs/{job_id}/result"), 409, "its result is not available")
    service.wait(job_id, until=("running", "done", "failed"))
    r = service.http.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert_error(service.http.get(f"/v1/jobs/{job_id}"), 404)
    deadline = time.monotonic() + DEADLINE_S  # the worker removes the files once the killed process is gone
    while (service.workdir / "jobs" / dir_name(job_id)).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_failed_job_reports_the_server_message(service, tmp_path, iris_third):
    # a job asking mlr (one chain, no refresh) to bootstrap: its claims hold (the upload is accepted;
    # more levels than the chain has would be refused there, test_service_limits.py), the server
    # refuses it before any work
    kit, job = make_bundle(tmp_path, iris_third, preset="n8192")
    job = {**job, "refresh": "bootstrap"}
    members = bundle_members(kit.jobdir)
    members = with_manifest_sha({**members, files.JOB: json.dumps(job, sort_keys=True).encode()})
    job_id = service.http.post("/v1/jobs", content=tar_of(members)).json()["id"]
    st = service.wait(job_id)
    assert st["status"] == "failed" and "cannot refresh" in st["error"], st
    assert_error(service.http.get(f"/v1/jobs/{job_id}/result"), 409, "failed", "cannot refresh")
    service.http.delete(f"/v1/jobs/{job_id}")


# ---------------------------------------------------------------------- command line
def test_cli_fit_with_server(service, tmp_path, capsys):
    data = tmp_path / "iris.csv"
    assert main(["datasets", "export", "iris", "--out", str(data)]) == 0
    out = tmp_path / "m.json"
    rc = main(["fit", "--data", str(data), "--model", "mlr", "--iterations", "1", "--sigmoid", "deg3:16",
               "--backend", "sim", "--preset", "n16384", "--out", str(out), "--quiet", "--server", service.url])
    text = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and out.exists()
    assert text[-1].startswith("twin_max_abs_diff=") and float(text[-1].split("=")[1]) < 1e-12
    rc = main(["fit", "--data", str(data), "--out", str(tmp_path / "never.json"), "--quiet", "--backend", "sim",
               "--server", "http://127.0.0.1:9"])  # nothing listens on the discard port
    captured = capsys.readouterr()
    assert rc == 1 and "cannot reach the training service at http://127.0.0.1:9" in captured.err
    assert "encrypt" not in captured.out and not (tmp_path / "never.json").exists()  # refused before any work
    rc = main(["fit", "--data", str(data), "--out", str(out), "--server", "ftp://x"])
    assert rc == 1 and "must be an http:// or https:// URL" in capsys.readouterr().err


def test_hetrain_serve_command_starts_on_loopback(tmp_path):
    import socket

    with socket.socket() as s:  # a free port for the child (tiny race, on loopback only)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "hetrain.cli.main", "serve", "--port", str(port),
                             "--workdir", str(tmp_path / "w")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
                time.sleep(0.1)
        assert health["status"] == "ok" and health["holds_secret_keys"] is False
        assert health["max_upload_bytes"] == 16384 * 2**20 and health["workers"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_without_fastapi_the_rest_works_and_serve_says_how_to_install(tmp_path):
    code = (
        "import sys\n"
        "for m in ('fastapi', 'uvicorn', 'httpx', 'starlette'): sys.modules[m] = None\n"
        "import hetrain, hetrain.protocol, hetrain.service\n"
        "from hetrain.cli.main import main\n"
        f"sys.exit(main(['serve', '--workdir', {str(tmp_path)!r}]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "pip install 'hetrain[service]'" in r.stderr and "Traceback" not in r.stderr


def test_jobs_left_running_by_a_stopped_service_run_again_on_restart(tmp_path, sim_bundle):
    from hetrain.service.jobs import STATE, JobQueue

    job_dir = tmp_path / "jobs" / "AAAAAAAAAAAAAAAAAAAAAA"
    job_dir.mkdir(parents=True)
    for name, data in bundle_members(sim_bundle[0]).items():
        (job_dir / name).write_bytes(data)
    (job_dir / STATE).write_text(json.dumps({"id": job_dir.name, "status": "running", "started_at": 1.0, "done": 1}))
    (tmp_path / "incoming" / "half-upload").mkdir(parents=True)
    jobs = JobQueue(tmp_path)
    try:
        assert not (tmp_path / "incoming" / "half-upload").exists()  # half uploads are dropped
        deadline = time.monotonic() + DEADLINE_S
        while jobs.get(job_dir.name).status != "done":
            assert jobs.get(job_dir.name).status in ("queued", "running") and time.monotonic() < deadline
            time.sleep(0.05)
        assert (job_dir / files.OUTPUTS).exists()
        assert json.loads((job_dir / STATE).read_text())["status"] == "done"
    finally:
        jobs.close()
