"""Entry point of the `hetrain` command.

Each sub-command lives in its own module of this package and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Register a new one by adding its
name and module to COMMANDS; nothing else here needs to change.
"""
from __future__ import annotations

import argparse
import importlib

import hetrain
import logging
import sys
import warnings

# sub-command name -> (module inside hetrain.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "roundtrip": ("roundtrip", "encrypt -> compute -> decrypt round trip with error and timings"),
    "features": ("features", "images -> frozen pretrained CNN -> feature CSV (needs hetrain[features])"),
    "fit": ("fit", "train a classifier on encrypted data: keygen, encrypt, train, decrypt in one command"),
    "keygen": ("keygen", "data owner: make a secret key in a key directory of its own"),
    "encrypt": ("encrypt", "data owner: preprocess, plan and encrypt training data into a job bundle"),
    "train": ("train", "training server: train a job bundle on ciphertexts (never holds a secret key)"),
    "submit": ("submit", "data owner: hand a job bundle to a `hetrain serve` training service"),
    "refresh": ("refresh", "data owner: answer a running job's refresh requests (may come and go)"),
    "decrypt": ("decrypt", "data owner: decrypt a trained job, check it against the plaintext twin, write the model"),
    "predict": ("predict", "predictions (or class probabilities) of a trained model for rows without labels"),
    "model-spec": ("model_spec", "model owner: the public spec of a model, for encrypted queries (no weights)"),
    "encrypt-queries": ("encrypt_queries", "query owner: encrypt rows for a model spec, or for a job's encrypted model"),
    "infer": ("infer", "server: score encrypted queries with a plaintext or an encrypted model (no secret key)"),
    "decrypt-scores": ("decrypt_scores", "query owner: decrypt the scores of encrypted queries, write predictions"),
    "evaluate": ("evaluate", "accuracy of a trained model on labelled data"),
    "demo": ("demo", "encrypted training on a scikit-learn dataset, encrypted vs plaintext accuracy"),
    "datasets": ("datasets", "export scikit-learn's bundled datasets as CSV"),
    "report": ("report", "a model file's training run as an HTML page with plots (needs matplotlib)"),
    "models": ("models", "list trainers, packings, CKKS presets and backends, one line each"),
    "serve": ("serve", "HTTP training service: receives job bundles, trains, returns ciphertexts (needs hetrain[service])"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default ("(default: 0.2)") unless the text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and action.nargs != 0 and action.default not in (None, argparse.SUPPRESS)
                and "default" not in text.lower()):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    """The `hetrain` parser; ``parser.commands`` maps each sub-command's name to its parser."""
    parser = argparse.ArgumentParser(prog="hetrain", description="Train classifiers on CKKS-encrypted data.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"hetrain {hetrain.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = {}
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"hetrain.cli.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        mod.add_arguments(p)
        if name in CONFIG_COMMANDS:
            add_config_argument(p)
        p.set_defaults(_run=mod.run)
        parser.commands[name] = p
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the global options take no value
    if command in CONFIG_COMMANDS:
        try:  # --config FILE: its values become the defaults, so the command line wins
            apply_config(parser.commands, command, argv[argv.index(command) + 1:])
        except HetrainUserError as exc:
            print(f"hetrain {command}: error: {exc}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():  # hetrain's own warnings: one line each, like the errors
            warnings.simplefilter("always", HetrainWarning)
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            rc = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit ("Exception ignored")
        return rc
    except BrokenPipeError:  # `hetrain ... | head -1`: the reader is gone; stop quietly like other tools
        to_devnull(sys.stdout)
        return 128 + 13  # as if killed by SIGPIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except HetrainUserError as exc:  # clear, expected errors: no traceback
        print(f"hetrain {args.command}: error: {exc}", file=sys.stderr)
        return 1


def _one_line_warnings(command: str, fallback):
    """showwarning for HetrainWarning: `hetrain CMD: warning: message` on stderr, no file:line or source."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, HetrainWarning):
            print(f"hetrain {command}: warning: {message}", file=file or sys.stderr)
        else:
            fallback(message, category, filename, lineno, file, line)
    return show


from hetrain._streams import to_devnull  # noqa: E402  (kept at the bottom: no import cycles)
from hetrain.errors import HetrainUserError, HetrainWarning  # noqa: E402

from .config import CONFIG_COMMANDS, add_config_argument, apply_config  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
