"""`hetrain fit`: train a classifier on encrypted data: keygen → encrypt → train → decrypt in one command
(client here, server in a separate process or the service at --server)."""
from __future__ import annotations

import argparse

from hetrain import ckks
from hetrain.ckks.registry import is_insecure
from hetrain.errors import HetrainUserError
from hetrain.models.mlr_minibatch_plan import DEFAULT_TIME_BUDGET_S
from hetrain.outputs import check_writable

from .confirm import add_confirm_arguments, before_keys
from .inputs import add_input_arguments, describe, table_from_args
from .insecure import add_force_insecure_argument
from .refresh import add_server_ca_argument
from .submit import add_api_key_argument

PARTIAL_EXIT = 3  # a model was written, but training stopped before it was done (time limit, failure)
UNVERIFIED_EXIT = 6  # a model was written only because --force-unverified asked for it


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help=DATA_HELP)
    add_input_arguments(p)
    add_model_argument(p)
    p.add_argument("--out", required=True, help="model file to write (JSON; written only when training succeeds)")
    add_training_arguments(p)
    p.add_argument("--keep-job", metavar="DIR", help="write the job bundle (public keys, ciphertexts) to DIR and keep "
                                                     "it (default: a temporary directory, removed)")
    p.add_argument("--keys", metavar="DIR", help="key directory to use and keep (made with the job's parameters when "
                                                 "absent; see `hetrain keygen`); default: a temporary one, removed")
    p.add_argument("--server", metavar="URL", help="train on a `hetrain serve` service (e.g. http://127.0.0.1:8750) "
                                                   "instead of a local server process; decryption stays here "
                                                   "(default: a server process on this machine)")
    add_channel_timeout_argument(p, default=None)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes of the server process on this machine for the training's independent "
                        "tasks (default: every core; each holds the job's public keys and inputs; 1: all in the "
                        "server process; with --server the service decides)")
    add_force_unverified_argument(p)
    add_force_insecure_argument(p)
    add_api_key_argument(p)
    add_server_ca_argument(p)
    add_confirm_arguments(p)


def add_force_unverified_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force-unverified", action="store_true",
                   help="write the model even when it disagrees with its plaintext twin (the server's result "
                        f"could not be verified): marked unverified in the file, exit status {UNVERIFIED_EXIT} "
                        "(default: refuse, nothing written)")


DATA_HELP = ("training data: CSV (header and delimiter detected, label in column 0 unless --label-column; labels "
             "are whole numbers or text class names), .npz (arrays X, y) or Parquet (.parquet, .pq; needs pyarrow)")


def add_model_argument(p: argparse.ArgumentParser) -> None:
    """--model, its help listing the registered trainers (`hetrain models` describes them)."""
    p.add_argument("--model", default="mlr",
                   help=f"mlr (mini-batch epochs with refresh, full-batch with --refresh none), mlp (--layout picks "
                        f"the implementation), or a registered trainer: {', '.join(trainer_names())} "
                        "(`hetrain models`; default: mlr)")


def add_channel_timeout_argument(p: argparse.ArgumentParser, default: float | None) -> None:
    """--channel-timeout of `train` (``default`` DEFAULT_TIMEOUT_S) and of `fit` (None: the same, for
    its local server process; a service decides its own)."""
    from hetrain.protocol.refresh_channel import DEFAULT_TIMEOUT_S

    p.add_argument("--channel-timeout", type=float, default=default, metavar="SECONDS",
                   help="refresh client: how long the server waits for the data owner (`hetrain refresh`) to "
                        f"attach or answer before it gives up (default {DEFAULT_TIMEOUT_S:g}"
                        + ("; with --server the service's operator decides)" if default is None else
                           "); the job can then be resumed with --resume"))


def trainer_names() -> list[str]:
    """The registered trainers' names (hetrain.models.base.registry, every built-in one imported)."""
    from hetrain.models.base import get_trainer, registry

    get_trainer("mlr")  # imports the catalog: every built-in trainer registers
    return sorted(registry)


