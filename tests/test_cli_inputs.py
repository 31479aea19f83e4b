"""Issue 17: the data options (--header/--no-header, --label-column, --delimiter, Parquet, text labels),
the one reader behind them (hetrain.data.load_table), and defaults in every help text."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pytest

from hetrain.cli.main import build_parser, main
from hetrain.data import Table, load_builtin, load_dataset, load_table
from hetrain.errors import DataError
from jobkit import run_cli  # noqa: E402

IRIS_NAMES = np.array(["setosa", "versicolor", "virginica"])
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def write(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def iris_text(delimiter=";", label_at=4, header=True) -> str:
    """Iris as a CSV with the text label at column ``label_at`` (4: last)."""
    X, y = load_builtin("iris")
    names = COLUMNS[:label_at] + ["species"] + COLUMNS[label_at:]
    lines = [delimiter.join(names)] if header else []
    for row, label in zip(X, IRIS_NAMES[y]):
        cells = [repr(float(v)) for v in row]
        cells.insert(label_at, str(label))
        lines.append(delimiter.join(cells))
    return "\n".join(lines) + "\n"


def run(capsys, *argv):
    return run_cli(capsys, *argv, lines=True)


# ---------------------------------------------------------------------------- load_table
@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiter_and_header_are_detected(tmp_path, delimiter):
    t = load_table(write(tmp_path, iris_text(delimiter, label_at=2)), label_column="species")
    X, y = load_builtin("iris")
    assert isinstance(t, Table) and t.feature_names == COLUMNS
    np.testing.assert_array_equal(t.X, X)
    assert t.y.tolist() == IRIS_NAMES[y].tolist() and t.y.dtype.kind == "U"
    assert t.source.endswith("d.csv")


def test_label_column_by_index_negative_and_none(tmp_path):
    p = write(tmp_path, "a,b,label\n1,2,0\n3,4,1\n")
    assert load_table(p, label_column=2).y.tolist() == [0, 1]
    t = load_table(p, label_column=-1)
    assert t.y.tolist() == [0, 1] and t.y.dtype == np.int64 and t.feature_names == ["a", "b"]
    t = load_table(p, label_column=None, need_labels=False)
    assert t.y is None and t.X.tolist() == [[1, 2, 0], [3, 4, 1]]
    # labels=False commands: a named label column is dropped when present, ignored when absent
    assert load_table(p, label_column="label", need_labels=False).X.shape == (2, 2)
    assert load_table(p, label_column="nope", need_labels=False).X.shape == (2, 3)


def test_header_forced_either_way(tmp_path):
    p = write(tmp_path, "10,20,1\n1,2,0\n3,4,1\n")  # numeric first row: data, unless --header says it names columns
    assert load_table(p, label_column=-1).X.shape == (3, 2)
    t = load_table(p, label_column=-1, header=True)
    assert t.feature_names == ["10", "20"] and t.X.shape == (2, 2)
    p = write(tmp_path, "a,b,label\n1,2,0\n", "h.csv")
    with pytest.raises(DataError, match=r"line 1, column 0 \(feature 0\) is not a number: 'a'"):
        load_table(p, label_column=-1, header=False)


def test_explicit_delimiter_and_decimal_comma_hint(tmp_path):
    p = write(tmp_path, "0|1.5|2\n1|3|4\n")  # not a detected delimiter: one column
    with pytest.raises(DataError, match=r"has 1 column; need a label and at least one feature"):
        load_table(p)
    assert load_table(p, delimiter="|").X.tolist() == [[1.5, 2], [3, 4]]
    p = write(tmp_path, "0;1,5;2\n1;3,5;4\n", "eu.csv")  # decimal commas: ';' detected, the cells are not numbers
    with pytest.raises(DataError, match=r"line 1, column 1 \(feature 0\) is not a number: '1,5' \(a decimal comma"):
        load_table(p)


@pytest.mark.parametrize("text, kwargs, message", [
    ("a,b,y\n1,2,0\n", {"label_column": "species"}, r"no column named 'species' in the header \(line 1: 'a', 'b', 'y'\)"),
    ("a,b,y\n1,2,0\n", {"label_column": "y", "header": False}, r"--label-column 'y' is a column name.*--no-header"),
    ("1,2,0\n3,4,1\n", {"label_column": 3}, r"--label-column 3: .* has 3 columns \(indices 0 to 2, or -1"),
    ("1,2,0\n3,,1\n", {"label_column": 2}, r"line 2, column 1 \(feature 1\) is empty"),
    ("a,b,y\n1,2,0\n3,x,1\n", {"label_column": "y"}, r"line 3, column 1 \('b', feature 1\) is not a number: 'x'"),
    ("a,b,y\n1,2,\n3,4,1\n", {"label_column": "y"}, r"line 2, column 2 \('y', label\) is empty"),
    ("a,b,y\n", {"label_column": "y", "header": True}, r"holds a header row \(line 1\) and no data"),
    ("1,2,0\n", {"label_column": None}, r"labels are needed but no label column was given \(--label-column"),
    ("1;2;0\n3;4;1;2\n", {"delimiter": ";"}, r"line 2 has 4 columns, earlier lines have 3"),
])
def test_bad_input_names_file_line_and_column(tmp_path, text, kwargs, message):
    with pytest.raises(DataError, match=message) as e:
        load_table(write(tmp_path, text), **kwargs)
    assert "d.csv" in str(e.value) or "--label-column" in str(e.value)


def test_npz_table(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((3, 2)), y=np.array(["b", "a", "b"]))
    t = load_table(tmp_path / "d.npz")
    assert t.y.tolist() == ["b", "a", "b"] and t.feature_names is None
    np.savez(tmp_path / "x.npz", X=np.ones((3, 2)))
    assert load_table(tmp_path / "x.npz", label_column=None, need_labels=False).y is None
    with pytest.raises(DataError, match=r"missing \['y'\]"):
        load_table(tmp_path / "x.npz")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    X, y = load_builtin("iris")
    cols = {name: X[:, i] for i, name in enumerate(COLUMNS)}
    pq.write_table(pa.table({"species": IRIS_NAMES[y].tolist(), **cols}), tmp_path / "iris.parquet")
    t = load_table(tmp_path / "iris.parquet", label_column="species")
    np.testing.assert_array_equal(t.X, X)
    assert t.feature_names == COLUMNS and t.y.tolist() == IRIS_NAMES[y].tolist()
    assert load_table(tmp_path / "iris.parquet").y.tolist() == IRIS_NAMES[y].tolist()  # column 0 by default
    pq.write_table(pa.table({"y": [0, 1], "a": [1.0, None]}), tmp_path / "null.pq")
    with pytest.raises(DataError, match=r"null.pq: row 1, column 1 \('a'\) is empty"):
        load_table(tmp_path / "null.pq")
    pq.write_table(pa.table({"y": [0, 1], "a": ["x", "z"]}), tmp_path / "text.pq")
    with pytest.raises(DataError, match=r"column 1 \('a'\) is not numeric"):
        load_table(tmp_path / "text.pq")
    with pytest.raises(DataError, match=r"no column named 'label'"):
        load_table(tmp_path / "iris.parquet", label_column="label")


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if not installed
    with pytest.raises(DataError, match=r"d.parquet: reading Parquet files needs pyarrow: pip install pyarrow"):
        load_table(tmp_path / "d.parquet")


def test_load_dataset_is_the_same_reader(tmp_path):
    p = write(tmp_path, "label,a,b\ncat,1,2\ndog,3,4\n")
    X, y = load_dataset(p)
    t = load_table(p)
    np.testing.assert_array_equal(X, t.X)
    assert y.tolist() == t.y.tolist() == ["cat", "dog"]


# ---------------------------------------------------------------------------- text labels end to end
def test_estimator_and_model_file_use_the_same_classes(tmp_path):
    from hetrain.estimators import EncryptedLogisticRegression
    from hetrain.protocol import TrainedModel

    X, y = load_builtin("iris")
    labels = IRIS_NAMES[y]
    clf = EncryptedLogisticRegression(refresh="none", iterations=2, sigmoid="deg3:16", backend="sim").fit(X, labels)
    assert clf.model_.classes == clf.classes_.tolist() == IRIS_NAMES.tolist()
    np.testing.assert_array_equal(clf.model_.predict(X), clf.predict(X))
    clf.model_.save(tmp_path / "m.json")
    again = TrainedModel.load(tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["classes"] == IRIS_NAMES.tolist()
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))
    assert again.accuracy(X, labels) == pytest.approx(clf.score(X, labels))
    with pytest.raises(DataError, match=r"labels \['rose'\] were not seen in training"):
        again.accuracy(X[:2], ["rose", "setosa"])


def _fit_iris_csv(capsys, tmp_path, backend: str):
    data = write(tmp_path, iris_text(";", label_at=2), "iris.csv")
    model = tmp_path / "m.json"
    rc, out, err = run(capsys, "fit", "--data", data, "--label-column", "species", "--delimiter", ";",
                       "--backend", backend, "--refresh", "none", "--iterations", 2, "--sigmoid", "deg3:16",
                       "--out", model, "--quiet")
    assert rc == 0, err
    assert "3 classes (setosa, versicolor, virginica)" in out[0]
    return data, model, out


def _check_iris_model(capsys, data, model, min_accuracy):
    from hetrain.protocol import TrainedModel

    m = TrainedModel.load(model)
    t = load_table(data, label_column="species")
    predicted = m.predict(t.X)
    assert m.classes == IRIS_NAMES.tolist() and set(predicted.tolist()) <= set(IRIS_NAMES.tolist())
    assert np.mean(predicted == t.y) > min_accuracy
    rc, out, err = run(capsys, "evaluate", "--model", model, "--data", data, "--label-column", "species")
    assert rc == 0, err
    assert float(out[-1].split("=")[1]) == pytest.approx(np.mean(predicted == t.y), abs=1e-4)


def test_fit_text_labels_named_column_semicolons_sim(capsys, tmp_path):
    data, model, _ = _fit_iris_csv(capsys, tmp_path, "sim")
    _check_iris_model(capsys, data, model, 0.75)


def test_fit_text_labels_named_column_semicolons_seal(capsys, tmp_path):
    """Real CKKS (SEAL, n16384: the smallest preset whose levels hold two mlr iterations)."""
    data, model, out = _fit_iris_csv(capsys, tmp_path, "seal")
    assert "INSECURE" not in "\n".join(out) and float(out[-1].split("=")[1]) < 1e-4  # twin_max_abs_diff
    _check_iris_model(capsys, data, model, 0.75)


def test_cli_input_option_errors_are_one_line(capsys, tmp_path):
    data = write(tmp_path, "a,b,y\n1,2,0\n3,4,1\n")
    rc, _, err = run(capsys, "fit", "--data", data, "--label-column", "species", "--out", tmp_path / "m.json",
                     "--backend", "sim")
    assert rc == 1 and err.count("\n") == 1 and "no column named 'species'" in err
    with pytest.raises(SystemExit):
        main(["fit", "--data", str(data), "--delimiter", ";;", "--out", str(tmp_path / "m.json")])
    assert "--delimiter: give one character" in capsys.readouterr().err


# ---------------------------------------------------------------------------- help texts
def _subparsers(parser: argparse.ArgumentParser, prefix: str = "hetrain"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, f"{prefix} {name}")


def test_every_option_shows_its_default_or_is_required_or_a_switch():
    missing = []
    for prog, p in _subparsers(build_parser()):
        formatter = p._get_formatter()
        for action in p._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if action.required or (action.nargs == 0 and action.default in (False, None)
                                   and not isinstance(action, argparse.BooleanOptionalAction)):
                continue
            text = formatter._get_help_string(action) or ""
            if "default" not in text.lower():
                missing.append(f"{prog} {action.option_strings[0]}")
    assert not missing, f"options whose help shows no default: {missing}"


def test_model_and_layout_help_list_the_registry(monkeypatch):
    from hetrain.models.base import get_trainer, registry

    get_trainer("mlr")
    monkeypatch.setitem(registry, "mlp-spiral", type("Spiral", (), {"name": "mlp-spiral"}))
    fit = build_parser().commands["fit"]
    helps = {a.dest: a.help for a in fit._actions}
    for name in registry:
        assert name in helps["model"]
    assert "spiral" in helps["layout"] and "diagonal" in helps["layout"] and "volley-revolver" in helps["layout"]


def test_fit_channel_timeout(capsys, tmp_path, monkeypatch):
    from hetrain.protocol import steps

    seen = {}
    real = steps.train

    def spy(*args, **kwargs):
        seen["channel_timeout"] = kwargs.get("channel_timeout")
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "train", spy)
    data = write(tmp_path, iris_text(","), "iris.csv")
    common = ["fit", "--data", data, "--label-column", -1, "--backend", "sim", "--refresh", "none", "--iterations", 1,
              "--sigmoid", "deg3:16", "--out", tmp_path / "m.json", "--quiet"]
    rc, _, err = run(capsys, *common, "--channel-timeout", 42)
    assert rc == 0, err
    assert seen["channel_timeout"] == 42.0
    rc, _, err = run(capsys, *common, "--channel-timeout", 0)
    assert rc == 1 and "--channel-timeout must be a positive number of seconds, got 0" in err
    rc, _, err = run(capsys, *common, "--channel-timeout", 5, "--server", "http://127.0.0.1:9")
    assert rc == 1 and "with --server the service's operator sets it: leave --channel-timeout out" in err


def test_fit_workers(capsys, tmp_path, monkeypatch):
    """`fit --workers N` reaches the local server process (its statistics say how many ran); a count
    below 1 and a service are refused with the option named, and the advice given (--workers 1) runs."""
    from hetrain.protocol import steps

    seen = {}
    real = steps.train

    def spy(*args, **kwargs):
        seen["workers"] = kwargs.get("workers")
        seen["stats"] = real(*args, **kwargs)
        return seen["stats"]

    monkeypatch.setattr(steps, "train", spy)
    data = write(tmp_path, iris_text(","), "iris.csv")
    common = ["fit", "--data", data, "--label-column", -1, "--backend", "sim", "--refresh", "none", "--iterations", 1,
              "--sigmoid", "deg3:16", "--out", tmp_path / "m.json", "--quiet"]
    rc, _, err = run(capsys, *common, "--workers", 0)
    assert rc == 1 and "--workers must be a whole number of at least 1, got 0 (e.g. --workers 1)" in err
    assert "Traceback" not in err and "workers" not in seen
    rc, _, err = run(capsys, *common, "--workers", 1)
    assert rc == 0, err
    assert seen["workers"] == 1 and seen["stats"]["workers"] == 1
    rc, _, err = run(capsys, *common, "--workers", 2, "--server", "http://127.0.0.1:9")
    assert rc == 1 and "with --server the service's operator sets it: leave --workers out" in err
