"""`hetrain train`: the training server's side: train a job bundle on ciphertexts (no secret key)."""
from __future__ import annotations

import argparse

from hetrain.protocol.refresh_channel import DEFAULT_TIMEOUT_S


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job", required=True, metavar="JOB", help="job bundle directory (hetrain encrypt)")
    p.add_argument("--resume", action="store_true", help="continue from the job's checkpoint (JOB/state.ckpt) after "
                                                         "a kill or a failure")
    p.add_argument("--channel-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="refresh client: how long the server waits for the data owner (`hetrain refresh`) to "
                        f"attach or answer before it gives up (default {DEFAULT_TIMEOUT_S:g}); the job can then "
                        "be resumed with --resume")
    p.add_argument("--trainer-module", action="append", default=[], metavar="MODULE",
                   help="extra module the server imports so that its trainer registers (a trainer outside hetrain; "
                        "chosen by the server's operator, never by the job)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes for the training's independent tasks (default: every core)")


def run(args) -> int:
    from hetrain.errors import HetrainUserError
    from hetrain.protocol.steps import train

    from .fit import StepBar

    if args.workers is not None and args.workers < 1:
        raise HetrainUserError(f"--workers must be at least 1, got {args.workers} (e.g. --workers 2)")
    with StepBar(args.quiet) as bar:
        stats = train(args.job, resume=args.resume, progress=False, channel_timeout=args.channel_timeout,
                      trainer_modules=args.trainer_module, workers=args.workers,
                      on_progress=lambda done, total, message="": bar.on_step(done, total))
    run_stats = stats.get("trainer") or {}
    resumed = f", resumed from {run_stats['resumed_from']}" if run_stats.get("resumed_from") else ""
    print(f"trained in {stats['server_train_s']:.2f} s{resumed}; encrypted result: {args.job}/outputs.bin")
    print(f"next, the data owner: hetrain decrypt --keys KEYS --job {args.job} --out MODEL.json")
    return 0
