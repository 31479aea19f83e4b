"""`hetrain fit --refresh client|bootstrap` through the real entry point."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris

from hetrain.cli.main import main
from hetrain.protocol.model import TrainedModel


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory):
    X, y = load_iris(return_X_y=True)
    p = tmp_path_factory.mktemp("data") / "iris.csv"
    np.savetxt(p, np.c_[y, X], delimiter=",")
    return p


def test_fit_with_client_refresh_writes_a_usable_model(capsys, tmp_path, iris_csv):
    out = tmp_path / "m.json"
    rc = main(["fit", "--data", str(iris_csv), "--out", str(out), "--backend", "sim", "--refresh", "client",
               "--epochs", "4", "--batch-size", "64", "--learning-rate", "0.5", "--patience", "0", "--seed", "1",
               "--sigmoid", "published", "--momentum", "none", "--weight-decay", "0", "--whitening", "none",
               "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    # every option given: the planner chooses nothing and runs the 4 epochs (patience 0: no early stop)
    assert "plan: chose" not in text and "plan: sigmoid published" in text
    assert "epoch 4: validation accuracy" in text and "steps 8 " in text  # 120 rows: 2 batches x 4 epochs
    assert "round trips 7 (refreshes 7, evaluations 3)" in text  # a refresh before steps 2..8, 3 merged
    assert float(text.strip().splitlines()[-1].split("=")[1]) < 1e-9  # sim: decrypted == twin
    m = TrainedModel.load(out)
    assert m.info["refresh"] == "client" and m.info["n_validation"] == 30
    X, y = load_iris(return_X_y=True)
    assert m.accuracy(X, y) > 0.7  # a chance-level model (0.33) would fail


def test_bootstrap_on_seal_is_refused_before_any_work(capsys, tmp_path, iris_csv):
    rc = main(["fit", "--data", str(iris_csv), "--out", str(tmp_path / "m.json"), "--backend", "seal",
               "--preset", "n16384", "--refresh", "bootstrap", "--quiet"])
    err = capsys.readouterr().err
    # the same message on every path (CLI, API, estimators): "refresh client" names the option, not the flag
    assert rc != 0 and "backend seal cannot bootstrap: use refresh client" in err
    assert not (tmp_path / "m.json").exists()


def test_mlp_with_client_refresh_through_the_cli(capsys, tmp_path, iris_csv):
    out = tmp_path / "m.json"
    rc = main(["fit", "--data", str(iris_csv), "--out", str(out), "--backend", "sim", "--refresh", "client",
               "--model", "mlp", "--layout", "dvr", "--hidden", "4", "--iterations", "3", "--momentum", "none",
               "--learning-rate", "1.0", "--preset", "n16384-deep", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    # 3 iterations of 9 levels in a 9-level chain (every path reports the same keys: evaluations 0 here)
    assert "refresh client: round trips 2 (refreshes 2, evaluations 0)" in text
    assert float(text.strip().splitlines()[-1].split("=")[1]) < 1e-9


def test_client_refresh_with_a_remote_server_is_accepted_and_a_wrong_url_fails_first(capsys, tmp_path, iris_csv):
    """--server with --refresh client is no longer refused (issue 12: the client answers over HTTP);
    an unreachable service fails before any key is made or any model is written."""
    rc = main(["fit", "--data", str(iris_csv), "--out", str(tmp_path / "m.json"), "--backend", "sim",
               "--refresh", "client", "--model", "mlp", "--server", "http://127.0.0.1:9", "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and "cannot be combined with --refresh" not in err
    assert "cannot reach the training service at http://127.0.0.1:9" in err
    assert not (tmp_path / "m.json").exists()
