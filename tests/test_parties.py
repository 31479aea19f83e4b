"""Issue 12: the two parties' commands, each in its own process and directory.

The data owner works in OWNER/ (KEYS/, the data, the model), the training server in SERVER/ (the
job bundle). The server's directory never holds a file of the secret-key kind, and the server
process never opens anything under OWNER/ (HETRAIN_SERVER_AUDIT: every path it opens)."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from hetrain.data import load_builtin
from hetrain.protocol import TrainedModel

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"


def hetrain(*args, cwd, env=None, check=True, **kw):
    """`hetrain ARGS` in its own process (what a user on that machine types)."""
    e = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    r = subprocess.run([sys.executable, "-m", "hetrain.cli.main", *map(str, args)], cwd=cwd, env=e,
                       capture_output=True, text=True, timeout=600, **kw)
    if check:
        assert r.returncode == 0, f"hetrain {args[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def spawn(*args, cwd, env=None):
    """`hetrain ARGS` started in the background; its output goes to temporary files, not pipes: a pipe
    nobody reads while the process runs fills up (64 KB) and blocks the process. `serve` writes an access
    line per request (~100 B; ~50 requests per second of a refresh session), so a slow run blocked the
    service — the likely cause of a CI run where the service test waited out its 180 s. ``finished``
    reads them."""
    e = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", "hetrain.cli.main", *map(str, args)], cwd=cwd, env=e,
                            stdout=out, stderr=err, text=True)
    proc.logs = (out, err)
    return proc


def finished(proc, timeout: float) -> tuple[str, str]:
    """(stdout, stderr) of a ``spawn``ed process once it has ended (waits up to ``timeout`` seconds)."""
    proc.wait(timeout=timeout)
    texts = []
    for f in proc.logs:
        f.seek(0)
        texts.append(f.read())
    return texts[0], texts[1]


@pytest.fixture
def parties(tmp_path):
    owner, server = tmp_path / "owner", tmp_path / "server"
    owner.mkdir()
    server.mkdir()
    X, y = load_builtin("iris")
    np.savetxt(owner / "iris.csv", np.column_stack([y, X]), delimiter=",")
    return owner, server


def holds_secret_key(path: pathlib.Path) -> bool:
    """Any file under ``path`` that is a secret-key container (whatever its name)."""
    from hetrain.ckks.container import unpack

    for f in path.rglob("*"):
        if not f.is_file():
            continue
        data = f.read_bytes()
        try:
            meta, _ = unpack(data)
        except Exception:
            meta = {}
        if isinstance(meta, dict) and meta.get("kind") == "secret_key":
            return True
        if b'"kind": "secret_key"' in data or b'"kind":"secret_key"' in data:
            return True
    return False


def assert_server_never_opened(audit: pathlib.Path, owner: pathlib.Path) -> set[str]:
    """No process of the server (it and its workers: "PID PATH" lines) opened a file of the data owner;
    returns the process ids that the audit recorded."""
    records = [line.split(" ", 1) for line in audit.read_text().splitlines()]
    assert records, "the audit hook recorded nothing"
    inside = [p for _, p in records if os.path.realpath(p).startswith(os.path.realpath(owner))]
    assert not inside, f"the server process opened the data owner's files: {inside[:5]}"
    return {pid for pid, _ in records}



@pytest.mark.parametrize("backend, preset, model_args", [
    ("sim", "n16384", ["--model", "mlr", "--iterations", "2", "--sigmoid", "deg3:16"]),
    pytest.param("seal", "n16384", ["--model", "mlr", "--iterations", "1", "--sigmoid", "deg3:16"],
                 marks=pytest.mark.slow),  # SEAL end to end in four processes: ~11 s (pytest --durations)
])
def test_four_steps_in_separate_processes_and_directories(parties, backend, preset, model_args):
    owner, server = parties
    r = hetrain("keygen", "--out", "KEYS", "--backend", backend, "--preset", preset, cwd=owner)
    assert "secret key" in r.stdout
    keys = owner / "KEYS"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "secret.key").stat().st_mode) == 0o600
    r = hetrain("encrypt", "--keys", "KEYS", "--data", "iris.csv", "--out", server / "JOB", *model_args, "--quiet",
                cwd=owner)
    assert "no secret key" in r.stdout
    assert not holds_secret_key(server)
    audit = server / "audit.txt"
    r = hetrain("train", "--job", "JOB", "--quiet", "--workers", "2", cwd=server,
                env={"HETRAIN_SERVER_AUDIT": str(audit)})
    assert (server / "JOB" / "outputs.bin").is_file()
    # the server process and its worker process, each audited
    assert len(assert_server_never_opened(audit, owner)) == 2
    assert not holds_secret_key(server)
    stats = json.loads((server / "JOB" / "server_stats.json").read_text())
    assert stats["engine_has_secret_key"] is False
    r = hetrain("decrypt", "--keys", "KEYS", "--job", server / "JOB", "--out", "model.json", cwd=owner)
    assert "twin_max_abs_diff=" in r.stdout
    model = TrainedModel.load(owner / "model.json")
    X, y = load_builtin("iris")
    assert model.accuracy(X, y) > 0.8
    assert model.key_id == json.loads((keys / "key.json").read_text())["key_id"]


def test_refresh_client_data_owner_comes_and_goes(parties):
    """Mini-batch mlr with client refresh: the server waits for the data owner, who attaches, leaves
    (killed mid-run) and comes back; the job finishes and decrypts within the twin's tolerance."""
    owner, server = parties
    hetrain("keygen", "--out", "KEYS", "--backend", "sim", cwd=owner)
    hetrain("encrypt", "--keys", "KEYS", "--data", "iris.csv", "--out", server / "JOB", "--epochs", "6",
            "--batch-size", "32", "--patience", "0", "--quiet", cwd=owner)
    audit = server / "audit.txt"
    train = spawn("train", "--job", "JOB", "--quiet", "--channel-timeout", "60", cwd=server,
                  env={"HETRAIN_SERVER_AUDIT": str(audit)})
    try:
        first = spawn("refresh", "--keys", "KEYS", "--job", server / "JOB", cwd=owner)
        # let the first session answer a few requests, then take it away without a goodbye
        deadline = time.monotonic() + 60
        record = next((owner / "KEYS" / "jobs").iterdir())
        while time.monotonic() < deadline and not (record / "validation.json").exists():
            time.sleep(0.05)
        if not (record / "validation.json").exists():
            first.kill()
            pytest.fail(f"no validation within 60 s; the data owner's session said {finished(first, 5)}")
        first.send_signal(signal.SIGKILL)
        first.wait()
        time.sleep(0.5)
        assert train.poll() is None, "the server must wait for the data owner, not fail"
        second = hetrain("refresh", "--keys", "KEYS", "--job", server / "JOB", cwd=owner)
        assert "the server is done" in second.stdout
        out, err = finished(train, 300)
        assert train.returncode == 0, err
    finally:
        if train.poll() is None:
            train.kill()
    stats = json.loads((server / "JOB" / "server_stats.json").read_text())
    assert stats["refresh"]["attaches"] >= 2
    assert_server_never_opened(audit, owner)
    hetrain("decrypt", "--keys", "KEYS", "--job", server / "JOB", "--out", "model.json", cwd=owner)
    assert TrainedModel.load(owner / "model.json").accuracy(*load_builtin("iris")) > 0.8
    assert not holds_secret_key(server)


