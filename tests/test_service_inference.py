"""Encrypted inference through a real `hetrain serve` subprocess (service/inference.py).

Case (a): a job trained on the service scores its data owner's encrypted queries there (the
encrypted model never leaves it); case (b): `hetrain serve --model` scores another party's
encrypted queries with a plaintext model. Both with the CLI as a user runs it (sim, and SEAL
n8192), and the refusals as raw HTTP: no or wrong token (401/404), a bundle under another key or
for another spec (400), claims that its ciphertexts cannot hold (400), unknown models (404).
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.datasets import load_iris

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from hetrain.cli.main import main  # noqa: E402
from hetrain.protocol import files, steps  # noqa: E402
from hetrain.protocol import inference as inf  # noqa: E402
from hetrain.protocol.keys import KeyDir  # noqa: E402
from hetrain.protocol.model import TrainedModel  # noqa: E402
from hetrain.protocol.model_spec import model_spec  # noqa: E402
from hetrain.protocol.transport import tar_stream  # noqa: E402

from agree import assert_agree  # noqa: E402

DEADLINE_S = 60.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serve:
    """`python -m hetrain.cli.main serve ...` on 127.0.0.1:<free port>, stopped by ``stop``."""

    def __init__(self, root: pathlib.Path, *args: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "serve.log"
        self.log = open(self.log_path, "wb")
        env = {k: v for k, v in os.environ.items() if k not in ("HETRAIN_API_KEYS", "HETRAIN_API_KEY")}
        self.proc = subprocess.Popen([sys.executable, "-m", "hetrain.cli.main", "serve", "--port", str(self.port),
                                      "--workdir", str(root / "w"), *args], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{self.url}/v1/health", timeout=2).json()["status"] == "ok"
                return
            except httpx.TransportError:
                assert self.proc.poll() is None and time.monotonic() < deadline, self.log_path.read_text()
                time.sleep(0.1)

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()
        return self.log_path.read_text()


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory, iris):
    """A model owner's plaintext mlr model, a service scoring with it, the Iris CSVs."""
    root = tmp_path_factory.mktemp("svc-inference")
    X, y = iris
    r = steps.fit(X, y, "mlr", {"iterations": 1}, refresh="none", backend="sim", preset="n8192", keys=root / "MK",
                  workdir=root / "MJOB", progress=False)
    r.model.save(root / "model.json")
    assert main(["datasets", "export", "iris", "--out", str(root / "iris.csv")]) == 0
    np.savetxt(root / "queries.csv", X, delimiter=",")
    serve = Serve(root, "--model", str(root / "model.json"))
    yield {"root": root, "url": serve.url, "model": TrainedModel.load(root / "model.json"), "X": X, "y": y}
    log = serve.stop()
    assert "scoring encrypted queries with model spec" in log, log


