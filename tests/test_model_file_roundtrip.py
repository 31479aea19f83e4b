"""Every model that `hetrain fit` writes loads in `hetrain evaluate` and `TrainedModel.load` (every
trainer x refresh mode, sim; one real-SEAL path per trainer), and load refuses what no model can be:
non-finite weights or statistics, weight shapes that contradict the model's config, classes or
feature count (issue 10, items 1, 5, 8)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hetrain import ckks
from hetrain.cli.main import main
from hetrain.protocol import ModelFileError, TrainedModel, files

# per trainer: the fit options for one chain (none) and for a refreshed run (client, bootstrap)
TRAINERS = {
    "mlr": (["--model", "mlr", "--sigmoid", "deg3:16", "--iterations", "2"],
            ["--model", "mlr", "--sigmoid", "deg3:16", "--epochs", "2", "--batch-size", "64", "--patience", "0"]),
    "mlp-dvr": (["--model", "mlp", "--layout", "dvr", "--hidden", "4", "--momentum", "none", "--iterations", "1"],
                ["--model", "mlp", "--layout", "dvr", "--hidden", "4", "--momentum", "none", "--iterations", "2"]),
    "mlp-diagonal": (["--model", "mlp", "--layout", "diagonal", "--iterations", "1"],
                     ["--model", "mlp", "--layout", "diagonal", "--iterations", "2"]),
}


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    d = tmp_path_factory.mktemp("iris")
    assert main(["datasets", "export", "iris", "--out", str(d / "train.csv"), "--test-out", str(d / "test.csv")]) == 0
    rows = (d / "train.csv").read_text().splitlines()
    (d / "small.csv").write_text("\n".join(rows[::2]) + "\n")  # 60 rows for the real-SEAL runs
    return d


def _fit_and_evaluate(capsys, tmp_path, data, args):
    out = tmp_path / "model.json"
    rc = main(["fit", "--data", str(data), "--out", str(out), "--quiet", "--seed", "0", *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rc = main(["evaluate", "--model", str(out), "--data", str(data.parent / "test.csv")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out.strip().splitlines()[-1].startswith("accuracy=")
    m = TrainedModel.load(out)
    assert isinstance(m.info["params"], dict) and m.info["params"]["name"]  # one schema for every writer
    return m


@pytest.mark.parametrize("refresh", ["none", "client", "bootstrap"])
@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_every_model_fit_writes_loads_sim(capsys, tmp_path, iris, monkeypatch, trainer, refresh):
    if refresh == "bootstrap":  # the sim bootstraps when told its bootstrap level (what desilo does for real)
        real = ckks.create_engine

        def with_bootstrap(backend, params="n16384", *a, **kw):
            kw.setdefault("bootstrap_level", ckks.get_params(params).levels)
            return real(backend, params, *a, **kw)
        monkeypatch.setattr(ckks, "create_engine", with_bootstrap)
    args = TRAINERS[trainer][refresh != "none"]
    m = _fit_and_evaluate(capsys, tmp_path, iris / "train.csv",
                          [*args, "--backend", "sim", "--refresh", refresh])
    assert m.info["backend"] == "sim"


SEAL_RUNS = {
    "mlr": ["--preset", "n16384", *TRAINERS["mlr"][0][:4], "--iterations", "1"],
    "mlr-refresh-client": ["--preset", "n16384", "--refresh", "client", *TRAINERS["mlr"][1][:4],
                           "--epochs", "1", "--batch-size", "64"],
    "mlp-diagonal": ["--preset", "n16384-deep", *TRAINERS["mlp-diagonal"][0]],
    "mlp-dvr-refresh-client": ["--preset", "n16384-deep", "--refresh", "client", *TRAINERS["mlp-dvr"][1]],
}


@pytest.mark.parametrize("run", sorted(SEAL_RUNS))
def test_every_trainer_model_loads_seal(capsys, tmp_path, iris, run):
    m = _fit_and_evaluate(capsys, tmp_path, iris / "small.csv", ["--backend", "seal", *SEAL_RUNS[run]])
    assert m.info["backend"] == "seal"


def test_models_written_before_model_info_still_load(tmp_path, sim_model):
    body = json.loads(sim_model.read_text())
    body["info"]["params"] = "n16384"  # what fit --model mlr --refresh client used to write
    bad = _rewrite(tmp_path, body)
    assert TrainedModel.load(bad).params_name == "n16384"
    assert main(["evaluate", "--model", str(bad), "--data", str(sim_model.parent / "test.csv")]) == 0


# ---------------------------------------------------------------------- item 8: refuse what no model can be
@pytest.fixture(scope="module")
def sim_model(iris):
    out = iris / "mlr.json"
    assert main(["fit", "--data", str(iris / "train.csv"), "--out", str(out), "--backend", "sim", "--quiet",
                 *TRAINERS["mlr"][0]]) == 0
    return out


def _rewrite(tmp_path, body) -> str:
    """The edited model with a recomputed checksum (as someone editing it on purpose would)."""
    body = dict(body)
    body["checksum"] = files._model_checksum(body)
    p = tmp_path / "edited.json"
    p.write_text(json.dumps(body))
    return str(p)


def _weights(body, name="W"):
    w = body["weights"][name]
    return np.asarray(w["values"], dtype=float).reshape(w["shape"])


def _set(body, name, array):
    body["weights"][name] = {"shape": list(array.shape), "values": array.ravel().tolist()}


EDITS = {
    "nan weight": (lambda b: _set(b, "W", np.where(np.arange(15).reshape(3, 5) == 4, np.nan, _weights(b))), "NaN or infinite"),
    "inf weight": (lambda b: _set(b, "W", _weights(b) * np.inf), "NaN or infinite"),
    "nan mean": (lambda b: b["preprocessing"]["mean"].__setitem__(0, float("nan")), "mean"),
    "inf std": (lambda b: b["preprocessing"]["std"].__setitem__(1, float("inf")), "std"),
    "inf scale": (lambda b: b["preprocessing"].__setitem__("scale", float("inf")), "scale"),
    "feature count": (lambda b: _set(b, "W", _weights(b)[:, :4]), "do not match"),
    "class count": (lambda b: _set(b, "W", _weights(b)[:2]), "do not match"),
    "extra array": (lambda b: _set(b, "b", np.zeros(3)), "do not match"),
    "missing array": (lambda b: b["weights"].pop("W") and _set(b, "V", np.zeros((3, 5))), "do not match"),
    "mlp config": (lambda b: (b.__setitem__("model", "mlp-dvr"), b.__setitem__("config", {"hidden": [4]})),
                   "do not match"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_load_refuses_impossible_models(capsys, tmp_path, sim_model, edit):
    body = json.loads(sim_model.read_text())
    change, message = EDITS[edit]
    change(body)
    bad = _rewrite(tmp_path, body)
    with pytest.raises(ModelFileError, match=message):
        TrainedModel.load(bad)
    rc = main(["evaluate", "--model", bad, "--data", str(sim_model.parent / "test.csv")])
    captured = capsys.readouterr()
    assert rc == 1 and "accuracy=" not in captured.out
    assert captured.err.startswith("hetrain evaluate: error: ") and captured.err.count("\n") == 1
    assert "np.float64" not in captured.err


# ---------------------------------------------------------------------- item 5: a CSV without labels
@pytest.mark.parametrize("dataset", ["digits", "iris"])
def test_evaluate_on_csv_without_labels_says_so(capsys, tmp_path, dataset):
    data = tmp_path / "train.csv"
    assert main(["datasets", "export", dataset, "--out", str(data)]) == 0
    model = tmp_path / "m.json"
    assert main(["fit", "--data", str(data), "--out", str(model), "--backend", "sim", "--quiet",
                 *TRAINERS["mlr"][0][:4], "--iterations", "1"]) == 0
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("".join(line.split(",", 1)[1] + "\n" for line in data.read_text().splitlines()))
    capsys.readouterr()
    rc = main(["evaluate", "--model", str(model), "--data", str(unlabelled)])
    err = capsys.readouterr().err
    assert rc == 1 and "no label column" in err and "column 0 must be the label" in err, err
    assert "predict" not in err  # no such command yet


def test_label_errors_print_plain_numbers(capsys, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("0,1.0\n2.5,2.0\n")  # 2.5: a class name (a warning says so), never np.float64(2.5)
    rc = main(["evaluate", "--model", str(tmp_path / "none.json"), "--data", str(data)])
    assert rc == 1
    from hetrain.data import load_csv
    from hetrain.errors import DataWarning

    with pytest.warns(DataWarning) as info:
        load_csv(data)
    assert "such as 2.5" in str(info[0].message) and "np." not in str(info[0].message)
