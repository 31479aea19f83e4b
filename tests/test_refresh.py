"""Refresh across the process boundary: the server process trains with public material only and asks
the client (this process) over the refresh channel to re-encrypt its state; checkpoints, kill and
resume, and clear errors when either side dies."""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from sklearn.datasets import load_iris

from hetrain import ckks
from hetrain.circuits.approx import IntervalError
from hetrain.errors import HetrainUserError
from hetrain.models.base import DepthPlanError
from hetrain.protocol import checkpoint, files, fit, refresh_channel, steps
from hetrain.protocol.errors import ServerError
from hetrain.protocol.keys import KeyDir
from hetrain.protocol.refresh import ClientRefresher
from hetrain.protocol.refresh_channel import (ChannelError, channel_location, decode_state, encode_state, recv_frame,
                                              send_frame, serve_socket)
from hetrain.protocol.server import server_argv

from jobkit import make_job

CFG = {"epochs": 3, "batch_size": 64, "learning_rate": 0.5, "patience": 0}
PUBLIC_FILES = {files.MANIFEST, files.PUBLIC_CONTEXT, files.INPUTS, files.JOB, "state.ckpt"}


def _iris(n_val=30):
    X, y = load_iris(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))
    return X[idx[n_val:]], y[idx[n_val:]], X[idx[:n_val]], y[idx[:n_val]]


@pytest.fixture(scope="module")
def keyroot(tmp_path_factory):
    """The data owner's key directories (one per backend and preset), outside every job directory."""
    return tmp_path_factory.mktemp("owner")


def _long_job(keyroot, jobdir, cfg, *, validation: bool = True, backend: str = "sim", refresh: str = "client"):
    """A mini-batch mlr job on iris with ``cfg`` as given (no planner), written to ``jobdir`` by the data
    owner's steps: 120 training rows, and with ``validation`` 30 held-out rows (the client's
    stratified split), else the 120 rows of _iris() without validation."""
    if validation:
        X, y = load_iris(return_X_y=True)
        return make_job(keyroot, X, y, "mlr", cfg, backend=backend, preset="n16384", refresh=refresh, jobdir=jobdir,
                        plan=False, validation_fraction=0.2)
    Xtr, ytr, _, _ = _iris()
    return make_job(keyroot, Xtr, ytr, "mlr", cfg, backend=backend, preset="n16384", refresh=refresh, jobdir=jobdir,
                    plan=False, validation_fraction=0.0)


def _train(kit, *, handler=None, handler_wrapper=None, env=None, resume=False):
    """The server process on the kit's bundle (steps.train), this process answering its channel as the
    data owner, then steps.decrypt: the FitResult. ``handler_wrapper(handler) -> handler``: wraps the
    client's answers (e.g. to kill the server in the middle of a refresh)."""
    if handler is None:
        handler = kit.handler
    if handler_wrapper is not None:
        handler = handler_wrapper(handler)

    def during(proc):
        serve_socket(channel_location(kit.jobdir), kit.engine, handler, kit.job_id, alive=proc.alive)

    steps.train(kit.jobdir, progress=False, env=env, resume=resume, during=during)
    return kit.decrypt()


def _last_weights(kit) -> np.ndarray:
    """The decrypted final state of the server's outputs (before the client picks its best epoch)."""
    outputs = files.read_ciphertext_map(kit.jobdir / files.OUTPUTS, kit.engine, "server outputs")
    shapes = {"d": kit.job.Xp.shape[1], "c": kit.job.Y.shape[1]}
    return kit.job.trainer.client_decrypt(kit.engine, outputs, shapes)["W"]


def test_checkpoint_round_trip_is_atomic_and_keyed(tmp_path):
    eng = ckks.create_engine("sim", "n8192")
    path = tmp_path / "state.ckpt"
    ckpt = checkpoint.StateCheckpoint(path, eng)
    assert ckpt.load() is None
    ckpt.save({"W": [eng.encrypt([1.0, 2.0]), eng.encrypt([3.0])], "b": [eng.encrypt([7.0])]}, {"step": 4})
    state, meta = checkpoint.StateCheckpoint(path, eng).load()
    assert meta == {"step": 4} and [eng.decrypt(c)[0] for c in state["W"] + state["b"]] == [1.0, 3.0, 7.0]
    assert [p.name for p in tmp_path.iterdir()] == ["state.ckpt"]  # no temporary file left
    with pytest.raises(checkpoint.CheckpointError, match="written under keys other than this job's"):
        checkpoint.StateCheckpoint(path, ckks.create_engine("sim", "n8192")).load()
    path.write_bytes(path.read_bytes()[:-10])  # the only record is cut: nothing to resume from
    with pytest.raises(checkpoint.CheckpointError, match="unreadable.*truncated.*delete it"):
        checkpoint.StateCheckpoint(path, eng).load()