def add_training_arguments(p: argparse.ArgumentParser, keys: bool = False) -> None:
    """The job's options, shared by `fit`, `encrypt` and `demo` (``keys``: the parameters and backend
    come from a key directory, so --preset and --backend are not offered): the job's own options here,
    the trainers' options derived from their configs (``add_trainer_arguments``)."""
    if not keys:
        p.add_argument("--preset", default="auto", help=f"CKKS parameters: auto (smallest that fits) or one of {', '.join(ckks.PRESETS)}")
        p.add_argument("--backend", default="seal", choices=ckks.BACKENDS, help=ckks.registry.backend_help())
    p.add_argument("--scale", type=float, default=1.0, help="multiply standardised features by this (keeps polynomial inputs in range)")
    p.add_argument("--seed", type=int, help="seed for the simulation backend, the validation split, the planner and "
                                            "release noise (default: none, fresh randomness each run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    # training past the depth limit (hetrain.protocol.refresh): the server process asks the data
    # owner over the job's refresh channel to re-encrypt its state, or bootstraps
    p.add_argument("--refresh", default="auto", choices=("auto", "none", "client", "bootstrap"),
                   help="auto (default): client, or bootstrap on a backend that can, or none for full-batch mlr "
                        "(--iterations); none: one modulus chain, no interaction; client: the data owner re-encrypts "
                        "the state between iterations; bootstrap: the server bootstraps (desilo, openfhe: `hetrain models`). mlr: "
                        "mini-batches and epochs until validation stops improving; mlp: iterations beyond one chain")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="mlr with refresh: stop at the first epoch end past this wall time and release the best "
                        f"model so far (exit status 3: partial); also the planner's budget (default: no limit; the "
                        f"planner sizes the run for {DEFAULT_TIME_BUDGET_S / 60:g} minutes)")
    p.add_argument("--whitening", default="auto",
                   help="mlr with refresh: auto (planned), none (standardised features as they are) or a shrinkage "
                        "such as 1.0 (features whitened by the client, (XᵀX/n + shrinkage·I)^-1/2)")
    p.add_argument("--validation-fraction", type=float, default=0.2,
                   help="mlr with refresh: rows the client holds out (stratified) for validation (default 0.2)")
    add_trainer_arguments(p)


def add_trainer_arguments(p: argparse.ArgumentParser) -> None:
    """One option per field of the trainer configs (hetrain.models.configs.user_options): its help
    gives, per trainer that has it, the valid values and the default. The value stays as typed (None
    when not given) until ``job_options`` knows the trainer and checks it with that trainer's field."""
    from hetrain.models import configs

    for name in configs.user_options():
        text = configs.cli_help(name)
        if name == "layout":  # with --model mlp it picks the implementation: every registered mlp-<layout>
            mlp = sorted(t[len("mlp-"):] for t in trainer_names() if t.startswith("mlp-"))
            text = text.replace(". ", f" (--model mlp: auto, {', '.join(mlp)} selects the implementation; auto: "
                                      "diagonal up to 16 features, dvr above). ", 1)
        action = p.add_argument(f"--{name.replace('_', '-')}", default=None, metavar=name.upper(), help=text)
        action.trainer_option = name  # cli/config.py checks --config values of these with the fields' kinds


def job_options(args, n_features: int, backend: str) -> tuple[str, dict, dict]:
    """(refresh, trainer config, job options) of `fit`/`encrypt`/`demo` from the command line.

    The trainer options are checked by the config of the trainer this run resolves to
    (models/configs.py ``user_config``: an option that trainer does not have is refused, naming the
    trainers that have it); their checked values replace the typed strings in ``args``, so the model
    file records what ran (cli/config.py effective_config)."""
    from hetrain.models import configs
    from hetrain.protocol.client_jobs import resolve_refresh

    given = {name: getattr(args, name, None) for name in configs.user_options()}
    given = {k: v for k, v in given.items() if v is not None}
    # what resolve_refresh reads: whether full-batch mlr's iterations are given, mlp's layout
    probe = ({"iterations": 1} if args.model == "mlr" and "iterations" in given else
             {"layout": given["layout"]} if args.model == "mlp" and "layout" in given else {})
    refresh = resolve_refresh(args.refresh, args.model, probe, backend, n_features)
    trainer = configs.trainer_for(args.model, refresh, given.get("layout"), n_features)
    user = configs.user_config(trainer, given, style="cli")
    for key, value in user.values.items():
        setattr(args, key, value)
    if trainer != "mlr-minibatch":
        for flag in ("time_limit", "whitening"):
            value = getattr(args, flag, None)
            if value is not None and value != "auto":
                raise HetrainUserError(f"--{flag.replace('_', '-')} applies to --model mlr with refresh (mini-batches); "
                                       f"this run is {args.model} with --refresh {refresh}")
        return refresh, user.config, {"scale": args.scale, "seed": args.seed, **user.job}
    config = dict(user.config)
    if args.time_limit is not None and not args.time_limit > 0:
        raise HetrainUserError(f"--time-limit must be a positive number of seconds, got {args.time_limit:g}")
    if args.whitening != "auto":
        try:
            config["whitening"] = None if args.whitening == "none" else float(args.whitening)
        except ValueError:
            raise HetrainUserError(f"--whitening must be auto, none or a positive shrinkage such as 1.0, "
                                   f"got {args.whitening!r}") from None
        if config["whitening"] is not None and not config["whitening"] > 0:
            raise HetrainUserError(f"--whitening shrinkage must be positive, got {args.whitening}")
    options = {"scale": args.scale, "seed": args.seed, "validation_fraction": args.validation_fraction,
               "max_epochs": None, "time_limit": args.time_limit, **user.job}
    return refresh, config, options


