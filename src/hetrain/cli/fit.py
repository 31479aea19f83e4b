"""`hetrain fit`: train a classifier on encrypted data (client here, server in a separate process)."""
from __future__ import annotations

import argparse

from hetrain import ckks
from hetrain.data import load_dataset
from hetrain.errors import HetrainUserError
from hetrain.models.minibatch_plan import BATCH_SIZES, DEFAULT_MAX_EPOCHS, DEFAULT_PATIENCE
from hetrain.outputs import check_writable

PARTIAL_EXIT = 3  # a model was written, but training stopped before it was done (time limit, failure)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="training data: CSV without header (label in column 0) or .npz (X, y)")
    p.add_argument("--model", default="mlr", help="mlr, mlp (resolved by --layout), or a registered trainer name")
    p.add_argument("--out", required=True, help="model file to write (JSON; written only when training succeeds)")
    add_training_arguments(p)
    p.add_argument("--server", metavar="URL", help="train on a `hetrain serve` service (e.g. http://127.0.0.1:8750) "
                                                   "instead of a local server process; decryption stays here")
    # training past the depth limit (hetrain.protocol.refresh): the server process asks this
    # process (the client) over a local socket to re-encrypt its state, or bootstraps
    p.add_argument("--refresh", default="auto", choices=("auto", "none", "client", "bootstrap"),
                   help="auto (default): client, or bootstrap on a backend that can, or none with --server; "
                        "none: one modulus chain, no interaction; client: the client re-encrypts the state between "
                        "iterations; bootstrap: the server bootstraps (desilo backend). mlr: mini-batches and epochs "
                        "until validation stops improving; mlp: --iterations beyond one chain")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"mlr with refresh: the most passes over the training rows (default {DEFAULT_MAX_EPOCHS}); "
                        "the planner and early stopping usually end sooner")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="mlr with refresh: stop at the first epoch end past this wall time and release the best "
                        "model so far (exit status 3: partial)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="mlr with refresh: rows per mini-batch (default: planned among "
                        f"{', '.join(map(str, BATCH_SIZES))})")
    p.add_argument("--patience", type=int, default=None,
                   help=f"mlr with refresh: epochs without validation progress before stopping (default "
                        f"{DEFAULT_PATIENCE}; 0: off)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="mlr with refresh: per-step shrink of the non-bias weights (default: planned)")
    p.add_argument("--whitening", default="auto",
                   help="mlr with refresh: auto (planned), none (standardised features as they are) or a shrinkage "
                        "such as 1.0 (features whitened by the client, (XᵀX/n + shrinkage·I)^-1/2)")
    p.add_argument("--validation-fraction", type=float, default=0.2,
                   help="mlr with refresh: rows the client holds out (stratified) for validation (default 0.2)")


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `fit` and `demo`."""
    p.add_argument("--iterations", type=int, help="training iterations (default: the trainer's)")
    p.add_argument("--preset", default="auto", help=f"CKKS parameters: auto (smallest that fits) or one of {', '.join(ckks.PRESETS)}")
    p.add_argument("--backend", default="seal", choices=ckks.BACKENDS, help="seal (real encryption) or sim (INSECURE, for tests)")
    p.add_argument("--learning-rate", type=float, help="step size (default: the trainer's)")
    p.add_argument("--sigmoid", help="sigmoid approximation: 'published' or 'deg<D>:<B>' such as deg5:12")
    p.add_argument("--hidden", help="hidden layer sizes for mlp, comma separated, e.g. 32,16")
    p.add_argument("--layout", help="packing: for mlp auto|dvr|diagonal (selects the implementation); for mlr the trainer's layouts")
    p.add_argument("--momentum", help="momentum: none | nesterov (--refresh none), or a heavy-ball β such as 0.9 "
                                      "(mlr with refresh; default: planned)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply standardised features by this (keeps polynomial inputs in range)")
    p.add_argument("--seed", type=int, help="seed for the simulation backend and release noise")
    p.add_argument("--keep-job", metavar="DIR", help="write the job bundle (public keys, ciphertexts) to DIR and keep it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args) -> dict:
    """Trainer config from the options the user gave (unset ones keep the trainer's defaults)."""
    config = {}
    for key in ("iterations", "learning_rate", "sigmoid", "momentum", "layout"):
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    if args.hidden is not None:
        try:
            config["hidden"] = [int(h) for h in args.hidden.split(",") if h.strip()]
        except ValueError:
            raise HetrainUserError(f"--hidden must be comma-separated integers such as 32,16, got {args.hidden!r}") from None
        if not config["hidden"] or min(config["hidden"]) < 1:
            raise HetrainUserError(f"--hidden needs positive sizes, got {args.hidden!r}")
    if args.iterations is not None and args.iterations < 1:
        raise HetrainUserError("--iterations must be at least 1")
    return config


def run(args) -> int:
    from hetrain.protocol import fit
    from hetrain.protocol.report import format_summary

    out = check_writable(args.out, "model file")  # before any key is made; save falls back if it fails later
    X, y = load_dataset(args.data)
    print(f"data: {X.shape[0]} samples, {X.shape[1]} features, {len(set(y.tolist()))} classes from {args.data}")
    if args.refresh == "auto":
        args.refresh = _auto_refresh(args, X.shape[1])
    if args.refresh != "none" and args.server:
        raise HetrainUserError("--server cannot be combined with --refresh yet (the refresh channel is a local "
                               "socket between the client and its server process)")
    if args.refresh != "none" and args.model == "mlr":
        return _run_mlr_with_refresh(args, X, y, out)
    if args.whitening != "auto":
        raise HetrainUserError(f"--whitening applies to --model mlr with refresh; this run is {args.model} with "
                               f"--refresh {args.refresh}")
    for flag in ("epochs", "time_limit", "batch_size", "patience", "weight_decay"):
        if getattr(args, flag) is not None:
            raise HetrainUserError(f"--{flag.replace('_', '-')} applies to --model mlr with refresh (mini-batches); "
                                   f"this run is {args.model} with --refresh {args.refresh}")
    result = fit(X, y, args.model, config_from_args(args), preset=args.preset, backend=args.backend,
                 scale=args.scale, seed=args.seed, progress=not args.quiet, workdir=args.keep_job, log=print,
                 server=args.server, refresh=args.refresh)
    result.model.save(out)
    for line in format_summary(result.stats):
        print(line)
    r = result.stats["refresh"]
    if r["mode"] != "none":
        print(f"refresh {r['mode']}: round trips {r['round_trips']} (refreshes {r['refreshes']}), bytes to client "
              f"{r['bytes_to_client'] / 2**20:.2f} MiB, to server {r['bytes_to_server'] / 2**20:.2f} MiB, client share "
              f"{r['client_seconds']:.2f} s; bootstrapped ciphertexts {r['bootstraps']}")
    print(f"train accuracy (decrypted model): {result.model.accuracy(X, y):.4f}")
    print(f"model written to {out}")
    print(f"server_train_s={result.stats['server_train_s']:.3f}")
    print(f"twin_max_abs_diff={result.twin_max_abs_diff:.3e}")
    return 0


def _auto_refresh(args, n_features: int) -> str:
    """--refresh auto: bootstrap on a backend that bootstraps, else client refresh for trainers that
    can refresh (mlr, mlp); none with --server (no channel yet) or for trainers that cannot."""
    from hetrain.models.base import server_hooks
    from hetrain.protocol.pipeline import make_trainer
    from hetrain.protocol.refresh import default_refresh

    if args.server:
        print("refresh: none (--server cannot refresh yet: training stays within one modulus chain)")
        return "none"
    if args.model == "mlr" and args.iterations is not None:
        print(f"refresh: none (--iterations {args.iterations}: full-batch iterations in one modulus chain; "
              "without it, mlr trains in refreshed mini-batch epochs)")
        return "none"
    if args.model != "mlr" and "refresh" not in server_hooks(make_trainer(args.model, config_from_args(args),
                                                                           n_features)):
        return "none"
    return default_refresh(args.backend)


def _run_mlr_with_refresh(args, X, y, out) -> int:
    """--model mlr with refresh: the client plans the run on its plaintext (models/minibatch_plan.py),
    then the mini-batch trainer runs in the server process, its state refreshed over the channel
    (hetrain.protocol.refresh) until validation stops improving, the epochs or the time run out."""
    from tqdm import tqdm

    from hetrain.protocol.refresh import fit_long_model

    if args.iterations is not None:
        raise HetrainUserError("--iterations counts full-batch iterations of --refresh none; with refresh, mlr "
                               "trains in mini-batch epochs: use --epochs N (or --refresh none --iterations N)")
    config = config_from_args(args)
    for key in ("batch_size", "patience", "weight_decay"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.whitening != "auto":
        try:
            config["whitening"] = None if args.whitening == "none" else float(args.whitening)
        except ValueError:
            raise HetrainUserError(f"--whitening must be auto, none or a positive shrinkage such as 1.0, "
                                   f"got {args.whitening!r}") from None
        if config["whitening"] is not None and not config["whitening"] > 0:
            raise HetrainUserError(f"--whitening shrinkage must be positive, got {args.whitening}")
    with tqdm(desc="train", unit="step", disable=args.quiet) as bar:
        def on_step(done, total):
            bar.total, bar.n = total, done
            bar.refresh()

        model, stats = fit_long_model(X, y, args.refresh, config, backend=args.backend, preset=args.preset,
                                      validation_fraction=args.validation_fraction, seed=args.seed,
                                      workdir=args.keep_job, on_step=on_step, max_epochs=args.epochs,
                                      time_limit=args.time_limit, log=tqdm.write)
    model.save(out)
    if "steps" in stats:
        print(f"steps {stats['steps']} ({stats['stop_reason']}); round trips {stats['round_trips']} "
              f"(refreshes {stats['refreshes']}, evaluations {stats['evaluations']}), bytes to client "
              f"{stats['bytes_to_client'] / 2**20:.2f} MiB, to server {stats['bytes_to_server'] / 2**20:.2f} MiB, "
              f"client share {stats['client_refresh_s']:.2f} s; bootstrapped ciphertexts {stats['bootstraps']}; "
              f"server training {stats['train_s']:.1f} s")
    print(f"train accuracy (decrypted model): {model.accuracy(X, y):.4f}")
    print(f"model written to {out}")
    if stats["partial"]:
        print(f"PARTIAL: {stats['stop_reason']}; the model written is the best on validation so far "
              f"(exit status {PARTIAL_EXIT})")
    print(f"twin_max_abs_diff={stats['twin_max_abs_diff']:.3e}")
    return PARTIAL_EXIT if stats["partial"] else 0
