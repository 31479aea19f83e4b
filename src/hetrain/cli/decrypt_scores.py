"""`hetrain decrypt-scores`: decrypt the scores of encrypted queries and write the predictions."""
from __future__ import annotations

import argparse

from .predict import write_predictions
from .refresh import add_server_ca_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", required=True, metavar="KEYS", help="the key directory that encrypted the queries")
    p.add_argument("--queries", required=True, metavar="QJOB", help="the query bundle, scored (with outputs.bin)")
    p.add_argument("--out", required=True, help="predictions CSV to write (header: label[,p_<class>...])")
    p.add_argument("--proba", action="store_true", help="also write each class's probability (softmax of the scores)")
    p.add_argument("--server", metavar="URL", help="first fetch the scores from this `hetrain serve` service "
                                                   "(QJOB/remote.json, written by `hetrain encrypt-queries --server`; default: the scores are "
                                                   "already in QJOB)")
    p.add_argument("--remote-job", metavar="ID", help="with --server: the service's id of the inference job, when "
                                                      "QJOB/remote.json does not name it (its token from HETRAIN_JOB_TOKEN; default: "
                                                      "QJOB/remote.json's)")
    add_server_ca_argument(p)


def run(args) -> int:
    from hetrain.errors import HetrainUserError
    from hetrain.outputs import check_writable
    from hetrain.protocol.inference import decrypt_scores
    from hetrain.protocol.keys import KeyDir

    if args.server is None and args.remote_job:
        raise HetrainUserError("--remote-job goes with --server URL")
    out = check_writable(args.out, "predictions")
    s = decrypt_scores(KeyDir.open(args.keys), args.queries, server=args.server, remote_job=args.remote_job,
                       server_ca=args.server_ca)
    write_predictions(out, s.predict(), s.classes, s.proba() if args.proba else None)
    check = (f"; max |score - plaintext twin| = {s.twin_max_abs_diff:.2e}" if s.twin_max_abs_diff is not None
             else "")
    print(f"{s.scores.shape[0]} predictions written to {out}{check}")
    if s.stats.get("final_state_note"):
        print(s.stats["final_state_note"])
    return 0
