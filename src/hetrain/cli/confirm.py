"""The estimate printed before keys are made, and the confirmation of a big run (`fit`, `encrypt`,
`demo`): ``--yes`` and ``--max-memory-gb`` (protocol/estimate.py)."""
from __future__ import annotations

import argparse
import sys

from hetrain.protocol.estimate import DEFAULT_MAX_MEMORY_GB


def add_confirm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yes", action="store_true",
                   help="run even when the estimate before keygen is above --max-memory-gb (no question asked)")
    p.add_argument("--max-memory-gb", type=float, default=DEFAULT_MAX_MEMORY_GB, metavar="GB",
                   help=f"estimated peak memory above which the run asks for confirmation on a terminal, or "
                        f"refuses elsewhere unless --yes (default {DEFAULT_MAX_MEMORY_GB:g})")


def before_keys(args, log, *, local_server: bool = True):
    """The ``before_keys(job)`` hook of steps.fit/encrypt: print the estimate, then refuse or ask
    (estimate.check_memory) when it is above ``--max-memory-gb``."""
    from hetrain.protocol.estimate import check_memory, estimate_job

    def hook(job) -> None:
        est = estimate_job(job)
        log(est.line())
        check_memory(est, limit_gb=args.max_memory_gb, yes=args.yes, local_server=local_server,
                     interactive=sys.stdin.isatty() and sys.stderr.isatty(), ask=_ask)
    return hook


def _ask(prompt: str) -> str:
    print(prompt, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline()
