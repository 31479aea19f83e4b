"""The refresh channel with the server listening: data-owner sessions attach one after another, a
request cut off by a dropped session is resent to the next one, the server gives up after its
timeout, sessions of another key or job are refused with a fixed code.

The server process is started here directly (python -m hetrain.protocol.server_main JOBDIR
--channel PATH); this process answers with serve_socket (or a hand-made session that drops)."""
import json
import os
import pathlib
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.datasets import load_iris

from hetrain import ckks
from hetrain.protocol import files, refresh_channel
from hetrain.protocol.refresh import ClientRefresher, MLRValidation
from hetrain.protocol.refresh_channel import (ERROR_CODES, ChannelAnswerer, ChannelError, ServerChannel,
                                              channel_location, job_id_of, recv_frame, send_frame, serve_socket)
from hetrain.protocol.server import server_argv

from jobkit import make_job

CFG = {"epochs": 3, "batch_size": 64, "learning_rate": 0.5, "patience": 0}  # 6 steps, a refresh before 5


def _iris(n_val=30):
    X, y = load_iris(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))
    return X[idx[n_val:]], y[idx[n_val:]], X[idx[:n_val]], y[idx[:n_val]]


@pytest.fixture(scope="module")
def keyroot(tmp_path_factory):
    """Where the data owner's key directory goes (outside every job directory)."""
    return tmp_path_factory.mktemp("keys")


class _Job:
    """The mini-batch job with CFG as given (no planner, no validation split) under one key directory:
    ``write(jobdir)`` encrypts a bundle there (steps.encrypt) and makes it the current one."""

    def __init__(self, keyroot):
        self.keyroot, self.kit = keyroot, None

    def write(self, jobdir):
        Xtr, ytr, _, _ = _iris()
        self.kit = make_job(self.keyroot, Xtr, ytr, "mlr", CFG, backend="sim", preset="n16384", refresh="client",
                            jobdir=jobdir, plan=False, validation_fraction=0.0)
        return self.kit

    @property
    def engine(self):
        if self.kit is None:  # an engine with the keys' secret key before any bundle was written
            self.write(self.keyroot / "first-job")
        return self.kit.engine

    @property
    def trainer(self):
        return self.kit.job.trainer

    @property
    def job(self) -> dict:  # what client_decrypt reads (the bundle's shapes)
        return {"d": int(self.kit.job.Xp.shape[1]), "c": int(self.kit.job.Y.shape[1])}


@pytest.fixture(scope="module")
def job(keyroot):
    return _Job(keyroot)


def _start(jobdir: pathlib.Path, timeout: float = 60.0, channel=None):
    """The server process listening at channel_location(jobdir); returns (proc, socket path)."""
    path = channel if channel is not None else channel_location(jobdir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))}
    err = open(jobdir / "server.log", "w")
    proc = subprocess.Popen(server_argv(jobdir, progress=True, channel=path, channel_timeout=timeout),
                            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env)
    err.close()
    return proc, path


def _weights(job, jobdir) -> np.ndarray:
    outputs = files.unpack_ciphertexts(job.engine, files.read_bytes(jobdir / files.OUTPUTS, "outputs"), "outputs")
    return job.trainer.client_decrypt(job.engine, outputs, job.job)["W"]


def _stats(jobdir) -> dict:
    return json.loads((jobdir / files.SERVER_STATS).read_text())["refresh"]


def _alive(proc):
    return lambda: proc.poll() is None


@pytest.fixture(scope="module")
def reference(job, tmp_path_factory):
    """An uninterrupted run answered by one session: (weights, server's channel stats)."""
    jobdir = tmp_path_factory.mktemp("ref")
    job.write(jobdir)
    proc, path = _start(jobdir)
    try:
        stats = serve_socket(path, job.engine, ClientRefresher(job.engine), job_id_of(jobdir), alive=_alive(proc))
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    return _weights(job, jobdir), _stats(jobdir), stats


