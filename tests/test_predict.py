"""`hetrain predict` and the encrypted-inference commands through the CLI (sim backend)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.datasets import load_iris

from hetrain.cli.main import main
from hetrain.errors import DataError
from hetrain.protocol import steps


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    X, y = load_iris(return_X_y=True)
    r = steps.fit(X, y, "mlr", {"iterations": 1}, refresh="none", backend="sim", preset="n8192", keys=root / "K",
                  workdir=root / "JOB", progress=False)
    r.model.save(root / "model.json")
    np.savetxt(root / "q.csv", X, delimiter=",")
    np.savetxt(root / "labelled.csv", np.column_stack([y, X]), delimiter=",")
    return root, X, r.model


def _rows(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_predict_writes_the_models_predictions(trained, tmp_path, capsys):
    root, X, model = trained
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(root / "model.json"), "--data", str(root / "q.csv"), "--out", str(out),
                 "--proba"]) == 0
    rows = _rows(out)
    assert rows[0] == ["label", "p_0", "p_1", "p_2"]
    assert [int(r[0]) for r in rows[1:]] == model.predict(X).tolist()
    P = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert np.allclose(P, model.predict_proba(X), atol=1e-5)
    assert np.allclose(P.sum(1), 1.0, atol=1e-4)


def test_predict_drops_a_label_column_and_says_so(trained, tmp_path, capsys):
    root, X, model = trained
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(root / "model.json"), "--data", str(root / "labelled.csv"),
                 "--out", str(out)]) == 0
    assert "column 0 is read as a label column and ignored" in capsys.readouterr().out
    assert [int(r[0]) for r in _rows(out)[1:]] == model.predict(X).tolist()


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty"),
    ("1,2,3,4\n1,x,3,4\n", "line 2, column 1 (feature 1) is not a number: 'x'"),
    ("1,2,3,4\n1,2,3\n", "line 2 has 3 columns, earlier lines have 4"),
    ("1,2\n", "has 2 feature columns; the model takes 4"),
    ("1,2,nan,4\n", "NaN"),
])
def test_predict_bad_query_files(trained, tmp_path, capsys, content, message):
    root, _, _ = trained
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    rc = main(["predict", "--model", str(root / "model.json"), "--data", str(bad), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("hetrain predict: error:") and message in err and "\n" not in err
    assert not (tmp_path / "p.csv").exists()


def test_read_features_npz_parquet_and_missing(trained, tmp_path):
    """The one data reader (hetrain.data.load_table) with prediction's options: no label column."""
    import argparse

    from hetrain.cli.predict import read_features

    def args(path, **kw):
        return argparse.Namespace(data=str(path), header=kw.get("header"), label_column=kw.get("label_column"),
                                  delimiter=None)

    root, X, _ = trained
    np.savez(tmp_path / "q.npz", X=X)
    assert np.array_equal(read_features(args(tmp_path / "q.npz"), 4), X)
    np.savez(tmp_path / "noX.npz", y=np.zeros(3))
    with pytest.raises(DataError, match="X"):
        read_features(args(tmp_path / "noX.npz"), 4)
    with pytest.raises(DataError, match="does not exist"):
        read_features(args(tmp_path / "none.csv"), 4)
    # a header and a named label column to drop
    named = tmp_path / "named.csv"
    named.write_text("a;b;c;d;species\n" + "\n".join(";".join(f"{v:g}" for v in r) + ";x" for r in X) + "\n")
    assert np.allclose(read_features(args(named, label_column="species"), 4), X, atol=1e-5)


def test_cli_encrypted_inference_both_cases(trained, tmp_path, capsys):
    root, X, model = trained
    q = str(root / "q.csv")
    # case (a): the server's encrypted model, queries under the same key
    assert main(["encrypt-queries", "--keys", str(root / "K"), "--data", q, "--job", str(root / "JOB"),
                 "--out", str(tmp_path / "QA")]) == 0
    assert main(["infer", "--job", str(root / "JOB"), "--queries", str(tmp_path / "QA")]) == 0
    assert main(["decrypt-scores", "--keys", str(root / "K"), "--queries", str(tmp_path / "QA"),
                 "--out", str(tmp_path / "a.csv")]) == 0
    assert "max |score - plaintext twin|" in capsys.readouterr().out
    assert [int(r[0]) for r in _rows(tmp_path / "a.csv")[1:]] == model.predict(X).tolist()
    # case (b): the model owner's plaintext model, another party's key
    assert main(["model-spec", "--model", str(root / "model.json"), "--out", str(tmp_path / "spec.json")]) == 0
    assert main(["keygen", "--out", str(tmp_path / "QK"), "--backend", "sim", "--preset", "n8192"]) == 0
    assert main(["encrypt-queries", "--keys", str(tmp_path / "QK"), "--data", q, "--model-spec",
                 str(tmp_path / "spec.json"), "--out", str(tmp_path / "QB")]) == 0
    assert main(["infer", "--model", str(root / "model.json"), "--queries", str(tmp_path / "QB")]) == 0
    assert main(["decrypt-scores", "--keys", str(tmp_path / "QK"), "--queries", str(tmp_path / "QB"),
                 "--out", str(tmp_path / "b.csv"), "--proba"]) == 0
    assert [int(r[0]) for r in _rows(tmp_path / "b.csv")[1:]] == model.predict(X).tolist()
    # refusals are one plain line
    capsys.readouterr()
    assert main(["decrypt-scores", "--keys", str(root / "K"), "--queries", str(tmp_path / "QB"),
                 "--out", str(tmp_path / "c.csv")]) == 1
    err = capsys.readouterr().err.strip()
    assert "were encrypted under key" in err and "use the key directory that encrypted them" in err and "\n" not in err
    assert main(["infer", "--model", str(root / "model.json"), "--queries", str(tmp_path / "QB"),
                 "--noise-std", "-1"]) == 1
    assert "--noise-std must be >= 0" in capsys.readouterr().err
    (tmp_path / "spec.json").write_text("{")
    assert main(["encrypt-queries", "--keys", str(tmp_path / "QK"), "--data", q, "--model-spec",
                 str(tmp_path / "spec.json"), "--out", str(tmp_path / "QC")]) == 1
    assert "--model-spec" in capsys.readouterr().err


def test_estimator_predict_proba_unchanged():
    """The estimators' predict_proba is the shared softmax (same values as before: rows sum to 1)."""
    from hetrain.protocol.model import softmax

    s = np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]])
    e = np.exp(s - s.max(1, keepdims=True))
    assert np.allclose(softmax(s), e / e.sum(1, keepdims=True))
