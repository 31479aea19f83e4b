"""The service's limits: declared vs actual (claims checked before a job is accepted, and again by the
server process), memory and wall-time limits of server processes, their death with a SIGKILLed
service, expiry of finished jobs, the disk quota and stalled uploads.

Small jobs (iris, sim n16384 unless SEAL matters) and small limits throughout.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from hetrain.ckks import collection  # noqa: E402
from hetrain.ckks.container import pack, unpack  # noqa: E402
from hetrain.protocol import ServerError, files  # noqa: E402
from hetrain.protocol import runner as runner_mod  # noqa: E402
from hetrain.protocol.runner import ServerProcess, run_server  # noqa: E402
from hetrain.protocol.transport import tar_stream  # noqa: E402
from hetrain.service.auth import dir_name  # noqa: E402
from servicekit import (service_fixture, DEADLINE_S, JobTokens, Service, with_manifest_sha, assert_error, bundle_members,  # noqa: E402
                          make_bundle, tar_of)

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def sim_kit(tmp_path_factory, iris_third):
    kit, _ = make_bundle(tmp_path_factory.mktemp("bundle"), iris_third)
    return kit


service = service_fixture("limits", max_upload_bytes=64 * 2**20)


def _job_edit(members, **changes) -> dict:
    job = json.loads(members[files.JOB])
    job.update(changes)
    return with_manifest_sha({**members, files.JOB: json.dumps(job, sort_keys=True).encode()})


def _inputs_edit(members, edit) -> dict:
    meta, parts = unpack(members[files.INPUTS], expect_kind=collection.KIND)
    meta = {k: v for k, v in meta.items() if k != "parts"}
    meta, parts = edit(meta, dict(parts))
    return with_manifest_sha({**members, files.INPUTS: pack(meta, parts)})


def _relevel(members, level):
    def edit(meta, parts):
        inner, ip = unpack(parts["X/0"])
        parts["X/0"] = pack({**{k: v for k, v in inner.items() if k != "parts"}, "level": level}, ip)
        return meta, parts
    return _inputs_edit(members, edit)


def _drop_y(meta, parts):
    meta["counts"] = {k: v for k, v in meta["counts"].items() if k != "Y"}
    return meta, {k: v for k, v in parts.items() if not k.startswith("Y/")}


def _public_edit(members, **changes) -> dict:
    meta, parts = unpack(members[files.PUBLIC_CONTEXT])
    meta = {**{k: v for k, v in meta.items() if k != "parts"}, **changes}
    return with_manifest_sha({**members, files.PUBLIC_CONTEXT: pack(meta, parts)})


# ---------------------------------------------------------------------- declared vs actual
def test_claims_that_disagree_with_the_content_are_refused(service, sim_kit, tmp_path, iris_third):
    members = bundle_members(sim_kit.jobdir)
    n, d, c = json.loads(members[files.JOB])["data_shape"]
    deep, _ = make_bundle(tmp_path, iris_third, preset="n8192")
    deep_members = bundle_members(deep.jobdir)
    cases = [
        (_job_edit(members, data_shape=[n, 10**9, c], n_features=10**9), "the claim is false"),
        (_job_edit(members, data_shape=[n, d, 10**6], n_classes=10**6), "the claim is false"),
        (_job_edit(members, n_features=d + 1), "n_features = 5 disagrees with data_shape"),
        (_job_edit(members, data_shape=[n, d, c, 1]), "data_shape must be"),
        (_job_edit(members, data_shape=[n, -d, c]), "data_shape must be"),
        (_job_edit(members, data_shape=[n, d + 40, c], n_features=d + 40), "ciphertexts"),  # plausible, but not these
        (_inputs_edit(members, _drop_y), "inputs.bin holds 2 ciphertexts"),
        (_relevel(members, 99), "claims level 99"),
        (with_manifest_sha({**members, files.INPUTS: members[files.INPUTS] + b"\0" * 100}), "the file has"),
        (_public_edit(members, steps=[1]), "lacks Galois keys"),
        (_public_edit(members, params={"poly_modulus_degree": 2**30, "coeff_bits": [60, 40, 60], "scale_bits": 40}),
         "ring degree 1073741824"),
        (_job_edit(members, padding="x" * (2 << 20)), "more than the 1048576"),
        (_job_edit(deep_members, config={**json.loads(deep_members[files.JOB])["config"], "iterations": 5}), "levels"),
    ]
    for body, needle in cases:
        assert_error(service.http.post("/v1/jobs", content=tar_of(body)), 400, "job bundle refused", needle)
    assert service.http.get("/v1/health").json()["jobs"]["queued"] == 0
    assert list((service.workdir / "incoming").iterdir()) == []


def test_the_server_process_checks_the_claims_itself(sim_kit, tmp_path):
    """run_job refuses a false claim before it allocates anything from it (no service involved)."""
    d = tmp_path / "job"
    d.mkdir()
    members = bundle_members(sim_kit.jobdir)
    n, _, c = json.loads(members[files.JOB])["data_shape"]
    for name, data in _job_edit(members, data_shape=[n, 10**9, c], n_features=10**9).items():
        (d / name).write_bytes(data)
    t0 = time.monotonic()
    with pytest.raises(ServerError, match="the claim is false"):
        run_server(d, progress=False)
    assert time.monotonic() - t0 < 30


# ---------------------------------------------------------------------- the service as a process
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kb(pid: int, field: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class ServiceProcess:
    """`hetrain serve` in its own process (so that it can be measured and SIGKILLed)."""

    def __init__(self, workdir: pathlib.Path, *options: str, pythonpath: pathlib.Path | None = None) -> None:
        port = _free_port()
        path = [str(SRC), str(pathlib.Path(__file__).parent)] + ([str(pythonpath)] if pythonpath else [])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        self.proc = subprocess.Popen([sys.executable, "-m", "hetrain.cli.main", "serve", "--workdir", str(workdir),
                                      "--port", str(port), *options], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=30, auth=JobTokens())  # holds its jobs' tokens
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None and time.monotonic() < deadline, "service did not start"
            try:
                if self.http.get("/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def _children(pid: int) -> list[int]:
    out = []
    for stat_file in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat_file.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_huge_claim_is_refused_with_the_service_memory_bounded(tmp_path, sim_kit):
    svc = ServiceProcess(tmp_path / "svc")
    try:
        members = bundle_members(sim_kit.jobdir)
        n, _, c = json.loads(members[files.JOB])["data_shape"]
        body = tar_of(_job_edit(members, data_shape=[n, 10**9, c], n_features=10**9))
        r = svc.http.post("/v1/jobs", content=body)  # a first upload: the service's own imports settle
        peak = _status_kb(svc.proc.pid, "VmHWM")
        for _ in range(3):
            r = svc.http.post("/v1/jobs", content=body)
            assert_error(r, 400, "job bundle refused", f"{n} x 1000000000", "the claim is false")
        assert (_status_kb(svc.proc.pid, "VmHWM") - peak) < 64 * 1024, "the service's peak RSS grew by > 64 MB"
        assert svc.http.get("/v1/health").json()["jobs"] == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    finally:
        svc.stop()


SLEEPY = """
import time
from hetrain.models.base import register
from hetrain.models.mlr import MLRTrainer


