"""Typed trainer configs (models/configs.py), the one source of the trainers' options: every bad value
refused naming the option and the valid values; `fit --help`, the estimators' parameters and the
--config keys derived from the configs (a new field appears in all three); estimator and CLI give
the same trainer config; the server refuses a job.json config with an error code before reading a
ciphertext; older job.json and model files without newer fields still load."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re

import numpy as np
import pytest
from sklearn.base import clone

from hetrain.cli.config import ConfigError, apply_config
from hetrain.cli.main import build_parser
from hetrain.data import export_csv, load_builtin
from hetrain.estimators import EncryptedLogisticRegression, EncryptedMLPClassifier, EstimatorParamError
from hetrain.models import configs
from hetrain.models.configs import CONFIGS, MiniBatchConfig
from hetrain.models.option_kinds import (Beta, Bool, Choice, Float, Int, IntList, Matrix, OptionRangeError, OptionTypeError,
                                         Sigmoid, SigmoidList, UnknownOptionError, option)
from jobkit import make_job, run_cli


def bad_values(kind) -> list:
    """Values ``kind`` must refuse: one of the wrong type, and the out-of-range ones its bounds give."""
    if isinstance(kind, Int):
        out = [2.5, "x"] + ([kind.low - 1] if kind.low is not None else []) + ([kind.high + 1] if kind.high else [])
        return out + ([] if kind.optional else [None])
    if isinstance(kind, Float):
        out = [[1.0], "fast", math.nan, math.inf]
        if kind.low is not None:
            out.append(kind.low if kind.low_open else kind.low - 0.5)
        if kind.high is not None:
            out.append(kind.high if kind.high_open else kind.high + 0.5)
        return out
    if isinstance(kind, Choice):
        return ["bogus", 3]
    if isinstance(kind, Sigmoid):
        return ["deg99:8", "sigmoidish", 3] + (["published"] if kind.degree is not None else [])
    if isinstance(kind, Bool):
        return ["maybe", 1]
    if isinstance(kind, IntList):
        out = ["32,x", [kind.low - 1], [1.5], ""]
        return out + ([[2] * (kind.max_len + 1)] if kind.max_len else [])
    if isinstance(kind, SigmoidList):
        return ["deg3:16,nope", [3]]
    if isinstance(kind, Matrix):
        return [[[1.0, math.nan]], [[1.0], [1.0, 2.0]], "1,2", [[True]]]
    if isinstance(kind, Beta):
        return [1.0, -0.1, "fast", True]
    raise AssertionError(f"no bad values for {kind!r}: add them here")


FIELDS = [(trainer, name) for trainer, cls in CONFIGS.items() for name in cls.options()]
BAD = [(trainer, name, value) for trainer, name in FIELDS
       for value in bad_values(CONFIGS[trainer].options()[name].kind)]


@pytest.mark.parametrize("trainer, name, value", BAD, ids=[f"{t}-{n}-{v!r}" for t, n, v in BAD])
def test_every_bad_value_of_every_field_is_refused_naming_option_and_valid_values(trainer, name, value):
    cls = CONFIGS[trainer]
    valid = re.escape(cls.options()[name].kind.valid)
    with pytest.raises((OptionTypeError, OptionRangeError), match=rf"^{trainer}: {name} must be {valid}, got "):
        cls.from_dict({name: value})
    if cls.options()[name].user and value is not None:  # the same check (None: not given) for a user, naming the option as the command line spells it
        flag = "--" + name.replace("_", "-")
        with pytest.raises((OptionTypeError, OptionRangeError), match=rf"^{flag} must be {valid}, got "):
            configs.user_config(trainer, {name: value}, style="cli")


def test_error_codes_say_which_kind_of_error():
    with pytest.raises(UnknownOptionError, match="epochz is not an option of mlr-minibatch; its options: epochs") as e:
        MiniBatchConfig.from_dict({"epochz": 3})
    assert e.value.code == "config-unknown-key"
    with pytest.raises(OptionTypeError) as e:
        MiniBatchConfig.from_dict({"epochs": "3"})  # JSON's string is not a number (only a command line's is parsed)
    assert e.value.code == "config-wrong-type"
    with pytest.raises(OptionTypeError, match="epochs must be at least 1"):
        EncryptedLogisticRegression(epochs="3")._config()  # nor a Python one
    with pytest.raises(OptionRangeError) as e:
        MiniBatchConfig.from_dict({"epochs": 0})
    assert e.value.code == "config-out-of-range"


def test_defaults_are_valid_and_are_the_trainers_defaults():
    from hetrain.models import mlp_diagonal, mlp_dvr, mlr, mlr_minibatch

    for module, cls in ((mlr, configs.MLRConfig), (mlr_minibatch, MiniBatchConfig), (mlp_dvr, configs.MLPConfig),
                        (mlp_diagonal, configs.DiagonalMLPConfig)):
        assert module.DEFAULTS == cls().to_dict() == cls.defaults()
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
        with pytest.raises(dataclasses.FrozenInstanceError):
            cls().learning_rate = 1.0
    # every trainer accepts its full default config (the schema does not invent keys the trainer lacks)
    from hetrain.models.base import get_trainer

    for trainer, cls in CONFIGS.items():
        assert get_trainer(trainer)(**cls.defaults()).name == trainer


def test_command_line_strings_are_parsed_by_the_field():
    assert configs.user_config("mlp-dvr", {"hidden": "32, 16", "centred_hidden": "yes", "input_clip": "none",
                                           "label_smoothing": "0.1"}, "cli").config == {
        "hidden": [32, 16], "centred_hidden": True, "input_clip": None, "label_smoothing": 0.1}  # none: given, no clip
    assert configs.user_config("mlr-minibatch", {"momentum": "0.9", "epochs": "7"}, "cli") == (
        {"momentum": 0.9}, {"max_epochs": 7}, {"momentum": 0.9, "epochs": 7})


def test_an_option_of_another_trainer_names_the_trainers_that_have_it():
    with pytest.raises(UnknownOptionError, match=r"^--hidden-learning-rate applies to --model mlp --layout diagonal "
                                                 r"\(mlp-diagonal\); this run is --model mlp --layout dvr \(mlp-dvr\)$"):
        configs.user_config("mlp-dvr", {"hidden_learning_rate": "2"}, "cli")
    with pytest.raises(UnknownOptionError, match="use epochs N"):
        configs.user_config("mlr-minibatch", {"iterations": 3}, "python")
    with pytest.raises(UnknownOptionError, match="seed applies to no trainer"):  # not a user option anywhere
        configs.user_config("mlp-dvr", {"seed": 3}, "python")


# ---------------------------------------------------------------------- derived: CLI, estimators, --config
def _help(command: str) -> str:
    return re.sub(r"\s+", "", build_parser().commands[command].format_help())


@pytest.mark.parametrize("command", ["fit", "encrypt", "demo"])
def test_help_lists_every_user_field_with_each_trainers_default(command):
    text = _help(command)
    for name, uses in configs.user_options().items():
        assert f"--{name.replace('_', '-')}" in text, name
        for trainer, opt, default in uses:
            assert re.sub(r"\s+", "", f"{trainer} {opt.default_words(default)}") in text, (name, trainer)
    derived = {getattr(a, "trainer_option", None) for a in build_parser().commands[command]._actions} - {None}
    assert derived == set(configs.user_options())  # the protocol's own fields (seed, projection, ...) are not options
    assert {"seed", "projection", "check_interval"}.isdisjoint(derived)


@dataclasses.dataclass(frozen=True)
class ToyMiniBatch(MiniBatchConfig):
    """The mini-batch config with one new field, as a trainer's author would add it."""

    toy_knob: int = option(7, Int(low=2), "a toy option of the mini-batch trainer")


