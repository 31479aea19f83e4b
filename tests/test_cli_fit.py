"""`hetrain fit / evaluate / demo / datasets` through the real entry point (toy trainer, sim and SEAL)."""
from __future__ import annotations

import numpy as np
import pytest
from toykit import ToyTrainer  # noqa: F401  (registers "toy-centroid")

from jobkit import run_cli  # noqa: E402


def run(capsys, *argv):
    return run_cli(capsys, *argv, lines=True)


def test_datasets_export_and_list(capsys, tmp_path):
    rc, out, _ = run(capsys, "datasets", "export", "wine", "--out", tmp_path / "w.csv")
    assert rc == 0 and "178 rows x 13 features" in out[-1]
    assert (tmp_path / "w.csv").read_text().count("\n") == 178
    rc, out, _ = run(capsys, "datasets", "list")
    assert rc == 0 and any(line.startswith("digits: 1797 samples, 64 features") for line in out)


def test_datasets_export_writes_a_stratified_split(capsys, tmp_path):
    rc, out, _ = run(capsys, "datasets", "export", "iris", "--out", tmp_path / "tr.csv", "--test-out", tmp_path / "te.csv")
    assert rc == 0 and "120 rows x 4 features" in out[-2]
    test_labels = [line.split(",")[0] for line in (tmp_path / "te.csv").read_text().splitlines()]
    assert len(test_labels) == 30 and sorted(set(test_labels)) == ["0.0", "1.0", "2.0"]
    assert all(test_labels.count(c) == 10 for c in ("0.0", "1.0", "2.0"))  # stratified
    rc, _, err = run(capsys, "datasets", "export", "iris", "--out", tmp_path / "a.csv", "--test-out",
                     tmp_path / "b.csv", "--test-fraction", 1.5)
    assert rc == 1 and "strictly between 0 and 1" in err


def test_fit_then_evaluate(capsys, tmp_path, iris_csv):
    model = tmp_path / "m.json"
    rc, out, err = run(capsys, "fit", "--data", iris_csv, "--model", "toy-centroid", "--iterations", 1,
                       "--backend", "seal", "--preset", "n8192", "--out", model, "--quiet")
    assert rc == 0, err
    assert out[-2].startswith("server_train_s=") and float(out[-2].split("=")[1]) > 0
    assert out[-1].startswith("twin_max_abs_diff=") and float(out[-1].split("=")[1]) < 1e-5
    text = "\n".join(out)
    for needle in ("keygen", "peak memory", "server operations: rotate=", "upload: keys", "galois keys", "params=n8192"):
        assert needle in text
    assert "INSECURE" not in text
    rc, out, _ = run(capsys, "evaluate", "--model", model, "--data", iris_csv)
    assert rc == 0 and out[-1].startswith("accuracy=") and float(out[-1].split("=")[1]) > 0.75


def test_sim_backend_warns(capsys, tmp_path, iris_csv):
    rc, out, _ = run(capsys, "fit", "--data", iris_csv, "--model", "toy-centroid", "--backend", "sim",
                     "--out", tmp_path / "m.json", "--quiet")
    assert rc == 0 and sum("INSECURE" in line for line in out) >= 2


def test_depth_refused_before_work_and_no_output(capsys, tmp_path, iris_csv):
    model = tmp_path / "m.json"
    rc, out, err = run(capsys, "fit", "--data", iris_csv, "--model", "toy-centroid", "--iterations", 4,
                       "--preset", "n8192", "--out", model, "--quiet")
    assert rc == 1 and "4 iterations need 5 levels but n8192 offers 2; 1 iteration(s) fit" in err
    assert not model.exists() and not any("keygen" in line for line in out)