def test_frames_and_state_encoding():
    eng = ckks.create_engine("sim", "n8192")
    a, b = socket.socketpair()
    w = eng.encrypt([1.0, 2.0])
    state = {"W": [w, eng.encrypt([3.0])], "V": [w], "single": eng.encrypt([4.0])}
    layout, blobs = encode_state(eng, state)
    assert len(blobs) == 3  # W[0] and V[0] are one ciphertext: it crosses once
    n = send_frame(a, {"op": "refresh", "state": layout}, blobs)
    header, got, m = recv_frame(b)
    assert n == m == refresh_channel.frame_size({"op": "refresh", "state": layout}, blobs) > sum(map(len, blobs))
    back = decode_state(eng, header["state"], got)
    assert eng.decrypt(back["V"][0])[1] == 2.0 and eng.decrypt(back["single"])[0] == 4.0
    a.sendall(b"XXXX" + bytes(12))
    with pytest.raises(ChannelError, match="not a refresh-channel frame"):
        recv_frame(b)
    a.close()
    with pytest.raises(ChannelError, match="closed"):
        recv_frame(b)


def test_mlr_client_refresh_on_seal_in_a_server_process_without_secret_key(tmp_path, keyroot):
    cfg = {"epochs": 2, "batch_size": 64, "learning_rate": 1.0, "patience": 0}  # 2 batches x 2 epochs
    kit = _long_job(keyroot, tmp_path / "job", cfg, backend="seal")
    audit = tmp_path / "opened.txt"
    r = _train(kit, env={"HETRAIN_SERVER_AUDIT": str(audit)})
    s = r.stats
    # n16384: 7 levels, 4 per step -> a refresh before every step but the first: 3, one of them
    # merged with the epoch-1 evaluation (epoch 2's is done by the client on download)
    assert s["steps"] == 4 and s["refreshes"] == 3 and s["round_trips"] == 3 and s["evaluations"] == 1
    assert s["bytes_to_client"] > 0 and s["bytes_to_server"] > s["bytes_to_client"]  # state leaves at a low level
    assert s["server_engine_has_secret_key"] is False
    # everything the server process opened inside the job directory is public material
    opened = {pathlib.Path(p).name for p in audit.read_text().split() if str(tmp_path / "job") in p}
    assert {files.PUBLIC_CONTEXT, files.INPUTS} <= opened
    # temporary files: hetrain._atomic.temp_sibling's ".NAME.<random>.tmp" (atomic_write and the spool)
    written = {re.sub(r"^\.(.+)\.[^.]+\.tmp$", r"\1", name).split(".tmp")[0] for name in opened}
    assert all(name in PUBLIC_FILES | {files.OUTPUTS, files.SERVER_STATS} for name in written), opened
    # CKKS at scale 2^40 adds ~1e-7 relative error per rescale/rotation; a step sums 64 rows times
    # weights of size ~1 through 4 levels, and each refresh re-encrypts (1e-7 more), so 1e-4 is
    # ~100x the expected error and far below the weights (~0.1-1), which a wrong slot would change.
    assert s["twin_max_abs_diff"] < 1e-4 and np.abs(s["twin_weights"]).max() > 0.05
    assert [h["epoch"] for h in s["history"] if h["kind"] == "epoch"] == [1, 2]


@pytest.mark.slow  # SEAL end to end, 10-18 s on 2 shared cores (pytest --durations)
def test_mlp_diagonal_on_seal_past_one_chain_matches_twin():
    Xtr, ytr, _, _ = _iris()  # 120 rows: n16384 holds them
    cfg = {"hidden": [4], "iterations": 4, "sigmoid": "deg3:8", "output_sigmoid": "deg1:8",
           "hidden_learning_rate": 2.0, "init_gain": 2.0}
    r = fit(Xtr, ytr, "mlp", cfg, preset="n16384", backend="seal", progress=False, refresh="client")
    ref = r.stats["refresh"]
    assert r.plan.iterations_that_fit < 4 and ref["round_trips"] >= 1 and ref["refreshes"] == ref["round_trips"]
    assert ref["bytes_to_client"] > 0 and ref["client_seconds"] > 0
    # one hidden layer of 4 units, every product over <= 5 terms of size ~1: CKKS noise (~1e-7 per
    # operation, re-encryption included) stays below 1e-4 through 4 iterations; the weights are ~1
    assert r.twin_max_abs_diff < 1e-4 and max(np.abs(v).max() for v in r.twin.values()) > 0.1


