"""`hetrain refresh`: the data owner answers a running job's refresh requests (and may come and go)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", required=True, metavar="KEYS", help="the data owner's key directory")
    p.add_argument("--job", required=True, metavar="JOB", help="the job bundle directory the server trains "
                                                               "(`hetrain train --job JOB` on this machine), or "
                                                               "the one given to `hetrain submit`")
    add_remote_arguments(p)


def add_remote_arguments(p: argparse.ArgumentParser) -> None:
    """--server/--remote-job/--server-ca: the job runs on a `hetrain serve` service (`hetrain submit`)."""
    p.add_argument("--server", metavar="URL", help="the job runs on this `hetrain serve` service (its id and token: "
                                                   "JOB/remote.json, written by `hetrain submit`; default: "
                                                   "the job runs on this machine)")
    p.add_argument("--remote-job", metavar="ID", help="with --server: the service's id of the job, when JOB/remote.json "
                                                      "does not name it (its token then from HETRAIN_JOB_TOKEN; "
                                                      "default: the id in JOB/remote.json)")
    add_server_ca_argument(p)


def add_server_ca_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server-ca", metavar="FILE", help="PEM certificate of the CA that signed the service's TLS "
                                                       "certificate (a private CA; default HETRAIN_SERVER_CA, else "
                                                       "the system's CAs)")


def run(args) -> int:
    from hetrain.protocol.keys import KeyDir
    from hetrain.protocol.steps import attach

    stats = attach(KeyDir.open(args.keys), args.job, log=print, server=args.server, remote_job=args.remote_job,
                   server_ca=args.server_ca)
    print(f"the server is done: {stats.round_trips} round trips ({stats.refreshes} refreshes, {stats.evaluations} "
          f"evaluations), client share {stats.client_seconds:.2f} s")
    return 0
