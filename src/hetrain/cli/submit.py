"""`hetrain submit`: hand a job bundle to a `hetrain serve` training service (no secret key crosses)."""
from __future__ import annotations

import argparse

from .refresh import add_server_ca_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job", required=True, metavar="JOB", help="job bundle directory (hetrain encrypt)")
    p.add_argument("--server", required=True, metavar="URL", help="the service, e.g. http://127.0.0.1:8750")
    add_api_key_argument(p)
    add_server_ca_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_api_key_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-key", metavar="KEY",
                   help="the service's API key, if it asks for one (better: the environment variable "
                        "HETRAIN_API_KEY, which other users cannot read in the process list; default: "
                        "HETRAIN_API_KEY, else none)")


def run(args) -> int:
    from hetrain.protocol.steps import submit
    from hetrain.protocol.transport import REMOTE

    remote = submit(args.job, args.server, progress=not args.quiet, api_key=args.api_key, server_ca=args.server_ca)
    print(f"submitted: the service's job id is {remote.id}")
    print(f"its id and token (the job's only key: whoever holds it can read or delete the job) are in "
          f"{args.job}/{REMOTE} (mode 0600)")
    print(f"while it trains, the data owner answers its refresh requests (if it asks): hetrain refresh --keys KEYS "
          f"--job {args.job} --server {args.server}")
    print(f"then: hetrain decrypt --keys KEYS --job {args.job} --server {args.server} --out MODEL.json")
    return 0
