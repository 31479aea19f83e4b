"""The local pipeline: client here, server in a separate process; plan checks, errors, model files."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
from toykit import ToyTrainer  # noqa: F401  (registers "toy-centroid")

from hetrain import ckks
from hetrain.data import load_builtin
from hetrain.errors import OutputError
from hetrain.models.base import DepthPlanError
from hetrain.protocol import BundleError, ModelFileError, ServerError, TrainedModel, fit, files
from hetrain.protocol.planning import choose_preset
from hetrain.protocol.runner import run_server


@pytest.fixture(scope="module")
def iris():
    return load_builtin("iris")


def test_fit_sim_matches_twin_and_model_file_roundtrips(iris, tmp_path):
    X, y = iris
    r = fit(X, y, "toy-centroid", {"iterations": 3}, preset="n16384", backend="sim", progress=False,
            workdir=tmp_path / "job")
    # sim without noise computes the same float64 arithmetic in another order: only rounding differs
    assert r.twin_max_abs_diff < 1e-12
    # released weights are rounded to 1e-6 (DESIGN §5): off by at most half a unit, and really rounded
    assert r.stats["released_max_abs_diff"] <= 0.5e-6 + 1e-12
    np.testing.assert_array_equal(r.model.weights["W"], np.round(r.model.weights["W"], 6))
    assert r.model.accuracy(X, y) > 0.75  # class-mean directions separate iris reasonably
    assert r.plan.levels_needed == 4 and r.stats["params"] == "n16384"
    # the server ran in its own process and left its stats: engine without a secret key
    stats = json.loads((tmp_path / "job" / files.SERVER_STATS).read_text())
    assert "secret key=no" in stats["engine"] and stats["server_peak_rss_bytes"] > 10 * 2**20
    assert r.stats["server_operations"]["rotate"]["count"] > 0

    path = tmp_path / "model.json"
    r.model.save(path)
    m = TrainedModel.load(path)
    np.testing.assert_array_equal(m.predict(X), r.model.predict(X))
    assert m.key_id == r.model.key_id and m.classes == [0, 1, 2] and m.info["backend"] == "sim"


def test_fit_seal_matches_twin(iris):
    X, y = iris
    r = fit(X, y, "toy-centroid", {"iterations": 1}, preset="n8192", backend="seal", progress=False)
    # Weights are O(1) (standardised iris); CKKS at scale 2^40 adds ~1e-9 per operation and this circuit
    # has 1 product, 7 rotations and 1 scalar product (measured ~1e-8). 1e-5 leaves margin and still
    # catches a wrong slot, scale or level (errors of order 0.1).
    assert r.twin_max_abs_diff < 1e-5
    assert r.stats["upload_key_parts"]["galois_keys"] > 0 and "secret_key" not in r.stats["upload_key_parts"]
    assert r.stats["upload_data_bytes"] > 0 and r.stats["server_train_s"] > 0
    assert r.model.accuracy(X, y) > 0.75


def test_depth_is_refused_before_any_key(iris, monkeypatch):
    X, y = iris

    def no_keys(*a, **k):
        raise AssertionError("keys were generated for a job that cannot fit")

    monkeypatch.setattr(ckks, "create_engine", no_keys)
    with pytest.raises(DepthPlanError, match=r"1 iteration\(s\) fit.*`--preset n16384`"):
        fit(X, y, "toy-centroid", {"iterations": 3}, preset="n8192", backend="seal", progress=False)


def test_auto_preset_picks_the_smallest_that_fits():
    small = choose_preset(ToyTrainer(iterations=1), 150, 4, 3)
    deep = choose_preset(ToyTrainer(iterations=8), 150, 4, 3)
    assert small.name == "n8192" and deep.name == "n16384-deep"


def _bundle(tmp_path, iterations=1, preset="n8192", backend="seal"):
    """A job bundle written by a client, bypassing the client's own plan check when asked to."""
    X, y = load_builtin("iris")
    Xs = (X - X.mean(0)) / X.std(0)
    Y = np.eye(3)[y]
    trainer = ToyTrainer(iterations=iterations)
    steps = trainer.plan(150, 4, 3, ckks.get_params(preset)).rotation_steps
    engine = ckks.create_engine(backend, preset, rotations=steps)
    inputs, job = trainer.client_encrypt(engine, Xs, Y)
    job = {**job, "model": trainer.name, "config": trainer.config, "data_shape": [150, 4, 3]}
    files.write_job(tmp_path, engine, inputs, job)
    return engine, job, trainer


def test_server_refuses_a_job_that_cannot_fit(tmp_path):
    _, _, trainer = _bundle(tmp_path, iterations=4)  # needs 5 levels, n8192 has 2
    with pytest.raises(ServerError, match="4 iterations need 5 levels"):
        run_server(tmp_path, progress=False, trainer_modules=("toykit",))
    assert not (tmp_path / files.OUTPUTS).exists()


