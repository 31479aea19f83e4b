"""``--config FILE.toml``: option values of a command from a TOML file; options given on the command
line win. One merge for every command that offers it (``apply_config``, called by main before it
parses), and the effective configuration that the model file records (``effective_config``).

    # fit.toml                               hetrain fit --config fit.toml --epochs 5
    data = "iris.csv"                        # keys: the long option names, with - or _
    label-column = "species"
    epochs = 20                              # the command line's --epochs 5 wins
    keys = "KEYS"                            # top level: for every command that has the option
    [fit]                                    # a table named after a command: for that command only
    out = "/tmp/iris-model.json"

A top-level key that none of the commands taking --config knows, and a key in a command's table that
this command does not know, are errors (a misspelt option must not pass silently).
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from hetrain.errors import HetrainUserError

# commands that take --config (main adds the option to each)
CONFIG_COMMANDS = ("fit", "keygen", "encrypt", "train", "submit", "refresh", "decrypt")
# never recorded in a model file: secrets, and what only says how to run this process
NOT_RECORDED = frozenset({"api_key", "verbose", "quiet", "command", "_run"})


class ConfigError(HetrainUserError):
    """A --config file is missing, not TOML, or holds an unknown key or a value of the wrong type."""


def add_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml",
                   help="option values from a TOML file: keys are the long option names (learning-rate or "
                        "learning_rate = 2.0), a [COMMAND] table holds values for that command only; options on "
                        "the command line win (default: none)")


def config_path(argv: list[str]) -> str | None:
    """The value of --config in a command's arguments (None when absent)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    return known.config


def apply_config(parsers: dict[str, argparse.ArgumentParser], command: str, argv: list[str]) -> dict:
    """Set the defaults of ``parsers[command]`` (main's ``parser.commands``) from the --config file
    named in ``argv`` (the command's arguments), so that the command line still wins; an option the
    file gives is no longer required. Returns the values taken from the file ({} without --config).
    ConfigError for a missing or malformed file, an unknown key (named, with the valid ones) or a
    value of the wrong type."""
    path = config_path(argv)
    if path is None:
        return {}
    doc = read_toml(path)
    options = _long_options(parsers[command])
    anywhere = {k for name in CONFIG_COMMANDS if name in parsers for k in _long_options(parsers[name])}
    values = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    for key in values:
        if key.replace("-", "_") not in anywhere:
            raise ConfigError(f"{path}: unknown key {key!r}: no command that reads --config has the option "
                              f"--{key.replace('_', '-')} (`hetrain {command}` has: {_names(options)})")
    values = {k: v for k, v in values.items() if k.replace("-", "_") in options}  # the other commands' keys
    for name, table in doc.items():
        if isinstance(table, dict) and name not in CONFIG_COMMANDS:
            raise ConfigError(f"{path}: unknown table [{name}]; a table must be named after a command "
                              f"({', '.join(CONFIG_COMMANDS)})")
    values.update(doc.get(command, {}))
    defaults = {}
    for key, value in values.items():
        action = options.get(key.replace("-", "_"))
        if action is None:
            raise ConfigError(f"{path}: unknown key {key!r} in [{command}]; `hetrain {command}` has: {_names(options)}")
        defaults[action.dest] = _convert(action, value, key, path)
        action.required = False
    parsers[command].set_defaults(**defaults)
    return defaults


def read_toml(path: str) -> dict:
    """The TOML file at ``path`` as a dict (ConfigError: missing, unreadable or not TOML)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover  (Python 3.10: the tomli backport, a dependency there)
        import tomli as tomllib
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot be read: {exc.strerror}") from None


def effective_config(args: argparse.Namespace) -> dict:
    """The options a command ran with (command line over --config over defaults), as recorded in
    the model file's ``info["configuration"]``: secrets (--api-key) and display switches left out."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in NOT_RECORDED and not k.startswith("_")}


def _names(options: dict) -> str:
    return ", ".join(sorted(k.replace("_", "-") for k in options))


def _long_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """key (long option name with _) -> its action, for every option a file may set."""
    out = {}
    for action in parser._actions:
        if action.dest in ("help", "config", "version"):
            continue
        for opt in action.option_strings:
            if opt.startswith("--") and not opt.startswith("--no-"):
                out[opt[2:].replace("-", "_")] = action
    return out


def _convert(action: argparse.Action, value, key: str, path: str):
    """The value as the option would have parsed it; ConfigError naming the key otherwise."""
    def wrong(what: str):
        return ConfigError(f"{path}: key {key!r} must be {what}, got {value!r} ({_toml_type(value)})")

    if getattr(action, "trainer_option", None):  # a trainer option (cli/fit.add_trainer_arguments)
        return _trainer_value(action.trainer_option, value, wrong)
    if action.nargs == 0:  # a switch: --quiet, --header/--no-header
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise wrong("a string or a list of strings")
        return list(items)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise wrong("a number" if action.type in (int, float) else "a string or a number")
    if action.type is int and not isinstance(value, int):
        raise wrong("an integer")
    if action.type is float and isinstance(value, str):
        raise wrong("a number")
    try:
        converted = action.type(value if action.type in (int, float) else str(value)) if action.type else str(value)
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: key {key!r}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(f"{path}: key {key!r} must be one of {', '.join(map(str, action.choices))}, "
                          f"got {value!r}")
    return converted


def _trainer_value(name: str, value, wrong):
    """A trainer option's value from TOML, checked by the kind of the configs' field ``name``
    (models/configs.py): as TOML types it (epochs = 20, hidden = [32, 16], momentum = 0.9), or a
    string where the field holds one (sigmoid = "deg3:16", hidden = "32,16"). The range is checked
    with the trainer the run resolves to (cli/fit.job_options)."""
    from hetrain.models import configs, option_kinds

    uses = configs.user_options()[name]
    for _, opt, _ in uses:
        if isinstance(value, str) and not opt.kind.accepts_text:
            continue
        try:
            checked = opt.kind.coerce(value)
        except option_kinds.ConfigTypeError:
            continue
        return opt.kind.plain(checked)
    raise wrong(uses[0][1].kind.type_text)


def _toml_type(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)