def test_mlp_dvr_past_one_chain_on_sim_matches_twin():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 8)), rng.integers(0, 3, 20)
    cfg = {"hidden": [4], "iterations": 3, "momentum": "none", "learning_rate": 1.0}  # 9 levels each
    with pytest.raises(DepthPlanError, match="1 iteration"):
        fit(X, y, "mlp", {**cfg, "layout": "dvr"}, preset="n16384-deep", backend="sim", progress=False,
            refresh="none")
    r = fit(X, y, "mlp", {**cfg, "layout": "dvr"}, preset="n16384-deep", backend="sim", progress=False,
            refresh="client")
    assert r.stats["refresh"]["round_trips"] == 2 and r.stats["model"] == "mlp-dvr"
    assert r.twin_max_abs_diff < 1e-9  # sim has no noise: decrypted == twin up to summation order


def test_a_model_without_the_refresh_hook_is_refused_before_work(tmp_path):
    from toykit import ToyTrainer  # noqa: F401  (registers "toy-centroid": no refresh capability)

    X, y, _, _ = _iris()
    with pytest.raises(DepthPlanError, match="cannot refresh"):
        fit(X, y, "toy-centroid", {"iterations": 2}, preset="n8192", backend="sim", progress=False,
            refresh="client", keys=tmp_path / "keys")
    # full-batch mlr (iterations) has no refresh either: with refresh, mlr is the mini-batch trainer
    with pytest.raises(HetrainUserError, match="iterations counts full-batch iterations of refresh none"):
        fit(X, y, "mlr", {"iterations": 2}, preset="n8192", backend="sim", progress=False, refresh="client",
            keys=tmp_path / "keys")
    assert not (tmp_path / "keys").exists()  # refused before any key was made


def test_bootstrap_refresh_on_sim_in_the_server_process(tmp_path):
    X, y = load_iris(return_X_y=True)
    KeyDir.create(tmp_path / "keys", "sim", "n16384", seed=0, bootstrap_level=7)  # INSECURE: planning only
    r = fit(X, y, "mlr", CFG, backend="sim", refresh="bootstrap", keys=tmp_path / "keys", progress=False,
            plan=False, validation_fraction=0.2)  # 120 training rows, 30 held out
    s = r.stats
    # 6 steps, 4 levels each in 7: a bootstrap of every state ciphertext before steps 2..6
    assert s["steps"] == 6 and s["bootstraps"] > 0 and s["bootstraps"] % 5 == 0
    assert s["refreshes"] == 0 and s["evaluations"] == 2  # the channel only carries the epoch-end verdicts
    assert s["twin_max_abs_diff"] < 1e-9


def _server_child():
    kids = _server_processes()
    assert len(kids) == 1
    return kids[0]


class KillAt:
    """Wraps the client's answers: SIGKILLs the server process when it asks for evaluation at ``step``."""

    def __init__(self, inner, step):
        self.inner, self.step = inner, step

    def refresh(self, state, step):
        return self.inner.refresh(state, step)

    def evaluate(self, state, step, epoch, refresh=False):
        if step == self.step:
            os.kill(_server_child().pid, signal.SIGKILL)  # our own child, like an OOM kill
        return self.inner.evaluate(state, step, epoch, refresh)


def test_server_killed_mid_refresh_gives_a_clear_error_and_the_job_resumes(tmp_path, keyroot):
    kit = _long_job(keyroot, tmp_path, CFG)
    with pytest.raises(ServerError, match="exited with status -9.*refresh channel"):
        _train(kit, handler_wrapper=lambda h: KillAt(h, 4))  # epoch 2 ends at step 4: merged evaluate+refresh
    _, meta = checkpoint.StateCheckpoint(tmp_path / "state.ckpt", kit.engine).load()
    assert meta["step"] == 4  # the checkpoint of the last completed step survived the kill
    r = _train(kit, resume=True)
    run = r.stats["run"]
    assert run["resumed_from"] == 4 and r.stats["steps"] == 6 and len(run["step_s"]) == 2
    # same as an uninterrupted run
    np.testing.assert_allclose(_last_weights(kit), r.stats["twin_weights"], atol=1e-9)