def test_server_reports_corrupted_bundle(tmp_path):
    _, _, trainer = _bundle(tmp_path, backend="sim")
    data = bytearray((tmp_path / files.INPUTS).read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / files.INPUTS).write_bytes(bytes(data))
    with pytest.raises(ServerError, match="does not match the manifest"):
        run_server(tmp_path, progress=False, trainer_modules=("toykit",))


def test_outputs_of_another_job_are_refused(tmp_path):
    engine, job, trainer = _bundle(tmp_path / "a", backend="sim")
    _bundle(tmp_path / "b", backend="sim")
    run_server(tmp_path / "b", progress=False, trainer_modules=("toykit",))
    with pytest.raises(BundleError, match="another job"):
        files.read_ciphertext_map(tmp_path / "b" / files.OUTPUTS, engine, "server outputs")
    with pytest.raises(BundleError, match="server outputs not found"):
        files.read_ciphertext_map(tmp_path / "a" / files.OUTPUTS, engine, "server outputs")


def test_model_file_is_written_atomically(iris, tmp_path, tmp_path_factory, monkeypatch):
    X, y = iris
    r = fit(X, y, "toy-centroid", {}, preset="n8192", backend="sim", progress=False)
    path = tmp_path / "model.json"
    fallback = tmp_path_factory.mktemp("fallback")
    monkeypatch.setattr(tempfile, "tempdir", str(fallback))

    def disk_full(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OutputError, match="saved to"):  # the model is kept elsewhere (hetrain.outputs)
        r.model.save(path)
    assert list(tmp_path.iterdir()) == []  # neither the model nor a temporary file
    (saved,) = fallback.iterdir()
    assert TrainedModel.load(saved).key_id == r.model.key_id


@pytest.fixture(scope="module")
def model_file(iris, tmp_path_factory):
    X, y = iris
    path = tmp_path_factory.mktemp("model") / "model.json"
    fit(X, y, "toy-centroid", {}, preset="n8192", backend="sim", progress=False).model.save(path)
    return path


def test_model_file_errors(model_file, tmp_path, iris):
    X, y = iris
    body = json.loads(model_file.read_text())
    body["weights"]["W"]["values"][0] += 1.0
    (tmp_path / "tampered.json").write_text(json.dumps(body))
    with pytest.raises(ModelFileError, match="checksum"):
        TrainedModel.load(tmp_path / "tampered.json")
    (tmp_path / "half.json").write_text(model_file.read_text()[:100])
    with pytest.raises(ModelFileError, match="not valid JSON"):
        TrainedModel.load(tmp_path / "half.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ModelFileError, match="not a hetrain model"):
        TrainedModel.load(tmp_path / "other.json")
    with pytest.raises(ModelFileError, match="does not exist"):
        TrainedModel.load(tmp_path / "missing.json")


def test_model_refuses_mismatched_data(model_file, iris):
    from hetrain.errors import DataError
    X, y = iris
    m = TrainedModel.load(model_file)
    with pytest.raises(DataError, match="has 3 features but the preprocessing recorded at training expects 4"):
        m.predict(X[:, :3])
    with pytest.raises(DataError, match=r"labels \[5\] were not seen in training"):
        m.accuracy(X[:3], np.array([0, 1, 5]))
    with pytest.raises(DataError, match="NaN"):
        m.predict(np.where(X == X[0, 0], np.nan, X))


def test_a_model_that_disagrees_with_its_twin_is_not_released(monkeypatch, tmp_path):
    """Anyone with the public key can return well-formed encryptions of wrong values: the client
    compares with the twin and refuses (no model file) instead of releasing them."""
    from sklearn.datasets import load_iris

    from hetrain.cli.main import main
    from hetrain.models.mlr import MLRTrainer

    from jobkit import tamper_decryptions_after_rehearsal

    tamper_decryptions_after_rehearsal(monkeypatch, MLRTrainer)
    X, y = load_iris(return_X_y=True)
    data, out = tmp_path / "iris.csv", tmp_path / "m.json"
    np.savetxt(data, np.c_[y, X], delimiter=",")
    assert main(["fit", "--data", str(data), "--out", str(out), "--backend", "sim", "--refresh", "none",
                 "--iterations", "2", "--sigmoid", "deg3:16", "--quiet"]) == 1
    assert not out.exists()


def test_mlp_auto_layout_takes_dvr_when_the_diagonal_packing_cannot_hold_the_rows():
    """Wine's 142 training rows (13 features) do not fit the diagonal packing's one sample per slot
    block in any preset: `--model mlp` used to refuse them; auto now picks the dvr network."""
    from hetrain.data import load_builtin
    from hetrain.protocol.planning import _diagonal_holds

    X, y = load_builtin("wine")
    Xtr, ytr = X[:142], y[:142]
    assert not _diagonal_holds(Xtr, np.eye(3)[ytr]) and _diagonal_holds(Xtr[:100], np.eye(3)[ytr[:100]])
    r = fit(Xtr, ytr, "mlp", {"iterations": 2}, backend="sim", preset="auto", progress=False, refresh="client")
    assert r.stats["model"] == "mlp-dvr"