@register
class SleepyMLR(MLRTrainer):  # replaces mlr in the processes that import this module
    def server_train(self, engine, inputs, job, progress=None, **hooks):
        time.sleep(300)  # silent: nothing it writes would tell it that its parent is gone
"""


def test_server_processes_die_with_a_sigkilled_service(tmp_path, sim_kit):
    """A server process that writes nothing (it cannot notice a broken pipe) still ends with a
    SIGKILLed service: PR_SET_PDEATHSIG."""
    (tmp_path / "sleepy_trainer.py").write_text(SLEEPY)
    svc = ServiceProcess(tmp_path / "svc", "--trainer-module", "sleepy_trainer", pythonpath=tmp_path)
    servers: list[int] = []
    try:
        job_id = svc.http.post("/v1/jobs", content=b"".join(tar_stream(sim_kit.jobdir))).json()["id"]
        deadline = time.monotonic() + DEADLINE_S
        while svc.http.get(f"/v1/jobs/{job_id}").json()["status"] != "running" or not _children(svc.proc.pid):
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.1)
        servers = [p for p in _children(svc.proc.pid) if "server_main" in pathlib.Path(f"/proc/{p}/cmdline").read_text()]
        assert servers and all(_alive(p) for p in servers)
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in servers):
            assert time.monotonic() < deadline, f"server processes {servers} outlived the killed service"
            time.sleep(0.05)
    finally:
        svc.stop()
        for pid in servers:  # a failed test leaves no orphan behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------- memory and time limits
def _fake_server(monkeypatch, tmp_path, code: str) -> None:
    script = tmp_path / "fake_server.py"
    script.write_text(code)
    monkeypatch.setattr(runner_mod, "server_argv",
                        lambda jobdir, **kw: [sys.executable, str(script), str(jobdir)])


def test_the_runner_enforces_memory_and_time_limits(monkeypatch, tmp_path):
    _fake_server(monkeypatch, tmp_path, "import sys, time\nif sys.argv[1].endswith('mem'):\n"
                                        "    x = bytearray(400 * 2**20)\nelse:\n    time.sleep(60)\n")
    (tmp_path / "mem").mkdir()
    proc = ServerProcess.start(tmp_path / "mem", memory_limit=128 * 2**20)
    proc.follow()
    proc.wait()
    with pytest.raises(ServerError, match=r"exceeded the service's memory limit of 0\.125 GB"):
        proc.result()
    (tmp_path / "slow").mkdir()
    t0 = time.monotonic()
    proc = ServerProcess.start(tmp_path / "slow", time_limit=0.5)
    proc.follow()
    proc.wait()
    assert time.monotonic() - t0 < 15
    with pytest.raises(ServerError, match=r"exceeded the time limit of 0\.5 s"):
        proc.result()
    proc.close()


GREEDY = """
import time
from hetrain.models.base import register
from hetrain.models.mlr import MLRTrainer


