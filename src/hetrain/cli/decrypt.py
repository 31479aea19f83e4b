"""`hetrain decrypt`: decrypt a trained job, check it against the plaintext twin and write the model."""
from __future__ import annotations

import argparse

from .fit import UNVERIFIED_EXIT, add_force_unverified_argument
from .refresh import add_remote_arguments

__all__ = ["UNVERIFIED_EXIT", "add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", required=True, metavar="KEYS", help="the data owner's key directory")
    p.add_argument("--job", required=True, metavar="JOB", help="the trained job bundle (with the server's outputs.bin)")
    p.add_argument("--out", required=True, help="model file to write (JSON)")
    add_force_unverified_argument(p)
    add_remote_arguments(p)


def run(args) -> int:
    from hetrain.outputs import check_writable
    from hetrain.protocol.keys import KeyDir
    from hetrain.protocol.steps import decrypt

    from .config import effective_config
    from .fit import report

    out = check_writable(args.out, "model file")
    keys = KeyDir.open(args.keys)
    result = decrypt(keys, args.job, server=args.server, remote_job=args.remote_job, progress=True,
                     server_ca=args.server_ca, force_unverified=args.force_unverified,
                     settings={"decrypt": effective_config(args)})
    result.model.save(out)
    return report(result, None, None, out)
