"""`hetrain submit`: hand a job bundle to a `hetrain serve` training service (no secret key crosses)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job", required=True, metavar="JOB", help="job bundle directory (hetrain encrypt)")
    p.add_argument("--server", required=True, metavar="URL", help="the service, e.g. http://127.0.0.1:8750")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from hetrain.protocol.steps import submit

    remote = submit(args.job, args.server, progress=not args.quiet)
    print(f"submitted: the service's job id is {remote}")
    print(f"while it trains, the data owner answers its refresh requests (if it asks): hetrain refresh --keys KEYS "
          f"--job {args.job} --server {args.server} --remote-job {remote}")
    print(f"then: hetrain decrypt --keys KEYS --job {args.job} --server {args.server} --remote-job {remote} "
          "--out MODEL.json")
    return 0