def test_a_new_config_field_reaches_cli_estimators_and_config_files(monkeypatch, tmp_path):
    monkeypatch.setitem(CONFIGS, "mlr-minibatch", ToyMiniBatch)
    assert "--toy-knob" in _help("fit") and "mlr-minibatch7" in _help("fit")
    est = EncryptedLogisticRegression(toy_knob=3)
    assert est.get_params()["toy_knob"] == 3 and clone(est).toy_knob == 3
    assert est.set_params(toy_knob=4).toy_knob == 4 and est._config() == {"toy_knob": 4}
    assert "toy_knob" not in EncryptedMLPClassifier().get_params()  # another family's trainers lack it
    cfg = tmp_path / "c.toml"
    cfg.write_text("toy-knob = 5\n")
    assert apply_config(build_parser().commands, "fit", ["--config", str(cfg)]) == {"toy_knob": 5}
    cfg.write_text("toy-knob = 'five'\n")
    with pytest.raises(ConfigError, match=r"key 'toy-knob' must be an integer, got 'five' \(a string\)"):
        apply_config(build_parser().commands, "fit", ["--config", str(cfg)])
    with pytest.raises(OptionRangeError, match=r"^--toy-knob must be at least 2 \(a whole number\), got 1$"):
        configs.user_config("mlr-minibatch", {"toy_knob": "1"}, "cli")


def _cli_job(argv: list[str], n_features: int):
    from hetrain.cli.fit import job_options

    args = build_parser().commands["fit"].parse_args(["--data", "d.csv", "--out", "m.json", *argv])
    return job_options(args, n_features, "sim"), args