def run(args) -> int:
    from hetrain.protocol.steps import fit

    from .config import effective_config

    out = check_writable(args.out, "model file")  # before any key is made; save falls back if it fails later
    table = table_from_args(args)
    X, y = table.X, table.y
    print(f"data: {describe(table)}")
    refresh, config, options = job_options(args, X.shape[1], args.backend)
    for given, option in ((args.channel_timeout, "--channel-timeout"), (args.workers, "--workers")):
        if given is not None and args.server is not None:
            raise HetrainUserError(f"{option} applies to the server process on this machine; with --server the "
                                   f"service's operator sets it: leave {option} out")
    print(f"refresh: {refresh}")
    from hetrain.protocol.progress import RunProgress

    with RunProgress(quiet=args.quiet) as display:
        result = fit(X, y, args.model, config, refresh=refresh, backend=args.backend, preset=args.preset,
                     keys=args.keys, workdir=args.keep_job, server=args.server, progress=display,
                     api_key=args.api_key, server_ca=args.server_ca, log=display.write,
                     force_unverified=args.force_unverified, channel_timeout=args.channel_timeout,
                     workers=args.workers,
                     force_insecure=args.force_insecure, settings={"fit": effective_config(args)},
                     before_keys=before_keys(args, display.write, local_server=args.server is None), **options)
    result.model.save(out)
    return report(result, X, y, out)


def report(result, X, y, out) -> int:
    """The lines every path prints after a fit (and `decrypt`); the exit status (3: partial)."""
    from hetrain.protocol.report import format_summary

    stats = result.stats
    for line in format_summary(stats):
        print(line)
    r = stats["refresh"]
    if r.get("mode", "none") != "none" or r.get("round_trips"):
        print(f"refresh {r.get('mode')}: round trips {r.get('round_trips', 0)} (refreshes {r.get('refreshes', 0)}, "
              f"evaluations {r.get('evaluations', 0)}), bytes to client {r.get('bytes_to_client', 0) / 2**20:.2f} MiB, "
              f"to server {r.get('bytes_to_server', 0) / 2**20:.2f} MiB"
              + (f", client share {r['client_seconds']:.2f} s" if r.get("client_seconds") is not None else "")
              + f"; bootstrapped ciphertexts {r.get('bootstraps', 0)}")
    if stats.get("steps") is not None:
        print(f"steps {stats['steps']} ({stats['stop_reason']})")
    if X is not None:
        print(f"train accuracy (decrypted model): {result.model.accuracy(X, y):.4f}")
    print(f"model written to {out}")
    if stats.get("partial"):
        print(f"PARTIAL: {stats['stop_reason']}; the model written is the best on validation so far "
              f"(exit status {PARTIAL_EXIT})")
    for line in explain(stats):
        print(line)
    if stats.get("server_train_s") is not None:
        print(f"server_train_s={stats['server_train_s']:.3f}")
    print(f"twin_max_abs_diff={stats['twin_max_abs_diff']:.3e}")
    if not stats.get("verified", True):
        print(f"UNVERIFIED: the decrypted model differs from its plaintext twin beyond CKKS noise (the server's "
              f"result could not be verified); written only because of --force-unverified (exit status "
              f"{UNVERIFIED_EXIT})")
        return UNVERIFIED_EXIT
    return PARTIAL_EXIT if stats.get("partial") else 0


def explain(stats: dict) -> list[str]:
    """The run's key figures in plain words: what the twin check, the depth and the backend mean."""
    lines = []
    diff = stats.get("twin_max_abs_diff")
    if stats.get("verified") is False:
        lines.append(f"check: the decrypted model differs from the same computation done in plaintext (the twin) "
                     f"by {diff:.1e}: NOT verified")
    elif diff is not None and diff == diff:  # not NaN
        bound = stats.get("twin_bound")
        within = f" (an honest run of this job stays within {bound:.1e})" if bound else ""
        lines.append(f"check: the decrypted model matches the same computation done in plaintext (the twin) to "
                     f"{diff:.1e}{within}: encryption did not change the result beyond CKKS noise")
    elif stats.get("partial"):
        lines.append("check: training stopped before the end; the released epoch was checked against the twin "
                     "when it was decrypted")
    if stats.get("levels_needed") is not None:
        lines.append(f"depth: the training used {stats['levels_needed']} multiplicative levels; the parameters "
                     f"{stats['params']} offer {stats['levels_available']} per modulus chain"
                     + (" (the state was refreshed in between)" if stats["levels_needed"] > stats["levels_available"]
                        else ""))
    if is_insecure(stats.get("backend")):
        lines.append(f"note: the {stats['backend']} backend encrypts nothing (INSECURE): use it for tests and planning only")
    return lines


class StepBar:
    """A tqdm bar following the server's iterations (``on_step``), with ``write`` for log lines that
    do not break it."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __enter__(self):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = tqdm(desc="train", unit="step", disable=self.quiet)
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def on_step(self, done: int, total: int) -> None:
        self.bar.total, self.bar.n = total, done
        self.bar.refresh()

    def write(self, line: str) -> None:
        self._tqdm.write(line)