def test_one_session_answers_a_whole_run(job, reference, tmp_path):
    W, server, client = reference
    assert server["attaches"] == 1 and server["resent"] == 0 and server["refreshes"] == 5
    assert server["round_trips"] == client.round_trips >= 5 and client.refreshes == 5
    assert server["bytes_to_client"] == client.bytes_to_client > 0
    assert server["bytes_to_server"] == client.bytes_to_server > 0 and client.client_seconds > 0
    assert np.abs(W).max() > 0.05


def test_the_socket_is_0600_and_goes_away(job, tmp_path):
    job.write(tmp_path)
    proc, path = _start(tmp_path)
    try:
        for _ in range(300):
            if path.exists():
                break
            time.sleep(0.05)
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
        assert path == tmp_path.resolve() / "refresh.sock" and not (tmp_path / "channel.json").exists()
        serve_socket(path, job.engine, ClientRefresher(job.engine), job_id_of(tmp_path), alive=_alive(proc))
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not path.exists()


def _frame_bytes(header, blobs) -> bytes:
    return refresh_channel.encode_frame(header, blobs)


def _dropping_session(path, engine, handler, job_id, answer: int, mid_answer: bool) -> int:
    """A session that answers ``answer`` requests, then goes away on the next one: before answering,
    or after sending half of its answer. Returns the seq of the request it abandoned."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(300):
        try:
            sock.connect(os.fspath(path))
            break
        except OSError:
            time.sleep(0.1)
    ans = ChannelAnswerer(engine, handler, job_id)
    done = 0
    try:
        while True:
            header, blobs, _ = recv_frame(sock)
            request = header["op"] in ("refresh", "evaluate")
            if request and done == answer:
                if mid_answer:
                    data = _frame_bytes(*ans.answer(header, blobs))
                    sock.sendall(data[:len(data) // 2])
                return header["seq"]
            reply, out = ans.answer(header, blobs)
            send_frame(sock, reply, out)
            done += request
    finally:
        sock.close()


@pytest.mark.parametrize("answer,mid_answer", [(2, False), (1, True)])
def test_a_dropped_session_is_replaced_and_the_request_resent(job, reference, tmp_path, answer, mid_answer):
    job.write(tmp_path)
    proc, path = _start(tmp_path)
    job_id = job_id_of(tmp_path)
    try:
        seq = _dropping_session(path, job.engine, ClientRefresher(job.engine), job_id, answer, mid_answer)
        assert seq == answer + 1
        time.sleep(0.5)  # nobody attached for a while: the server waits
        second = serve_socket(path, job.engine, ClientRefresher(job.engine), job_id, alive=_alive(proc))
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    s = _stats(tmp_path)
    assert s["attaches"] == 2 and s["resent"] >= 1 and s["round_trips"] == reference[1]["round_trips"]
    assert second.round_trips == s["round_trips"] - answer  # the second session answered the rest
    log = (tmp_path / "server.log").read_text()
    assert f"waiting for the data owner to attach (hetrain refresh --job {tmp_path}); giving up in 60 s" in log
    np.testing.assert_allclose(_weights(job, tmp_path), reference[0], atol=1e-9)  # same as uninterrupted


def test_no_session_within_the_timeout_fails_the_job_clearly(job, tmp_path):
    job.write(tmp_path)
    proc, path = _start(tmp_path, timeout=1)
    for _ in range(300):
        if path.exists():
            break
        time.sleep(0.05)
    t0 = time.monotonic()
    assert proc.wait(timeout=60) == 2
    assert time.monotonic() - t0 < 2.5  # 1 s of waiting after the first step (sim: milliseconds)
    err = json.loads((tmp_path / files.SERVER_ERROR).read_text())
    assert err["user_error"] and "no data owner attached to the refresh channel within 1 s" in err["message"]
    log = (tmp_path / "server.log").read_text()
    assert "giving up in 1 s" in log and "Traceback" not in log
    assert not path.exists() and not (tmp_path / files.OUTPUTS).exists()


def test_a_session_of_another_key_or_job_is_refused_with_a_fixed_code(job, tmp_path, monkeypatch):
    sent = _spy(monkeypatch)
    job.write(tmp_path)
    proc, path = _start(tmp_path, timeout=30)
    job_id = job_id_of(tmp_path)
    try:
        other = ckks.create_engine("sim", "n16384")
        with pytest.raises(ChannelError, match="under key"):
            serve_socket(path, other, ClientRefresher(other), job_id, alive=_alive(proc))
        assert sent[-1] == {"op": "error", "code": "key_mismatch", "seq": None}
        with pytest.raises(ChannelError, match="runs job"):
            serve_socket(path, job.engine, ClientRefresher(job.engine), "another-job", alive=_alive(proc))
        assert sent[-1] == {"op": "error", "code": "job_mismatch", "seq": None}
        serve_socket(path, job.engine, ClientRefresher(job.engine), job_id, alive=_alive(proc))  # the right one
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _stats(tmp_path)["attaches"] == 1
    log = (tmp_path / "server.log").read_text()
    assert ERROR_CODES["key_mismatch"] in log and ERROR_CODES["job_mismatch"] in log


def test_the_answerer_refuses_by_fixed_codes_only():
    eng = ckks.create_engine("sim", "n8192")

    class Boom:
        def refresh(self, state, step):
            raise ValueError("span [-12.5, 40.25] outside the interval")  # decrypted-derived numbers

    a = ChannelAnswerer(eng, Boom(), "job-1")
    assert a.answer({"op": "hello", "key_id": eng.key_id, "job_id": "job-1"}, []) == (
        {"op": "ok", "key_id": eng.key_id, "seq": None}, [])
    assert a.answer({"op": "hello", "key_id": "beef", "job_id": "job-1"}, [])[0]["code"] == "key_mismatch"
    assert a.answer({"op": "hello", "key_id": eng.key_id, "job_id": "job-2"}, [])[0]["code"] == "job_mismatch"
    assert a.answer({"op": "shell", "key_id": eng.key_id, "seq": 1}, [])[0]["code"] == "unknown_request"
    layout, blobs = refresh_channel.encode_state(eng, {"W": [eng.encrypt([1.0])]})
    reply, out = a.answer({"op": "refresh", "key_id": eng.key_id, "seq": 2, "state": layout, "step": 1}, blobs)
    assert reply == {"op": "error", "code": "client_refused", "seq": 2} and out == []
    assert isinstance(a.failure, ValueError) and "span" in str(a.failure)  # the reason stays here
    assert not a.done and a.answer({"op": "done"}, [])[0]["op"] == "bye" and a.done
    with pytest.raises(ChannelError, match="secret key"):
        ChannelAnswerer(ckks.load_engine(eng.public_bytes()), Boom(), "job-1")


def _spy(monkeypatch) -> list[dict]:
    """Every header this process sends on the channel."""
    sent, real = [], refresh_channel.send_frame

    def spy(sock, header, blobs=(), timeout=None):
        sent.append(json.loads(json.dumps(header)))
        return real(sock, header, blobs, timeout)

    monkeypatch.setattr(refresh_channel, "send_frame", spy)
    return sent


def _numbers(x) -> list:
    if isinstance(x, dict):
        return [n for k, v in x.items() if k not in ("blobs", "state", "seq") for n in _numbers(v)]
    if isinstance(x, list):
        return [n for v in x for n in _numbers(v)]
    return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


def test_no_decrypted_derived_number_in_any_frame_the_data_owner_sends(tmp_path, monkeypatch):
    """A run whose client adapts on decrypted values (retraction, validation, early stopping): every
    header the data owner sends holds its op, key id, the state's layout, the stop bit and the seq
    of the request it answers (an echo), nothing else."""
    sent = _spy(monkeypatch)
    seen = []
    real_recv = refresh_channel.recv_frame

    def recv_spy(sock, alive=lambda: True, timeout=None):
        out = real_recv(sock, alive, timeout)
        seen.append(out[0])
        return out

    monkeypatch.setattr(refresh_channel, "recv_frame", recv_spy)
    Xtr, ytr, Xv, yv = _iris()
    kit = make_job(tmp_path / "owner", Xtr, ytr, "mlr", {"epochs": 6, "learning_rate": 64.0}, backend="sim",
                   preset="n16384", refresh="client", jobdir=tmp_path / "job", plan=False, validation_fraction=0.0)
    long = kit.job  # the client's half, its validation rows given here (held out above, like the old X_val)
    v = MLRValidation(long.trainer, long.pre.transform(Xv), long.pre.label_index(yv), long.Xp.shape[1],
                      long.Y.shape[1], kit.engine.slots, X_train=long.Xp, retract=True)
    proc, path = _start(tmp_path / "job")
    try:
        serve_socket(path, kit.engine, ClientRefresher(kit.engine, check=v.check, evaluate=v.evaluate),
                     job_id_of(tmp_path / "job"), alive=_alive(proc))
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert any(h["kind"] == "retract" for h in v.history)  # the client did adapt on decrypted values
    assert len(sent) == len(seen) and {h["op"] for h in sent} <= {"ok", "refreshed", "verdict", "bye"}
    assert {k for h in sent for k in h} <= {"op", "key_id", "state", "stop", "blobs", "seq"}
    assert _numbers(sent) == []
    assert [h.get("seq") for h in sent] == [h.get("seq") for h in seen]  # seq: the request's, echoed
    assert len({json.dumps(h["state"]) for h in sent if h.get("state") is not None}) == 1  # names and counts


def test_a_long_job_directory_gets_a_private_short_socket(job, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = channel_location(deep)
    assert path.parent.name.startswith("hetrain-ch-") and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    record = deep / "channel.json"
    assert stat.S_IMODE(os.stat(record).st_mode) == 0o600 and json.loads(record.read_text()) == {"socket": str(path)}
    assert channel_location(deep) == path  # the other party finds the same place
    ch = ServerChannel.listen(path, job.engine, "j", timeout=5, jobdir=deep)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    ch.close()
    assert not path.exists() and not path.parent.exists() and not record.exists()


def test_a_custom_channel_path_is_recorded_for_the_data_owner(job, tmp_path):
    job.write(tmp_path / "job")
    custom = tmp_path / "elsewhere.sock"
    proc, path = _start(tmp_path / "job", channel=custom)
    try:
        for _ in range(300):  # the record appears once the server listens
            if channel_location(tmp_path / "job") == custom:
                break
            time.sleep(0.05)
        serve_socket(channel_location(tmp_path / "job"), job.engine, ClientRefresher(job.engine),
                     job_id_of(tmp_path / "job"), alive=_alive(proc))
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not custom.exists() and not (tmp_path / "job" / "channel.json").exists()


def test_serve_socket_gives_up_when_nothing_listens(tmp_path):
    eng = ckks.create_engine("sim", "n8192")
    t0 = time.monotonic()
    with pytest.raises(ChannelError, match="no server listens"):
        serve_socket(tmp_path / "none.sock", eng, ClientRefresher(eng), "j", connect_timeout=0.5)
    assert time.monotonic() - t0 < 2
    with pytest.raises(ChannelError, match="exited before"):
        serve_socket(tmp_path / "none.sock", eng, ClientRefresher(eng), "j", alive=lambda: False)


def test_a_resent_request_is_answered_again_without_asking_the_handler_twice():
    eng = ckks.create_engine("sim", "n8192")

    class Counting(ClientRefresher):
        calls = 0

        def refresh(self, state, step):
            Counting.calls += 1
            return super().refresh(state, step)

    a = ChannelAnswerer(eng, Counting(eng), "job-1")
    layout, blobs = refresh_channel.encode_state(eng, {"W": [eng.encrypt([1.0])]})
    request = {"op": "refresh", "key_id": eng.key_id, "seq": 3, "state": layout, "step": 2}
    first = a.answer(request, blobs)
    assert a.answer(dict(request), list(blobs)) == first and Counting.calls == 1
    # the same seq from another server run (a resumed job) is another request: asked again
    _, other = refresh_channel.encode_state(eng, {"W": [eng.encrypt([2.0])]})
    reply, out = a.answer(request, other)
    assert Counting.calls == 2 and eng.decrypt(eng.deserialize(out[0]))[0] == 2.0
