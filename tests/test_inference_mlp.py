"""Case (a) of encrypted inference for both mlp layouts: the server's encrypted mlp weights score
the data owner's queries with the trainer's own forward (models/mlp_dvr.py, models/mlp_diagonal.py
``encrypted_scores``), queries packed as the training rows. Agreement with the plaintext twin's
linear scores (test_inference.assert_agree) on sim and, for mlp-diagonal, SEAL n16384-deep; the
packing and level refusals."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from sklearn.datasets import load_iris

from hetrain.protocol import files, steps
from hetrain.protocol import inference as inf
from hetrain.protocol.bundle_check import ClaimError
from hetrain.protocol.keys import KeyDir
from hetrain.protocol.model_spec import InferenceError

from agree import assert_agree


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


def _case_a(root, X, y, kind, config, preset, backend="sim"):
    r = steps.fit(X[::3], y[::3], kind, config, refresh="none", backend=backend, preset=preset, keys=root / "K",
                  workdir=root / "JOB", progress=False)
    keys = KeyDir.open(root / "K")
    job = inf.encrypt_queries_for_job(keys, X, root / "JOB", root / "Q")
    stats = inf.infer(root / "Q", job=root / "JOB")
    return r.model, keys, job, stats, inf.decrypt_scores(keys, root / "Q")


@pytest.mark.parametrize("kind, config, preset", [
    ("mlp-diagonal", {"iterations": 1}, "n16384-deep"),
    ("mlp-dvr", {"iterations": 1, "hidden": [4]}, "n32768"),
])
def test_encrypted_mlp_sim(tmp_path, iris, kind, config, preset):
    X, y = iris
    model, _, job, stats, s = _case_a(tmp_path, X, y, kind, config, preset)
    assert job["packing"]["layout"] == ("diagonal" if kind == "mlp-diagonal" else "grid")
    assert stats["engine_has_secret_key"] is False and stats["trained_model"] == kind
    assert s.twin_max_abs_diff < 1e-6
    assert_agree(s.scores, s.twin_scores, 1e-6)
    # the released model (rounded twin) predicts the same classes
    top2 = np.sort(s.twin_scores, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3
    assert np.array_equal(s.predict()[clear], model.predict(X)[clear])


def test_mlp_packing_other_than_the_jobs_is_refused(tmp_path, iris):
    X, y = iris
    steps.fit(X[::3], y[::3], "mlp-diagonal", {"iterations": 1}, refresh="none", backend="sim", preset="n16384-deep",
              keys=tmp_path / "K", workdir=tmp_path / "JOB", progress=False)
    q = tmp_path / "Q"
    inf.encrypt_queries_for_job(KeyDir.open(tmp_path / "K"), X, tmp_path / "JOB", q)
    job = json.loads((q / files.JOB).read_text())
    job["packing"]["H"] = 7  # claims another network: the count still matches, the server compares
    (q / files.JOB).write_text(json.dumps(job))

    m = json.loads((q / files.MANIFEST).read_text())
    m["sha256"][files.JOB] = hashlib.sha256((q / files.JOB).read_bytes()).hexdigest()
    (q / files.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(InferenceError, match="the encrypted model of this job takes"):
        inf.infer(q, job=tmp_path / "JOB")
    job["packing"]["batch"] = 3  # not a power of two: refused before anything is read
    (q / files.JOB).write_text(json.dumps(job))
    m["sha256"][files.JOB] = hashlib.sha256((q / files.JOB).read_bytes()).hexdigest()
    (q / files.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ClaimError, match="batch = 3 is not a power of two"):
        inf.infer(q, job=tmp_path / "JOB")


@pytest.mark.slow
def test_encrypted_mlp_diagonal_seal(tmp_path, iris):
    X, y = iris
    _, _, _, stats, s = _case_a(tmp_path, X, y, "mlp-diagonal", {"iterations": 1}, "n16384-deep", backend="seal")
    assert stats["model_level"] >= 1
    assert_agree(s.scores, s.twin_scores, 1e-2)