def test_resume_after_kill_through_the_commands(parties):
    """`hetrain train` killed (with its server process) mid-run; `train` again is refused with the fix,
    `train --resume` finishes, and the model decrypts within the twin's tolerance."""
    owner, server = parties
    hetrain("keygen", "--out", "KEYS", "--backend", "sim", "--preset", "n16384-deep", cwd=owner)
    hetrain("encrypt", "--keys", "KEYS", "--data", "iris.csv", "--out", server / "JOB", "--model", "mlr",
            "--iterations", "3", "--sigmoid", "deg3:16", "--quiet", cwd=owner)
    tests = str(pathlib.Path(__file__).parent)
    env = {"PYTHONPATH": f"{SRC}{os.pathsep}{tests}", "HETRAIN_TEST_PAUSE_AFTER": "2"}
    e = {**os.environ, **env}
    proc = subprocess.Popen([sys.executable, "-m", "hetrain.cli.main", "train", "--job", "JOB", "--quiet",
                             "--trainer-module", "resume_pause_hook"], cwd=server, env=e, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (server / "JOB" / "state.ckpt").exists():
        time.sleep(0.02)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the machine goes down: the command and its server process
    proc.wait()
    assert (server / "JOB" / "state.ckpt").exists() and not (server / "JOB" / "outputs.bin").exists()
    r = hetrain("train", "--job", "JOB", "--quiet", cwd=server, check=False)
    assert r.returncode == 1 and "--resume" in r.stderr and "Traceback" not in r.stderr
    r = hetrain("train", "--job", "JOB", "--resume", "--quiet", cwd=server)
    assert "resumed from" in r.stdout
    r = hetrain("decrypt", "--keys", "KEYS", "--job", server / "JOB", "--out", "model.json", cwd=owner)
    assert TrainedModel.load(owner / "model.json").accuracy(*load_builtin("iris")) > 0.8


def test_refusals_name_their_fix(parties):
    owner, server = parties
    hetrain("keygen", "--out", "KEYS", "--backend", "sim", "--preset", "n8192", cwd=owner)
    r = hetrain("keygen", "--out", "KEYS", "--backend", "sim", cwd=owner, check=False)
    assert r.returncode == 1 and "already holds keys" in r.stderr and "Traceback" not in r.stderr
    # a job that needs more levels than the keys' parameters: the error names the keygen that fits ...
    r = hetrain("encrypt", "--keys", "KEYS", "--data", "iris.csv", "--out", server / "JOB", "--model", "mlr",
                "--iterations", "3", "--sigmoid", "deg3:16", "--quiet", cwd=owner, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    import re

    m = re.search(r"hetrain keygen --out NEWKEYS --preset (\S+)`", r.stderr)
    assert m, r.stderr
    # ... and following it works
    hetrain("keygen", "--out", "NEWKEYS", "--backend", "sim", "--preset", m.group(1), cwd=owner)
    hetrain("encrypt", "--keys", "NEWKEYS", "--data", "iris.csv", "--out", server / "JOB", "--model", "mlr",
            "--iterations", "3", "--sigmoid", "deg3:16", "--quiet", cwd=owner)
    # decrypting before training, or with another key directory
    r = hetrain("decrypt", "--keys", "NEWKEYS", "--job", server / "JOB", "--out", "m.json", cwd=owner, check=False)
    assert r.returncode == 1 and "train it first" in r.stderr
    r = hetrain("decrypt", "--keys", "KEYS", "--job", server / "JOB", "--out", "m.json", cwd=owner, check=False)
    assert r.returncode == 1 and "use the key directory that encrypted it" in r.stderr
    r = hetrain("encrypt", "--keys", server, "--data", "iris.csv", "--out", server / "J3", cwd=owner, check=False)
    assert r.returncode == 1 and "not a hetrain key directory" in r.stderr
    r = hetrain("refresh", "--keys", "NEWKEYS", "--job", server / "JOB", cwd=owner, check=False)
    assert r.returncode == 1 and "nothing to attach to" in r.stderr


def test_cli_api_and_estimator_give_the_same_model(tmp_path):
    """Every path is the same pipeline: same options and seed on the sim backend, same weights."""
    from hetrain.estimators import EncryptedLogisticRegression
    from hetrain.protocol import fit

    X, y = load_builtin("wine")
    np.savetxt(tmp_path / "wine.csv", np.column_stack([y, X]), delimiter=",")
    hetrain("fit", "--data", "wine.csv", "--backend", "sim", "--seed", "3", "--epochs", "4", "--out", "cli.json",
            "--quiet", cwd=tmp_path)
    cli = TrainedModel.load(tmp_path / "cli.json")
    api = fit(X, y, backend="sim", seed=3, max_epochs=4, progress=False).model
    est = EncryptedLogisticRegression(backend="sim", random_state=3, epochs=4).fit(X, y).model_
    for other in (api, est):
        assert other.weights.keys() == cli.weights.keys()
        for k in cli.weights:
            np.testing.assert_allclose(other.weights[k], cli.weights[k], atol=1e-6)
    assert api.info["stop_reason"] == cli.info["stop_reason"]


CLIENT_MODULES = ("hetrain.protocol.steps", "hetrain.protocol.client_jobs", "hetrain.protocol.keys",
                  "hetrain.protocol.refresh", "hetrain.protocol.client", "hetrain.protocol.planning",
                  "hetrain.protocol.transport", "hetrain.models.advice")


def test_the_server_process_never_imports_the_data_owners_code(parties):
    """The server's entry trains a job without loading the client's modules (keys, steps, the
    client's job halves, refresh answers, planning, transports)."""
    owner, server = parties
    hetrain("keygen", "--out", "KEYS", "--backend", "sim", "--preset", "n16384-deep", cwd=owner)
    hetrain("encrypt", "--keys", "KEYS", "--data", "iris.csv", "--out", server / "JOB", "--model", "mlp",
            "--layout", "dvr", "--hidden", "4", "--iterations", "1", "--refresh", "none", "--quiet", cwd=owner)
    code = ("import sys\n"
            "from hetrain.protocol.server import main\n"
            "rc = main([sys.argv[1]])\n"
            f"print(rc, [m for m in {CLIENT_MODULES!r} if m in sys.modules])\n")
    r = subprocess.run([sys.executable, "-c", code, str(server / "JOB")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=300)
    assert r.stdout.strip() == "0 []", (r.stdout, r.stderr)
    assert (server / "JOB" / "outputs.bin").is_file()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_through_the_service_submit_refresh_comes_and_goes_decrypt(parties, tmp_path):
    """encrypt → submit to `hetrain serve` → the data owner's HTTP refresh session is killed mid-run and
    started again → decrypt downloads the result; the service's directory never holds a secret key."""
    pytest.importorskip("fastapi")
    owner, _ = parties
    service_dir = tmp_path / "service"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve = spawn("serve", "--host", "127.0.0.1", "--port", port, "--workdir", service_dir, cwd=tmp_path)
    try:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        hetrain("keygen", "--out", "KEYS", "--backend", "sim", cwd=owner)
        hetrain("encrypt", "--keys", "KEYS", "--data", "iris.csv", "--out", "JOB", "--epochs", "6",
                "--batch-size", "32", "--patience", "0", "--quiet", cwd=owner)
        r = hetrain("submit", "--job", "JOB", "--server", url, "--quiet", cwd=owner)
        remote = r.stdout.split("the service's job id is ")[1].split()[0]
        saved = json.loads((owner / "JOB" / "remote.json").read_text())  # the job's id and token, 0600
        assert saved["id"] == remote and saved["url"] == url and len(saved["token"]) >= 43
        assert (owner / "JOB" / "remote.json").stat().st_mode & 0o777 == 0o600
        assert saved["token"] not in r.stdout + r.stderr
        first = spawn("refresh", "--keys", "KEYS", "--job", "JOB", "--server", url, "--remote-job", remote, cwd=owner)
        record = next((owner / "KEYS" / "jobs").iterdir())
        deadline = time.monotonic() + 180  # the service starts the server, which loads the job first: slow under load
        while time.monotonic() < deadline and not (record / "validation.json").exists():
            time.sleep(0.05)
        if not (record / "validation.json").exists():
            first.kill()
            serve.terminate()
            pytest.fail(f"no validation within 180 s; the data owner's session said {finished(first, 5)}; "
                        f"the service said {finished(serve, 30)[1][-4000:]}")
        first.kill()
        first.wait()
        assert httpx.get(f"{url}/v1/jobs/{remote}", timeout=5).status_code == 401  # the token is the key
        status = httpx.get(f"{url}/v1/jobs/{remote}", timeout=5,
                           headers={"Authorization": f"Bearer {saved['token']}"}).json()
        assert status["status"] in ("queued", "running"), status  # the job waits for the data owner
        second = hetrain("refresh", "--keys", "KEYS", "--job", "JOB", "--server", url, cwd=owner)  # remote.json
        assert "the server is done" in second.stdout
        hetrain("decrypt", "--keys", "KEYS", "--job", "JOB", "--server", url, "--out", "model.json", cwd=owner)
        assert TrainedModel.load(owner / "model.json").accuracy(*load_builtin("iris")) > 0.8
        assert not holds_secret_key(service_dir)
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_a_mini_batch_option_on_full_batch_mlr_is_refused_alike_on_every_path(tmp_path):
    from hetrain.errors import HetrainUserError
    from hetrain.protocol import fit

    X, y = load_builtin("iris")
    np.savetxt(tmp_path / "iris.csv", np.column_stack([y, X]), delimiter=",")
    r = hetrain("fit", "--data", "iris.csv", "--out", "m.json", "--backend", "sim", "--refresh", "none",
                "--iterations", "2", "--epochs", "3", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "--epochs applies to --model mlr with refresh" in r.stderr
    with pytest.raises(HetrainUserError, match="epochs applies to mlr with refresh"):
        fit(X, y, "mlr", {"iterations": 2, "epochs": 3}, refresh="none", backend="sim", progress=False)
    assert not (tmp_path / "m.json").exists()


def test_a_server_that_returns_other_values_is_stopped_at_the_next_refresh(tmp_path):
    """Issue 13 item 4: every state the data owner decrypts mid-run is compared with the twin after
    the same steps; a dishonest server is stopped there and no model is released (not even a
    partial one), with a message that its result could not be verified."""
    from hetrain.protocol import fit
    from hetrain.protocol.errors import TwinMismatch

    X, y = load_builtin("iris")
    os.environ["HETRAIN_TEST_TAMPER_STEP"] = "3"
    try:
        with pytest.raises(TwinMismatch, match="could not be verified"):
            fit(X, y, "mlr", {"epochs": 8, "batch_size": 32, "patience": 0}, backend="sim", progress=False, plan=False,
                keys=tmp_path / "KEYS", trainer_modules=("tamper_hook",))
    finally:
        del os.environ["HETRAIN_TEST_TAMPER_STEP"]
    record = next((tmp_path / "KEYS" / "jobs").iterdir())
    history = json.loads((record / "validation.json").read_text())["history"]
    assert history and max(h["step"] for h in history) < 3  # nothing decrypted after the tampering is recorded


def test_fit_with_a_key_directory_keeps_it_and_refuses_other_parameters(tmp_path):
    from hetrain.errors import HetrainUserError
    from hetrain.protocol import fit

    X, y = load_builtin("iris")
    r = fit(X, y, "mlr", {"iterations": 2, "sigmoid": "deg3:16"}, backend="sim", keys=tmp_path / "K",
            workdir=tmp_path / "JOB", progress=False)
    assert (tmp_path / "K" / "secret.key").is_file() and not holds_secret_key(tmp_path / "JOB")
    again = fit(X, y, "mlr", {"iterations": 2, "sigmoid": "deg3:16"}, backend="sim", keys=tmp_path / "K",
                progress=False)
    assert again.model.key_id == r.model.key_id  # the same secret key, fresh evaluation keys
    with pytest.raises(HetrainUserError, match="leave --preset at auto"):
        fit(X, y, "mlr", {"iterations": 2}, backend="sim", preset="n32768", keys=tmp_path / "K", progress=False)
    with pytest.raises(HetrainUserError, match="--backend at sim"):
        fit(X, y, "mlr", {"iterations": 2}, backend="seal", keys=tmp_path / "K", progress=False)


def test_decrypt_refuses_a_result_that_disagrees_with_the_twin_unless_forced(parties):
    """Issue 13 item 4: a server's result that is not the computation asked for (here: well-formed
    encryptions of other values in outputs.bin) is refused — exit 1, nothing written — and written only
    with --force-unverified, marked unverified, exit 6."""
    from hetrain.protocol import files
    from hetrain.protocol.keys import KeyDir

    owner, server = parties
    hetrain("keygen", "--out", "KEYS", "--backend", "sim", cwd=owner)
    hetrain("encrypt", "--keys", "KEYS", "--data", "iris.csv", "--out", server / "JOB", "--model", "mlr",
            "--iterations", "2", "--sigmoid", "deg3:16", "--quiet", cwd=owner)
    hetrain("train", "--job", "JOB", "--quiet", cwd=server)
    engine = KeyDir.open(owner / "KEYS").job_engine(())
    outputs = files.read_ciphertext_map(server / "JOB" / files.OUTPUTS, engine, "outputs")
    tampered = {k: [engine.add(ct, 0.5) for ct in v] for k, v in outputs.items()}
    files.write_ciphertext_map(server / "JOB" / files.OUTPUTS, engine, tampered)
    r = hetrain("decrypt", "--keys", "KEYS", "--job", server / "JOB", "--out", "m.json", cwd=owner, check=False)
    assert r.returncode == 1 and "could not be verified" in r.stderr and not (owner / "m.json").exists()
    r = hetrain("decrypt", "--keys", "KEYS", "--job", server / "JOB", "--out", "m.json", "--force-unverified",
                cwd=owner, check=False)
    assert r.returncode == 6 and "UNVERIFIED" in r.stdout
    assert TrainedModel.load(owner / "m.json").info["verified"] is False