SAME = [
    # (estimator, its parameters, the command line's options, n_features)
    (EncryptedLogisticRegression, dict(refresh="none", iterations=2, learning_rate=3, sigmoid="deg3:16",
                                       momentum="nesterov", layout="volley-revolver"),
     ["--model", "mlr", "--refresh", "none", "--iterations", "2", "--learning-rate", "3", "--sigmoid", "deg3:16",
      "--momentum", "nesterov", "--layout", "volley-revolver"], 13),
    (EncryptedLogisticRegression, dict(epochs=5, batch_size=64, patience=0, momentum=0.9, weight_decay=0.01),
     ["--epochs", "5", "--batch-size", "64", "--patience", "0", "--momentum", "0.9", "--weight-decay", "0.01"], 13),
    (EncryptedMLPClassifier, dict(layout="dvr", hidden=(8, 4), label_smoothing=0.1, centred_hidden=True,
                                  batch_size=None, input_clip=3),
     ["--model", "mlp", "--layout", "dvr", "--hidden", "8,4", "--label-smoothing", "0.1", "--centred-hidden", "true",
      "--input-clip", "3", "--refresh", "none"], 30),
    (EncryptedMLPClassifier, dict(hidden=6, hidden_learning_rate=2.0, transpose="repacked"),
     ["--model", "mlp", "--layout", "auto", "--hidden", "6", "--hidden-learning-rate", "2", "--transpose", "repacked",
      "--refresh", "none"],
     4),
]


@pytest.mark.parametrize("est_cls, params, argv, d", SAME, ids=["mlr", "mlr-minibatch", "mlp-dvr", "mlp-diagonal"])
def test_estimator_and_cli_give_the_same_trainer_config(est_cls, params, argv, d):
    (refresh, config, options), args = _cli_job(argv, d)
    est = est_cls(**params)
    assert config == est._config(d) and config  # something was given
    assert options.get("max_epochs") == est._options(0, d).get("max_epochs")
    assert refresh == est._refresh_mode()
    for key, value in config.items():  # the model file records the checked value, not the typed string
        assert vars(args)[key] == value


def test_estimator_refuses_what_its_trainers_lack():
    with pytest.raises(EstimatorParamError, match="EncryptedLogisticRegression has no parameter 'hidden'"):
        EncryptedLogisticRegression(hidden=3)
    with pytest.raises(UnknownOptionError, match="^mlr: epochs applies to mlr-minibatch; this run is mlr$"):
        EncryptedLogisticRegression(refresh="none", epochs=3)._config()
    with pytest.raises(OptionRangeError, match=r"^mlp-diagonal: hidden must be one whole number of at least 1, "):
        EncryptedMLPClassifier(hidden=(4, 4))._config(4)
    with pytest.raises(UnknownOptionError, match="^mlp-dvr: output_sigmoid applies to mlp-diagonal"):
        EncryptedMLPClassifier(output_sigmoid="deg1:8")._config(30)


def test_cli_refuses_in_one_line(capsys, tmp_path):
    data = tmp_path / "iris.csv"
    export_csv("iris", data)
    for argv, message in [
        (["--model", "mlp", "--layout", "dvr", "--hidden-learning-rate", "2"],
         "--hidden-learning-rate applies to --model mlp --layout diagonal (mlp-diagonal); this run is --model mlp "
         "--layout dvr (mlp-dvr)"),
        (["--model", "mlp", "--label-smoothing", "0.5"], "--label-smoothing applies to --model mlp --layout dvr"),
        (["--model", "mlp", "--layout", "dvr", "--label-smoothing", "0.5"],
         "--label-smoothing must be a number in [0, 0.5), got 0.5"),
        (["--batch-size", "many"], "--batch-size must be at least 1 (a whole number), got 'many'"),
    ]:
        rc, _, err = run_cli(capsys, "fit", "--data", data, "--out", tmp_path / "m.json", "--backend", "sim", "--quiet",
                             *argv)
        assert rc == 1 and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "m.json").exists()


# ---------------------------------------------------------------------- the server's check of job.json
@pytest.fixture
def bundle(tmp_path):
    X, y = load_builtin("iris")
    return make_job(tmp_path, X, y, "mlp", {"layout": "dvr", "hidden": [4], "iterations": 1, "momentum": "none"},
                    backend="sim", preset="n16384-deep")