def _raw(url: str, path: str, bundle: pathlib.Path, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(url + path, content=b"".join(tar_stream(bundle)), headers=headers, timeout=DEADLINE_S)


def _trained_on_service(root: pathlib.Path, world, backend: str = "sim") -> tuple[pathlib.Path, pathlib.Path, dict]:
    """keygen, encrypt, `hetrain submit`: a job trained on the service (KEYS, JOB, JOB/remote.json)."""
    keys, job = root / "KEYS", root / "JOB"
    assert main(["keygen", "--out", str(keys), "--preset", "n8192", "--backend", backend]) == 0
    assert main(["encrypt", "--keys", str(keys), "--data", str(world["root"] / "iris.csv"), "--model", "mlr",
                 "--iterations", "1", "--refresh", "none", "--out", str(job)]) == 0
    assert main(["submit", "--job", str(job), "--server", world["url"], "--quiet"]) == 0
    return keys, job, json.loads((job / "remote.json").read_text())


def _case_a(root: pathlib.Path, world, backend: str, capsys) -> None:
    keys, job, remote = _trained_on_service(root, world, backend)
    qa, pred = root / "QA", root / "pred-a.csv"
    assert main(["encrypt-queries", "--keys", str(keys), "--data", str(world["root"] / "queries.csv"), "--job", str(job),
                 "--server", world["url"], "--out", str(qa)]) == 0
    qremote = json.loads((qa / "remote.json").read_text())
    assert qremote["id"] != remote["id"] and qremote["token"] != remote["token"]
    assert os.stat(qa / "remote.json").st_mode & 0o777 == 0o600
    assert not (job / files.OUTPUTS).exists()  # the encrypted model stayed on the service
    capsys.readouterr()
    assert main(["decrypt-scores", "--keys", str(keys), "--queries", str(qa), "--server", world["url"],
                 "--out", str(pred)]) == 0
    assert "max |score - plaintext twin|" in capsys.readouterr().out
    s = inf.decrypt_scores(KeyDir.open(keys), qa)  # the downloaded scores, checked against the twin again
    assert_agree(s.scores, s.twin_scores, 1e-6 if backend == "sim" else 1e-3)
    # the training job is still there: its owner decrypts it now, and the predictions agree
    assert main(["decrypt", "--keys", str(keys), "--job", str(job), "--server", world["url"],
                 "--out", str(root / "m.json")]) == 0
    labels = np.loadtxt(pred, delimiter=",", skiprows=1)
    model = TrainedModel.load(root / "m.json")
    scores = model.predict_scores(world["X"])
    top2 = np.sort(scores, axis=1)[:, -2:]
    close = top2[:, 1] - top2[:, 0] < 1e-3
    assert np.array_equal(labels[~close], model.predict(world["X"])[~close])


def _case_b(root: pathlib.Path, world, backend: str, capsys) -> None:
    qkeys, qb, pred = root / "QKEYS", root / "QB", root / "pred-b.csv"
    assert main(["keygen", "--out", str(qkeys), "--preset", "n8192", "--backend", backend]) == 0
    capsys.readouterr()
    assert main(["encrypt-queries", "--keys", str(qkeys), "--data", str(world["root"] / "queries.csv"),
                 "--server", world["url"], "--out", str(qb)]) == 0  # the spec from GET /v1/models
    assert "submitted to" in capsys.readouterr().out
    assert main(["decrypt-scores", "--keys", str(qkeys), "--queries", str(qb), "--server", world["url"],
                 "--out", str(pred), "--proba"]) == 0
    s = inf.decrypt_scores(KeyDir.open(qkeys), qb)
    assert_agree(s.scores, world["model"].predict_scores(world["X"]), 1e-6 if backend == "sim" else 1e-3)
    assert pred.read_text().splitlines()[0] == "label,p_0,p_1,p_2"


def test_both_cases_through_hetrain_serve_sim(tmp_path, world, capsys):
    _case_a(tmp_path / "a", world, "sim", capsys)
    _case_b(tmp_path / "b", world, "sim", capsys)


@pytest.mark.slow  # SEAL end to end, 9-12 s on 2 shared cores (pytest --durations)
def test_both_cases_through_hetrain_serve_seal(tmp_path, world, capsys):
    _case_a(tmp_path / "a", world, "seal", capsys)
    _case_b(tmp_path / "b", world, "seal", capsys)


def _retarget_sha(bundle: pathlib.Path) -> None:
    """Make the manifest's checksum of job.json match an edited job.json (what a forger would do)."""
    m = json.loads((bundle / files.MANIFEST).read_text())
    m["sha256"][files.JOB] = hashlib.sha256((bundle / files.JOB).read_bytes()).hexdigest()
    (bundle / files.MANIFEST).write_text(json.dumps(m))


def test_refusals(tmp_path, world, iris):
    X, y = iris
    url = world["url"]
    keys, job, remote = _trained_on_service(tmp_path, world)
    path = f"/v1/jobs/{remote['id']}/queries"
    steps_train = tmp_path / "ignored"
    steps_train.mkdir()
    # queries for this job (made once its stats are here)
    from hetrain.protocol import inference_remote

    inference_remote.training_stats(job, url, progress=False)
    inf.encrypt_queries_for_job(KeyDir.open(keys), X, job, tmp_path / "QA")
    r = _raw(url, path, tmp_path / "QA")
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    r = _raw(url, path, tmp_path / "QA", token="not-the-token-of-this-job")
    assert r.status_code == 404 and "no job with id" in r.json()["error"]
    # a bundle under another key (another data owner's job, trained here)
    other = tmp_path / "other"
    r2 = steps.fit(X, y, "mlr", {"iterations": 1}, refresh="none", backend="sim", preset="n8192", keys=other / "K",
                   workdir=other / "JOB", progress=False)
    assert r2.model is not None
    inf.encrypt_queries_for_job(KeyDir.open(other / "K"), X, other / "JOB", tmp_path / "QO")
    r = _raw(url, path, tmp_path / "QO", token=remote["token"])
    assert r.status_code == 400 and "encrypted under key" in r.json()["error"], r.text
    # a case (b) bundle at a job's endpoint, and a case (a) bundle at a model's
    qkeys = steps.keygen(tmp_path / "QK", backend="sim", preset="n8192")
    spec = model_spec(world["model"])
    inf.encrypt_queries(qkeys, X, spec, tmp_path / "QB")
    r = _raw(url, path, tmp_path / "QB", token=remote["token"])
    assert r.status_code == 400 and "encrypted for a model spec" in r.json()["error"], r.text
    r = _raw(url, f"/v1/models/{spec['spec_id']}/queries", tmp_path / "QA")
    assert r.status_code == 400 and "training job's encrypted model" in r.json()["error"], r.text
    # a training bundle at a queries endpoint
    r = _raw(url, f"/v1/models/{spec['spec_id']}/queries", other / "JOB")
    assert r.status_code == 400 and "not a query bundle" in r.json()["error"], r.text
    # claims its ciphertexts cannot hold: refused by the checker, before anything runs
    forged = tmp_path / "QF"
    shutil.copytree(tmp_path / "QB", forged)
    qjob = json.loads((forged / files.JOB).read_text())
    (forged / files.JOB).write_text(json.dumps(dict(qjob, n_queries=10 ** 6)))
    _retarget_sha(forged)
    r = _raw(url, f"/v1/models/{spec['spec_id']}/queries", forged)
    assert r.status_code == 400 and "1000000 queries in this packing make" in r.json()["error"], r.text
    # models: the published spec; unknown ones 404
    listed = httpx.get(f"{url}/v1/models", timeout=10).json()["models"]
    assert [s["spec_id"] for s in listed] == [spec["spec_id"]] and "W" not in json.dumps(listed)
    assert httpx.get(f"{url}/v1/models/{spec['spec_id']}", timeout=10).json() == spec
    r = httpx.get(f"{url}/v1/models/0123456789abcdef", timeout=10)
    assert r.status_code == 404 and "no model of spec" in r.json()["error"]
    r = _raw(url, "/v1/models/0123456789abcdef/queries", tmp_path / "QB")
    assert r.status_code == 404
    # an inference job's token reads that job only, not the training job
    r = _raw(url, path, tmp_path / "QA", token=remote["token"])
    assert r.status_code == 201, r.text
    q = r.json()
    bad = httpx.get(f"{url}/v1/jobs/{remote['id']}", headers={"Authorization": f"Bearer {q['token']}"}, timeout=10)
    assert bad.status_code == 404
    st = httpx.get(f"{url}/v1/jobs/{q['id']}", headers={"Authorization": f"Bearer {q['token']}"}, timeout=10).json()
    assert st["task"] == "inference"
    # queries to an inference job (not a training job): 409
    r = _raw(url, f"/v1/jobs/{q['id']}/queries", tmp_path / "QA", token=q["token"])
    assert r.status_code == 409 and "is an inference job" in r.json()["error"]


def test_serve_refuses_bad_model_options(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["serve", "--workdir", str(tmp_path / "w"), "--model", str(bad)]) == 1
    assert "--model" in capsys.readouterr().err
    assert main(["serve", "--workdir", str(tmp_path / "w"), "--noise-std", "0.1"]) == 1
    assert "--noise-std applies to the scores of --model" in capsys.readouterr().err
