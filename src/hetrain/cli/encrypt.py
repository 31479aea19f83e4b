"""`hetrain encrypt`: preprocess, plan and encrypt training data into a job bundle (data owner's side)."""
from __future__ import annotations

import argparse

from hetrain.data import load_dataset

from .fit import add_training_arguments, job_options
from .insecure import add_force_insecure_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", required=True, metavar="KEYS", help="the data owner's key directory (hetrain keygen)")
    p.add_argument("--data", required=True, help="training data: CSV without header (label in column 0) or .npz (X, y)")
    p.add_argument("--out", required=True, metavar="JOB", help="job bundle directory to write (public material only: "
                                                               "give it to the training server)")
    p.add_argument("--model", default="mlr", help="mlr, mlp (resolved by --layout), or a registered trainer name")
    add_training_arguments(p, keys=True)
    add_force_insecure_argument(p)


def run(args) -> int:
    from hetrain.protocol.keys import KeyDir
    from hetrain.protocol.steps import encrypt

    keys = KeyDir.open(args.keys)
    keys.check_forced(args.force_insecure)
    X, y = load_dataset(args.data)
    print(f"data: {X.shape[0]} samples, {X.shape[1]} features, {len(set(y.tolist()))} classes from {args.data}")
    refresh, config, options = job_options(args, X.shape[1], keys.backend)
    job, _ = encrypt(keys, X, y, args.out, model=args.model, config=config, refresh=refresh,
                     progress=not args.quiet, log=print, **options)
    size = sum(v for k, v in job.upload.items() if isinstance(v, int))
    print(f"job {job.job_id} ({job.trainer.name}, refresh {job.refresh}) written to {args.out}: "
          f"{size / 2**20:.1f} MiB, no secret key")
    print(f"next, on the training server: hetrain train --job {args.out}")
    if job.wants_channel:
        print(f"while it trains, the data owner answers its refresh requests: hetrain refresh --keys {args.keys} "
              f"--job {args.out}")
    print(f"then: hetrain decrypt --keys {args.keys} --job {args.out} --out MODEL.json")
    return 0