def _rewrite(jobdir, change) -> None:
    from hetrain.protocol import files

    job = json.loads((jobdir / files.JOB).read_text())
    change(job["config"])
    (jobdir / files.JOB).write_text(json.dumps(job))
    m = json.loads((jobdir / files.MANIFEST).read_text())
    m["sha256"][files.JOB] = hashlib.sha256((jobdir / files.JOB).read_bytes()).hexdigest()
    (jobdir / files.MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("change, code, message", [
    (lambda c: c.update(epochs=3), "config-unknown-key", "epochs is not an option of mlp-dvr"),
    (lambda c: c.update(hidden="four"), "config-wrong-type", "hidden must be comma-separated whole numbers"),
    (lambda c: c.update(iterations="1"), "config-wrong-type", "iterations must be at least 1 (a whole number), got '1'"),
    (lambda c: c.update(hidden=[0]), "config-out-of-range", "hidden must be comma-separated whole numbers of at least 1"),
    (lambda c: c.update(learning_rate=-1.0), "config-out-of-range", "learning_rate must be a number > 0, got -1.0"),
    (lambda c: c.update(label_smoothing=0.7), "config-out-of-range", "label_smoothing must be a number in [0, 0.5)"),
])
def test_server_refuses_a_bad_config_with_a_code_before_reading_ciphertexts(bundle, change, code, message):
    from hetrain.protocol import files
    from hetrain.protocol.bundle_check import JobConfigError, check_bundle
    from hetrain.protocol.server import run_job

    _rewrite(bundle.jobdir, change)
    (bundle.jobdir / files.INPUTS).write_bytes(b"not ciphertexts")  # never read: the config is refused first
    for check in (check_bundle, run_job):
        with pytest.raises(JobConfigError, match=rf"^job.json: the mlp-dvr config is refused \({code}\): ") as e:
            check(bundle.jobdir)
        assert e.value.code == code and message in str(e.value)


def test_bundle_check_child_reports_the_code(bundle, capsys):
    from hetrain.protocol.bundle_check import main

    _rewrite(bundle.jobdir, lambda c: c.update(momentum="heavy"))
    assert main([str(bundle.jobdir)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["ok"] is False and out["code"] == "config-out-of-range" and "momentum must be one of" in out["error"]


def test_older_job_json_without_newer_fields_still_trains(bundle):
    from hetrain.protocol.server import run_job

    # a job.json written before some fields existed: it lacks them, and their defaults are what it ran with
    defaults, dropped = configs.MLPConfig.defaults(), []

    def drop(config):
        dropped.extend(k for k, v in list(config.items()) if k != "hidden" and v == defaults[k])
        for k in dropped:
            config.pop(k)

    _rewrite(bundle.jobdir, drop)
    assert {"projection", "components", "seed"} <= set(dropped)
    stats = run_job(bundle.jobdir, workers=1)
    assert stats["server_train_s"] > 0
    assert bundle.decrypt().twin_max_abs_diff < 1e-3
    assert configs.check_job_config("toy-centroid", {"anything": 1}) is None  # no schema: the trainer's own checks


def test_older_model_file_without_newer_fields_still_loads(capsys, tmp_path):
    from hetrain.protocol import TrainedModel

    data, model = tmp_path / "iris.csv", tmp_path / "m.json"
    export_csv("iris", data)
    rc, _, err = run_cli(capsys, "fit", "--data", data, "--out", model, "--backend", "sim", "--quiet", "--model", "mlp",
                         "--layout", "dvr", "--hidden", "4", "--iterations", "1", "--momentum", "none", "--refresh", "none",
                         "--seed", "0")
    assert rc == 0, err
    record = json.loads(model.read_text())
    X, _ = load_builtin("iris")
    before = TrainedModel.load(model).predict_scores(X)
    defaults = configs.MLPConfig.defaults()
    for key in [k for k, v in record["config"].items() if k != "hidden" and v == defaults[k]]:
        record["config"].pop(key)
    assert "projection" not in record["config"]
    from hetrain.protocol import files

    record["checksum"] = files._model_checksum(record)  # as the older hetrain wrote it
    model.write_text(json.dumps(record))
    np.testing.assert_allclose(TrainedModel.load(model).predict_scores(X), before)


# ---------------------------------------------------------------------- real encryption
def test_fit_through_the_derived_options_under_seal(capsys, tmp_path):
    data, model = tmp_path / "iris.csv", tmp_path / "m.json"
    export_csv("iris", data)
    rc, out, err = run_cli(capsys, "fit", "--data", data, "--out", model, "--backend", "seal", "--preset", "n8192",
                           "--quiet", "--refresh", "none", "--iterations", "1", "--learning-rate", "2",
                           "--sigmoid", "deg3:16", "--layout", "blocked", "--momentum", "nesterov", lines=True)
    assert rc == 0, err
    record = json.loads(model.read_text())
    assert record["config"] == {"iterations": 1, "learning_rate": 2.0, "sigmoid": "deg3:16", "momentum": "nesterov",
                                "layout": "blocked"}
    assert record["info"]["configuration"]["fit"]["learning_rate"] == 2.0  # recorded as checked, not as typed
    assert float(out[-1].split("=")[1]) < 1e-3  # twin_max_abs_diff
