"""Issue 17: --config FILE.toml for fit and the two-party commands (one merge: cli.config.apply_config);
the command line wins; the effective configuration is recorded in the model file."""
from __future__ import annotations

import json

import pytest

from hetrain.cli.config import CONFIG_COMMANDS, ConfigError, apply_config
from hetrain.cli.main import build_parser, main
from hetrain.data import export_csv
from jobkit import run_cli  # noqa: E402

JOB = ["--model", "mlr", "--refresh", "none", "--sigmoid", "deg3:16"]


def run(capsys, *argv):
    return run_cli(capsys, *argv, lines=True)


@pytest.fixture
def iris(tmp_path):
    path = tmp_path / "iris.csv"
    export_csv("iris", path)
    return path


def toml(tmp_path, text: str, name: str = "c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_config_command_offers_config():
    parser = build_parser()
    for name in CONFIG_COMMANDS:
        assert "--config" in parser.commands[name]._option_string_actions, name


def test_fit_config_file_command_line_wins_and_model_records_it(capsys, tmp_path, iris):
    model = tmp_path / "m.json"
    cfg = toml(tmp_path, f'''
data = "{iris}"
out = "{model}"
backend = "sim"
refresh = "none"
iterations = 1
learning_rate = 4.0     # with _ ...
validation-fraction = 0.3   # ... or with -
quiet = true
api-key = "s3cret"
[fit]
sigmoid = "deg3:16"
[encrypt]
keys = "not for fit"
''')
    rc, out, err = run(capsys, "fit", "--config", cfg, "--iterations", 2)  # the command line wins
    assert rc == 0, err
    recorded = json.loads(model.read_text())["info"]["configuration"]["fit"]
    assert recorded["iterations"] == 2 and recorded["learning_rate"] == 4.0 and recorded["sigmoid"] == "deg3:16"
    assert recorded["validation_fraction"] == 0.3 and recorded["data"] == str(iris) and recorded["config"] == str(cfg)
    assert "api_key" not in recorded and "s3cret" not in model.read_text()  # a secret is never recorded
    assert "keys" in recorded and recorded["keys"] is None  # [encrypt] is another command's table
    from hetrain.protocol import TrainedModel

    assert TrainedModel.load(model).info["configuration"]["fit"]["iterations"] == 2


def test_fit_without_config_records_the_command_line(capsys, tmp_path, iris):
    model = tmp_path / "m.json"
    rc, _, err = run(capsys, "fit", "--data", iris, "--out", model, "--backend", "sim", "--iterations", 1, *JOB,
                     "--quiet")
    assert rc == 0, err
    recorded = json.loads(model.read_text())["info"]["configuration"]
    assert list(recorded) == ["fit"] and recorded["fit"]["config"] is None and recorded["fit"]["iterations"] == 1


def test_two_party_commands_read_config_and_the_model_records_encrypt_and_decrypt(capsys, tmp_path, iris):
    keys, job, model = tmp_path / "keys", tmp_path / "job", tmp_path / "m.json"
    cfg = toml(tmp_path, f'''
keys = "{keys}"
job = "{job}"
[keygen]
out = "{keys}"
backend = "sim"
preset = "n16384-deep"
[encrypt]
data = "{iris}"
out = "{job}"
refresh = "none"
iterations = 2
sigmoid = "deg3:16"
quiet = true
[train]
quiet = true
channel-timeout = 60
[decrypt]
out = "{model}"
''')
    for command in ("keygen", "encrypt", "train", "decrypt"):
        rc, _, err = run(capsys, command, "--config", cfg)
        assert rc == 0, (command, err)
    recorded = json.loads(model.read_text())["info"]["configuration"]
    assert set(recorded) == {"encrypt", "decrypt"}
    assert recorded["encrypt"]["iterations"] == 2 and recorded["encrypt"]["data"] == str(iris)
    assert recorded["decrypt"]["out"] == str(model) and recorded["decrypt"]["job"] == str(job)


@pytest.mark.parametrize("text, message", [
    ("epochz = 3", r"c.toml: unknown key 'epochz': no command that reads --config has the option --epochz "
                   r"\(`hetrain fit` has: .*epochs"),
    ("[fit]\nresume = true", r"unknown key 'resume' in \[fit\]; `hetrain fit` has: "),
    ("iterations = '3'", r"key 'iterations' must be an integer, got '3' \(a string\)"),
    ("iterations = 2.5", r"key 'iterations' must be an integer, got 2.5 \(a number\)"),
    ("learning-rate = 'fast'", r"key 'learning-rate' must be a number, got 'fast' \(a string\)"),
    ("quiet = 1", r"key 'quiet' must be true or false, got 1 \(an integer\)"),
    ("backend = 'gpu'", r"key 'backend' must be one of seal, sim, desilo, openfhe, got 'gpu'"),
    ("data = ['a.csv']", r"key 'data' must be a string or a number, got \['a.csv'\] \(an array\)"),
    ("delimiter = ';;'", r"key 'delimiter': give one character"),
    ("[fitt]\nepochs = 3", r"unknown table \[fitt\]"),
    ("epochs = 3\nbatch-size = @", r"c.toml: not valid TOML: .*line 2, column"),
])
def test_bad_config_is_one_line_naming_file_and_key(capsys, tmp_path, text, message):
    cfg = toml(tmp_path, text)
    rc, _, err = run(capsys, "fit", "--config", cfg, "--data", "x.csv", "--out", tmp_path / "m.json")
    assert rc == 2 and err.startswith("hetrain fit: error: ") and err.count("\n") == 1
    import re

    assert re.search(message, err), err
    with pytest.raises(ConfigError, match=message):
        apply_config(build_parser().commands, "fit", ["--config", str(cfg)])


def test_missing_config_file(capsys, tmp_path):
    rc, _, err = run(capsys, "train", "--config", tmp_path / "nope.toml")
    assert rc == 2 and f"--config {tmp_path / 'nope.toml'}: no such file" in err


def test_required_options_may_come_from_the_file_only(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(toml(tmp_path, "quiet = true"))])
    assert e.value.code == 2 and "the following arguments are required: --job" in capsys.readouterr().err
    parsers = build_parser().commands
    parser = parsers["train"]
    apply_config(parsers, "train", ["--config", str(toml(tmp_path, f'job = "{tmp_path}"', "j.toml"))])
    args = parser.parse_args(["--config", "j.toml", "--channel-timeout", "5"])
    assert args.job == str(tmp_path) and args.channel_timeout == 5.0 and args.trainer_module == []


def test_list_and_switch_values(tmp_path):
    parsers = build_parser().commands
    cfg = toml(tmp_path, 'trainer-module = ["a.b", "c"]\nresume = true')
    assert apply_config(parsers, "train", ["--config", str(cfg)]) == {"trainer_module": ["a.b", "c"], "resume": True}
    parser = parsers["fit"]
    cfg = toml(tmp_path, 'header = false\nlabel-column = 3\nmomentum = 0.9', "f.toml")
    # a trainer option keeps its TOML type (models/configs.py checks it once the trainer is known)
    assert apply_config(parsers, "fit", ["--config", str(cfg)]) == {"header": False, "label_column": 3,
                                                                    "momentum": 0.9}
    args = parser.parse_args(["--config", "f.toml", "--data", "d", "--out", "o", "--header", "--label-column", "y"])
    assert args.header is True and args.label_column == "y" and args.momentum == 0.9
