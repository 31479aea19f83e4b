"""Data loading, validation and bundled datasets: each bad input gives a DataError that says what to fix."""
from __future__ import annotations

import numpy as np
import pytest

from hetrain.data import (check_feature_count, check_features, check_known_labels, export_csv, load_builtin,
                          load_dataset, load_table)
from hetrain.errors import DataError, HetrainUserError


def write(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_layout_label_first_written_as_float(tmp_path):
    X, y = load_dataset(write(tmp_path, "5.0,1,2\n0.0,3.5,-4\n"))
    np.testing.assert_array_equal(y, [5, 0])
    np.testing.assert_array_equal(X, [[1, 2], [3.5, -4]])
    assert y.dtype == np.int64


def test_shared_feature_file_loads(shared_data):
    X, y = load_dataset(shared_data / "regnet_x_400mf_mnist_train_first256.csv")
    assert X.shape == (256, 400) and set(y.tolist()) == set(range(10))
    assert X.min() >= 0  # README: non-negative ReLU features


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("\n\n", "empty"),
    ("1.0,2,3\n0.0,4\n", "line 2 has 2 columns"),
    ("1.0,2,abc\n", "column 2 .*not a number"),
    ("label,f1\n", "line 1, column 1 \\(feature 0\\) is not a number: 'f1'"),  # one line: data, not a header
    ("1.0,nan\n", "NaN or infinite"),
    ("1.0,inf\n", "NaN or infinite"),
    ("1.0\n", "need a label and at least one feature"),
])
def test_bad_csv(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        load_dataset(write(tmp_path, text))


def test_missing_file_and_binary_garbage(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope.csv")
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(DataError):
        load_dataset(p)


def test_npz(tmp_path):
    np.savez(tmp_path / "ok.npz", X=np.ones((3, 2)), y=np.array([0, 1, 1]))
    X, y = load_dataset(tmp_path / "ok.npz")
    assert X.shape == (3, 2) and y.tolist() == [0, 1, 1]
    np.savez(tmp_path / "noy.npz", X=np.ones((3, 2)))
    with pytest.raises(DataError, match="missing \\['y'\\]"):
        load_dataset(tmp_path / "noy.npz")
    np.savez(tmp_path / "len.npz", X=np.ones((3, 2)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="2 labels for 3 rows"):
        load_dataset(tmp_path / "len.npz")
    np.savez(tmp_path / "shape.npz", X=np.ones(3), y=np.array([0, 1, 1]))
    with pytest.raises(DataError, match="2-D"):
        load_dataset(tmp_path / "shape.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(tmp_path / "bad.npz")


def test_validators():
    with pytest.raises(DataError, match="labels \\[7\\] were not seen in training"):
        check_known_labels(np.array([0, 7]), [0, 1, 2])
    with pytest.raises(DataError, match="has 3 features but the model expects 4"):
        check_feature_count(np.ones((2, 3)), 4)
    with pytest.raises(DataError, match="row 1, feature 0"):
        check_features([[1.0, 2.0], [np.nan, 1.0]])
    assert issubclass(DataError, HetrainUserError) and issubclass(DataError, ValueError)


@pytest.mark.parametrize("name, shape, n_classes", [("iris", (150, 4), 3), ("wine", (178, 13), 3)])
def test_export_roundtrips_exactly(tmp_path, name, shape, n_classes):
    out = tmp_path / f"{name}.csv"
    assert export_csv(name, out) == shape
    assert out.read_text().split(",", 1)[0] in {f"{c}.0" for c in range(n_classes)}  # label as a float
    X, y = load_dataset(out)
    X0, y0 = load_builtin(name)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)


def test_unknown_builtin():
    with pytest.raises(DataError, match="unknown dataset"):
        load_builtin("mnist")


# -- issue 10 item 6: byte-order mark, CRLF, trailing newline (every user text file) ------------------
@pytest.mark.parametrize("raw", [
    b"\xef\xbb\xbf5.0,1,2\n0.0,3.5,-4\n",            # UTF-8 BOM (Excel "CSV UTF-8", Notepad)
    b"5.0,1,2\r\n0.0,3.5,-4\r\n",                    # CRLF
    b"\xef\xbb\xbf5.0,1,2\r\n0.0,3.5,-4\r\n\r\n",    # both, and a trailing blank line
    b"5.0,1,2\n0.0,3.5,-4",                          # no trailing newline
])
def test_csv_bom_crlf_and_trailing_newline_load(tmp_path, raw):
    p = tmp_path / "d.csv"
    p.write_bytes(raw)
    X, y = load_dataset(p)
    np.testing.assert_array_equal(y, [5, 0])
    np.testing.assert_array_equal(X, [[1, 2], [3.5, -4]])


def test_csv_bom_then_header_is_still_a_header(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"\xef\xbb\xbflabel,f1,f2\r\n1,2,3\r\n")
    t = load_table(p)
    assert t.feature_names == ["f1", "f2"] and t.y.tolist() == [1]  # the BOM is not part of 'label'
    assert load_table(p, label_column="label").X.tolist() == [[2, 3]]


def test_model_file_with_bom_loads(tmp_path):
    from hetrain.protocol.files import load_model, save_model

    p = tmp_path / "m.json"
    save_model(p, {"weights": {"w": np.arange(3.0)}})
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes().replace(b"\n", b"\r\n"))
    np.testing.assert_array_equal(load_model(p)["weights"]["w"], [0, 1, 2])


# -- issue 10 item 7, issue 17: text labels are class names, a header row is detected ----------------
@pytest.mark.parametrize("text, labels", [
    ("malignant,17.99,3\nbenign,1,2\nmalignant,3,4\n", ["malignant", "benign", "malignant"]),
    ("malignant,17.99,3\n", ["malignant"]),
    ("label,0,1\n1,1,2\n0,3,4\n", [1, 0]),        # its label is the only text one: a header row
    ("label,f1\n1.0,2\n", [1]),
    ("\n\nlabel,f1\n1.0,2\n", [1]),
])
def test_csv_text_labels_and_detected_header(tmp_path, text, labels):
    X, y = load_dataset(write(tmp_path, text))
    assert y.tolist() == labels and X.shape == (len(labels), X.shape[1])


def test_csv_mixed_or_fractional_labels_warn_and_are_class_names(tmp_path):
    from hetrain.errors import DataWarning

    with pytest.warns(DataWarning, match=r"mix numbers and text \(line 3: 'benign'\)"):
        _, y = load_dataset(write(tmp_path, "1,17.99,3\n0,1,2\nbenign,3,4\n1,5,6\n"))
    assert y.tolist() == ["1", "0", "benign", "1"]
    with pytest.warns(DataWarning, match=r"not all whole numbers \(such as 1\.5\)"):
        _, y = load_dataset(write(tmp_path, "1.5,2\n0.0,1\n"))
    assert y.tolist() == ["1.5", "0.0"]


def test_csv_bad_feature_names_column(tmp_path):
    with pytest.raises(DataError, match=r"line 1, column 2 \(feature 1\) is not a number: 'abc'$"):
        load_dataset(write(tmp_path, "1.0,2,abc\n"))


def test_npz_and_array_text_labels_are_kept(tmp_path):
    from hetrain.data import check_labels

    np.savez(tmp_path / "s.npz", X=np.ones((3, 2)), y=np.array(["malignant", "benign", "benign"]))
    _, y = load_dataset(tmp_path / "s.npz")
    assert y.tolist() == ["malignant", "benign", "benign"]
    with pytest.raises(DataError, match=r"row 0 has label 1\.5$"):  # a plain number, not np.float64(1.5)
        check_labels(np.array([1.5, 0.0]))
    with pytest.raises(DataError, match=r"row 1 has an empty label"):
        check_labels(np.array(["a", " "]))