def test_server_notices_the_client_going_away(tmp_path, keyroot):
    """The data owner vanishes in the middle of a refresh and nobody attaches again: the server waits
    for --channel-timeout seconds, then fails with a clear error (the job can be resumed)."""
    job = _long_job(keyroot, tmp_path, CFG, validation=False)
    path = tmp_path / "c.sock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen(server_argv(tmp_path, progress=False, channel=path, channel_timeout=1),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(300):  # the server listens once it has read the job
        try:
            conn.connect(str(path))
            break
        except OSError:
            time.sleep(0.1)
    hello, _, _ = recv_frame(conn)
    assert hello["op"] == "hello" and hello["key_id"] == job.engine.key_id
    send_frame(conn, {"op": "ok", "key_id": job.engine.key_id, "seq": hello.get("seq")})
    request, blobs, _ = recv_frame(conn)
    assert request["op"] == "refresh" and blobs
    conn.close()  # the client vanishes in the middle of a refresh
    assert proc.wait(timeout=60) == 2
    err = json.loads((tmp_path / files.SERVER_ERROR).read_text())
    assert err["user_error"] and "no data owner attached" in err["message"]
    assert not (tmp_path / files.OUTPUTS).exists() and not path.exists()
    assert "waiting for the data owner to attach" in proc.stderr.read()
    proc.stderr.close()


def _record_client_frames(monkeypatch) -> list[dict]:
    """Every header the client sends on the refresh channel (the ciphertext blobs are fresh encryptions)."""
    from hetrain.protocol import refresh_channel

    sent, real = [], refresh_channel.send_frame

    def spy(sock, header, blobs=()):
        sent.append(json.loads(json.dumps(header)))
        return real(sock, header, blobs)

    monkeypatch.setattr(refresh_channel, "send_frame", spy)
    return sent


def _numbers(x) -> list:
    if isinstance(x, dict):
        # seq: the number of the request answered, echoed (tests/test_channel.py checks it is the echo)
        return [n for k, v in x.items() if k not in ("blobs", "state", "seq") for n in _numbers(v)]
    if isinstance(x, list):
        return [n for v in x for n in _numbers(v)]
    return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


def test_client_check_failure_stops_the_server_with_a_fixed_code(tmp_path, monkeypatch, keyroot):
    sent = _record_client_frames(monkeypatch)
    # a huge step pushes the next sigmoid inputs far outside [-8, 8]; with retraction off (as under
    # bootstrapping) the client refuses to go on
    kit = _long_job(keyroot, tmp_path, {**CFG, "learning_rate": 500.0})
    v = kit.job.validation(kit.engine, None)
    v.retract = False
    with pytest.raises(IntervalError, match="outside") as info:
        _train(kit, handler=ClientRefresher(kit.engine, check=v.check, evaluate=v.evaluate))
    assert not _server_processes()  # the server process was stopped, not left behind
    # the server heard only the fixed code: no span, min or max of decrypted values
    assert {k: v for k, v in sent[-1].items() if k != "seq"} == {"op": "error", "code": "client_refused"}
    assert "span [" in str(info.value)  # the client keeps its reason


def test_no_decrypted_derived_number_crosses_to_the_server(tmp_path, monkeypatch, keyroot):
    """A whole default-planned run (retraction, validation, early stopping): every header the client
    sends holds only its op, key id, the state's layout (names and counts) and the stop bit."""
    sent = _record_client_frames(monkeypatch)
    kit = _long_job(keyroot, tmp_path, {"epochs": 6, "learning_rate": 64.0})
    r = _train(kit)
    assert any(h["kind"] == "retract" for h in r.stats["history"])  # the run did adapt on decrypted values
    assert sent and {k for h in sent for k in h} <= {"op", "key_id", "state", "stop", "blobs", "seq"}
    assert {h["op"] for h in sent} <= {"ok", "refreshed", "verdict", "bye"}
    assert _numbers(sent) == []
    for h in sent:  # the layout: names and ciphertext counts, the same at every round trip
        assert h.get("state") in (None, sent[1].get("state"))


def test_a_run_built_to_leave_the_interval_adapts_and_finishes(tmp_path, keyroot):
    """The same huge step with retraction (client refresh, the default): the client scales the weights
    back at every refresh, says so, and the twin replays it."""
    kit = _long_job(keyroot, tmp_path, {**CFG, "learning_rate": 500.0})
    r = _train(kit)
    retracts = [h for h in r.stats["history"] if h["kind"] == "retract"]
    assert retracts and all(0 < h["min_factor"] < 1 for h in retracts)
    assert r.stats["steps"] == 3 * 2 and r.stats["twin_max_abs_diff"] < 1e-9
    job = kit.job
    z = np.c_[np.ones(len(job.Xp)), job.Xp] @ _last_weights(kit).T  # the final step is not retracted,
    assert np.abs(z).max() > 8  # so it shows how far the unretracted steps would have gone


def _server_processes() -> list:
    """This process's live server children (not multiprocessing's resource tracker, which a test that ran
    an executor in this process leaves, nor zombies already reaped by nobody but harmless)."""
    out = []
    for p in psutil.Process().children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "hetrain.protocol.server" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out
