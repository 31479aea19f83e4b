"""`hetrain encrypt`: preprocess, plan and encrypt training data into a job bundle (data owner's side)."""
from __future__ import annotations

import argparse

from .confirm import add_confirm_arguments, before_keys
from .fit import DATA_HELP, add_model_argument, add_training_arguments, job_options
from .inputs import add_input_arguments, describe, table_from_args
from .insecure import add_force_insecure_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", required=True, metavar="KEYS", help="the data owner's key directory (hetrain keygen)")
    p.add_argument("--data", required=True, help=DATA_HELP)
    add_input_arguments(p)
    p.add_argument("--out", required=True, metavar="JOB", help="job bundle directory to write (public material only: "
                                                               "give it to the training server)")
    add_model_argument(p)
    add_training_arguments(p, keys=True)
    add_confirm_arguments(p)
    add_force_insecure_argument(p)


def run(args) -> int:
    from hetrain.protocol.keys import KeyDir
    from hetrain.protocol.steps import encrypt

    from .config import effective_config

    keys = KeyDir.open(args.keys)
    keys.check_forced(args.force_insecure)
    table = table_from_args(args)
    X, y = table.X, table.y
    print(f"data: {describe(table)}")
    refresh, config, options = job_options(args, X.shape[1], keys.backend)
    job, _ = encrypt(keys, X, y, args.out, model=args.model, config=config, refresh=refresh,
                     progress=not args.quiet, log=print, before_keys=before_keys(args, print, local_server=False),
                     settings={"encrypt": effective_config(args)}, **options)
    size = sum(v for k, v in job.upload.items() if isinstance(v, int))
    print(f"job {job.job_id} ({job.trainer.name}, refresh {job.refresh}) written to {args.out}: "
          f"{size / 2**20:.1f} MiB, no secret key")
    print(f"next, on the training server: hetrain train --job {args.out}")
    if job.wants_channel:
        print(f"while it trains, the data owner answers its refresh requests: hetrain refresh --keys {args.keys} "
              f"--job {args.out}")
    print(f"then: hetrain decrypt --keys {args.keys} --job {args.out} --out MODEL.json")
    return 0