@pytest.mark.parametrize("extra, message", [
    (["--hidden", "32,x"], "--hidden must be comma-separated"),
    (["--iterations", "0"], "at least 1"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--preset", "n4096"], "unknown CKKS preset"),
    (["--sigmoid", "published"], "does not know config keys \\[.sigmoid.\\]"),
])
def test_bad_options(capsys, tmp_path, iris_csv, extra, message):
    import re
    model = tmp_path / "m.json"
    rc, _, err = run(capsys, "fit", "--data", iris_csv, "--model", "toy-centroid", "--out", model, "--quiet",
                     "--backend", "sim", *extra)
    assert rc == 1 and re.search(message, err), err
    assert not model.exists()


def test_bad_data_files(capsys, tmp_path, iris_csv):
    bad = tmp_path / "bad.csv"
    bad.write_text("0.0,1,2\n1.0,nan,3\n")
    rc, _, err = run(capsys, "fit", "--data", bad, "--model", "toy-centroid", "--out", tmp_path / "m.json")
    assert rc == 1 and "NaN or infinite" in err and not (tmp_path / "m.json").exists()
    rc, _, err = run(capsys, "fit", "--data", iris_csv, "--model", "toy-centroid", "--out", tmp_path / "no" / "m.json")
    assert rc == 1 and "does not exist" in err


def test_evaluate_errors(capsys, tmp_path, iris_csv):
    model = tmp_path / "m.json"
    assert run(capsys, "fit", "--data", iris_csv, "--model", "toy-centroid", "--backend", "sim", "--out", model,
               "--quiet")[0] == 0
    X = np.loadtxt(iris_csv, delimiter=",")
    unknown = tmp_path / "unknown.csv"
    np.savetxt(unknown, np.column_stack([np.full(3, 9.0), X[:3, 1:]]), delimiter=",")
    rc, _, err = run(capsys, "evaluate", "--model", model, "--data", unknown)
    assert rc == 1 and "labels [9] were not seen in training" in err
    narrow = tmp_path / "narrow.csv"
    np.savetxt(narrow, X[:, :3], delimiter=",")
    rc, _, err = run(capsys, "evaluate", "--model", model, "--data", narrow)
    assert rc == 1 and "has 2 features but the preprocessing recorded at training expects 4" in err
    rc, _, err = run(capsys, "evaluate", "--model", iris_csv, "--data", iris_csv)
    assert rc == 1 and "not a hetrain model file" in err


def test_demo_prints_encrypted_vs_plaintext(capsys):
    rc, out, err = run(capsys, "demo", "--dataset", "iris", "--model", "toy-centroid", "--backend", "sim", "--quiet")
    assert rc == 0, err
    enc = float(out[-1].split("encrypted_accuracy=")[1])
    plain = float(out[-2].split("plaintext_accuracy=")[1])
    assert abs(enc - plain) < 0.05 and plain > 0.7


def test_demo_default_model_is_mlr(capsys):
    rc, out, err = run(capsys, "demo", "--backend", "sim", "--quiet")
    assert rc == 0, err
    assert out[0].startswith("dataset wine:") and any("model=mlr" in line for line in out)
    enc = float(out[-1].split("encrypted_accuracy=")[1])
    assert enc == float(out[-2].split("plaintext_accuracy=")[1]) and enc > 0.93  # sim: identical arithmetic


def test_fit_warns_about_constant_features_in_one_line(capsys, tmp_path, iris_csv):
    """Issue 10 item 11: constant columns are named on one `warning:` line; all-constant data is refused."""
    rows = [line.split(",") for line in iris_csv.read_text().splitlines()]
    data = tmp_path / "const.csv"
    data.write_text("".join(",".join(r[:2] + ["7.0"] + r[2:] + ["0.0"]) + "\n" for r in rows))
    rc, out, err = run(capsys, "fit", "--data", data, "--model", "toy-centroid", "--backend", "sim",
                       "--out", tmp_path / "m.json", "--quiet")
    assert rc == 0, err
    warned = [line for line in err.splitlines() if "constant" in line]
    assert warned == ["hetrain fit: warning: 2 of 6 features are constant in the training rows (features 1, 5): "
                      "centred to 0, they carry no information"], err
    assert "UserWarning" not in err and "warnings.warn" not in err
    flat = tmp_path / "flat.csv"
    flat.write_text("".join(f"{r[0]},1.0,2.0\n" for r in rows))
    rc, _, err = run(capsys, "fit", "--data", flat, "--model", "toy-centroid", "--backend", "sim",
                     "--out", tmp_path / "m2.json", "--quiet")
    assert rc == 1 and err.strip() == ("hetrain fit: error: every feature is constant in the training rows "
                                       "(2 of 2): there is nothing to learn from")
