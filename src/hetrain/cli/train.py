"""`hetrain train`: the training server's side: train a job bundle on ciphertexts (no secret key)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from hetrain.protocol.refresh_channel import DEFAULT_TIMEOUT_S

    from .fit import add_channel_timeout_argument

    p.add_argument("--job", required=True, metavar="JOB", help="job bundle directory (hetrain encrypt)")
    p.add_argument("--resume", action="store_true", help="continue from the job's checkpoint (JOB/state.ckpt) after "
                                                         "a kill or a failure")
    add_channel_timeout_argument(p, default=DEFAULT_TIMEOUT_S)
    p.add_argument("--trainer-module", action="append", default=[], metavar="MODULE",
                   help="extra module the server imports so that its trainer registers (a trainer outside hetrain; "
                        "chosen by the server's operator, never by the job; may be repeated; default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes for the training's independent tasks (default: every core; with "
                        "--executor ray: the Ray cluster's CPUs)")
    p.add_argument("--executor", choices=("process", "ray"), default="process",
                   help="where the workers run: processes of this machine, or actors of a Ray cluster (needs "
                        "pip install 'hetrain[ray]'; default process)")
    p.add_argument("--ray-address", default=None, metavar="auto|local|HOST:PORT",
                   help="with --executor ray: the cluster to run on (auto: the one `ray start` set up on this "
                        "machine; local: start a Ray of this machine's CPUs for this job; HOST:PORT: a cluster's "
                        "head; default auto)")


def run(args) -> int:
    from hetrain.errors import HetrainUserError
    from hetrain.protocol.steps import train

    from .fit import StepBar

    if args.workers is not None and args.workers < 1:
        raise HetrainUserError(f"--workers must be at least 1, got {args.workers} (e.g. --workers 2)")
    if args.ray_address is not None and args.executor != "ray":
        raise HetrainUserError(f"--ray-address {args.ray_address} applies to the Ray executor: add --executor ray")
    if args.ray_address is not None and not args.ray_address.strip():
        raise HetrainUserError("--ray-address is empty: give auto, local or HOST:PORT (e.g. --ray-address local)")
    if args.executor == "ray":  # here, before the server starts: its error would come back as the server's
        from hetrain.ckks.ray_executor import import_ray

        import_ray()
    with StepBar(args.quiet) as bar:
        stats = train(args.job, resume=args.resume, progress=False, channel_timeout=args.channel_timeout,
                      trainer_modules=args.trainer_module, workers=args.workers,
                      executor=args.executor if args.executor != "process" else None, ray_address=args.ray_address,
                      on_progress=lambda done, total, message="": bar.on_step(done, total))
    run_stats = stats.get("trainer") or {}
    resumed = f", resumed from {run_stats['resumed_from']}" if run_stats.get("resumed_from") else ""
    print(f"trained in {stats['server_train_s']:.2f} s{resumed}; encrypted result: {args.job}/outputs.bin")
    print(f"next, the data owner: hetrain decrypt --keys KEYS --job {args.job} --out MODEL.json")
    return 0