@register
class GreedyMLR(MLRTrainer):  # replaces mlr in the processes that import this module (never this one)
    def server_train(self, engine, inputs, job, progress=None, **hooks):
        if job["config"]["iterations"] == 1:
            return {"W": [bytearray(1 << 30)]}  # 1 GB, over the limit below
        time.sleep(300)
"""


@pytest.mark.parametrize("options,iterations,needle", [
    ({"job_memory_bytes": 256 * 2**20}, 1, "exceeded the service's memory limit of 0.25 GB"),
    ({"job_time_limit": 1.0}, 2, "exceeded the time limit of 1 s"),
], ids=["memory", "time"])
def test_jobs_over_the_services_limits_fail_with_a_clear_status(tmp_path, sim_kit, monkeypatch, options, iterations,
                                                                needle):
    """The server process allocates 1 GB under a 256 MB limit, or sleeps past a 1 s limit: the job fails
    with a status that says which limit it hit (no traceback)."""
    (tmp_path / "greedy_trainer.py").write_text(GREEDY)
    monkeypatch.syspath_prepend(str(tmp_path))  # for the children (runner.child_env); never imported here
    members = bundle_members(sim_kit.jobdir)
    body = tar_of(_job_edit(members, config={**json.loads(members[files.JOB])["config"], "iterations": iterations}))
    svc = Service(tmp_path / "svc", trainer_modules=("greedy_trainer",), **options)
    try:
        r = svc.http.post("/v1/jobs", content=body)
        assert r.status_code == 201, r.text
        st = svc.wait(r.json()["id"])
        assert st["status"] == "failed" and st["error"] == f"the job {needle}" + (" and was stopped" if "time" in needle else ""), st
    finally:
        svc.stop()


# ---------------------------------------------------------------------- expiry
def test_finished_jobs_expire_after_the_ttl(tmp_path, sim_kit):
    svc = Service(tmp_path / "svc", job_ttl_s=1.0)
    try:
        job_id = svc.upload(sim_kit.jobdir).json()["id"]
        assert svc.wait(job_id)["status"] == "done"
        deadline = time.monotonic() + 15
        while (svc.workdir / "jobs" / dir_name(job_id)).exists():
            assert time.monotonic() < deadline, "the finished job did not expire"
            time.sleep(0.1)
        assert_error(svc.http.get(f"/v1/jobs/{job_id}"), 410, "expired")
        assert_error(svc.http.get(f"/v1/jobs/{job_id}/result"), 410, "expired")
    finally:
        svc.stop()


def test_a_restarted_service_expires_the_finished_jobs_it_finds(tmp_path, sim_kit):
    svc = Service(tmp_path / "svc")
    try:
        old = svc.upload(sim_kit.jobdir).json()["id"]
        fresh = svc.upload(sim_kit.jobdir).json()["id"]
        for job_id in (old, fresh):
            assert svc.wait(job_id)["status"] == "done"
        tokens = dict(svc.auth.tokens)  # the client keeps its jobs' tokens across the service's restart
    finally:
        svc.stop()
    state_path = tmp_path / "svc" / "jobs" / dir_name(old) / "state.json"
    state = json.loads(state_path.read_text())
    state["finished_at"] -= 7200  # finished two hours ago
    state_path.write_text(json.dumps(state))
    stray = tmp_path / "svc" / "jobs" / "left-behind"  # a directory without a state, two hours old
    stray.mkdir()
    (stray / "inputs.bin").write_bytes(b"x")
    os.utime(stray / "inputs.bin", (time.time() - 7200,) * 2)
    os.utime(stray, (time.time() - 7200,) * 2)
    svc = Service(tmp_path / "svc", job_ttl_s=3600.0)
    svc.auth.tokens.update(tokens)
    try:
        assert not (tmp_path / "svc" / "jobs" / dir_name(old)).exists() and not stray.exists()
        assert_error(svc.http.get(f"/v1/jobs/{old}"), 410, "expired")  # removed by this run, at its start
        assert svc.http.get(f"/v1/jobs/{fresh}").json()["status"] == "done"
    finally:
        svc.stop()


# ---------------------------------------------------------------------- disk quota and stalled uploads
def test_the_disk_quota_refuses_uploads_with_507(tmp_path, sim_kit):
    body = b"".join(tar_stream(sim_kit.jobdir))
    svc = Service(tmp_path / "small", disk_quota_bytes=len(body) // 2)
    try:
        assert_error(svc.http.post("/v1/jobs", content=body), 507, "disk quota")  # by its Content-Length
        chunks = iter([body[i:i + 8192] for i in range(0, len(body), 8192)])
        assert_error(svc.http.post("/v1/jobs", content=chunks), 507, "disk quota")  # as the bytes arrive
        assert list((svc.workdir / "incoming").iterdir()) == []
    finally:
        svc.stop()
    svc = Service(tmp_path / "one", disk_quota_bytes=int(len(body) * 1.5))
    try:
        first = svc.http.post("/v1/jobs", content=body)
        assert first.status_code == 201, (first.status_code, first.text)
        assert_error(svc.http.post("/v1/jobs", content=body), 507, "disk quota")
        svc.http.delete(f"/v1/jobs/{first.json()['id']}")
        deadline = time.monotonic() + DEADLINE_S
        while (svc.workdir / "jobs" / dir_name(first.json()["id"])).exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert svc.http.post("/v1/jobs", content=body).status_code == 201  # room again
    finally:
        svc.stop()


def test_a_stalled_upload_is_dropped(tmp_path, sim_kit):
    body = b"".join(tar_stream(sim_kit.jobdir))
    svc = Service(tmp_path / "svc", upload_timeout_s=1.0)
    try:
        host, port = svc.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as s:
            s.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                      "Content-Type: application/octet-stream\r\n\r\n".encode() + body[:20000])
            time.sleep(0.3)
            assert len(list((svc.workdir / "incoming").iterdir())) == 1  # receiving
            t0 = time.monotonic()
            reply = b""
            while not reply.rstrip().endswith(b"}"):  # the headers, then the JSON body (maybe apart)
                piece = s.recv(65536)
                if not piece:
                    break
                reply += piece
            reply = reply.decode(errors="replace")
        assert reply.startswith("HTTP/1.1 408"), reply
        assert "no data for 1 s" in reply and time.monotonic() - t0 < 10
        assert list((svc.workdir / "incoming").iterdir()) == []
    finally:
        svc.stop()


def test_a_full_disk_during_an_upload_answers_507(tmp_path, sim_kit, monkeypatch):
    import errno

    from hetrain.service import upload as upload_mod

    real = upload_mod._write_and_hash

    class FullDisk:
        def write(self, piece):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(upload_mod, "_write_and_hash", lambda f, sha, piece: real(FullDisk(), sha, piece))
    svc = Service(tmp_path / "svc")
    try:
        assert_error(svc.upload(sim_kit.jobdir), 507, "disk is full")
        assert list((svc.workdir / "incoming").iterdir()) == []
    finally:
        svc.stop()
