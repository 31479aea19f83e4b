"""`hetrain encrypt-queries`: encrypt rows to be scored, for a published model spec (case b) or for
the encrypted model the server kept from training (case a, --job); with --server, also hand them to
a `hetrain serve` service (its id and token: QJOB/remote.json) for `hetrain decrypt-scores --server`."""
from __future__ import annotations

import argparse
import json

from .inputs import add_input_arguments
from .predict import read_features
from .refresh import add_server_ca_argument
from .submit import add_api_key_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", required=True, metavar="KEYS", help="the query owner's key directory (hetrain keygen)")
    p.add_argument("--data", required=True, help="rows to score: CSV (features only), .npz (X) or Parquet")
    add_input_arguments(p, labels=False)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model-spec", metavar="SPEC", help="the spec a model owner published (hetrain model-spec); "
                                                            "with --server and no --job: the service's (GET /v1/models); default: none, "
                                                            "--job or --server names the model")
    which.add_argument("--job", metavar="JOB", help="a job trained under KEYS: the server scores with its encrypted model "
                                                     "(case a; default: none, case b)")
    p.add_argument("--out", required=True, metavar="QJOB", help="query bundle directory to write (public material only)")
    p.add_argument("--server", metavar="URL",
                   help="submit the queries to this `hetrain serve` service: to the model it scores with (case b), "
                        "or with --job to the training job it ran (JOB/remote.json from `hetrain submit`; the "
                        "encrypted model stays there; default: none, `hetrain infer` scores QJOB where it is)")
    p.add_argument("--spec-id", metavar="ID", help="with --server: which of the service's models (default: its only one)")
    p.add_argument("--remote-job", metavar="ID", help="with --server --job: the service's id of the training job, when "
                                                      "JOB/remote.json does not name it (its token from HETRAIN_JOB_TOKEN; "
                                                      "default: JOB/remote.json's)")
    add_api_key_argument(p)
    add_server_ca_argument(p)


def run(args) -> int:
    from hetrain.errors import HetrainUserError
    from hetrain.protocol.inference import encrypt_queries, encrypt_queries_for_job
    from hetrain.protocol.keys import KeyDir

    if not (args.model_spec or args.job or args.server):
        raise HetrainUserError("say which model scores the queries: --model-spec SPEC (a published spec), --job JOB "
                               "(the job's encrypted model), or --server URL (the model a service scores with)")
    if args.server is None and (args.spec_id or args.remote_job):
        raise HetrainUserError(f"{'--spec-id' if args.spec_id else '--remote-job'} goes with --server URL")
    from hetrain.protocol import inference_remote as remote

    keys = KeyDir.open(args.keys)
    if args.job:
        if args.server:  # the encrypted model is on the service: wait for it, the twin needs its stats
            remote.training_stats(args.job, args.server, remote_job=args.remote_job, server_ca=args.server_ca)
        X = read_features(args)
        job = encrypt_queries_for_job(keys, X, args.job, args.out)
        serve = f"hetrain infer --job {args.job} --queries {args.out}"
    else:
        if args.model_spec:
            try:
                with open(args.model_spec, "rb") as f:
                    spec = json.load(f)
            except (OSError, ValueError) as exc:
                raise HetrainUserError(f"--model-spec {args.model_spec}: not a readable spec file ({exc})") from None
        else:
            spec = remote.fetch_spec(args.server, args.spec_id, server_ca=args.server_ca)
        X = read_features(args, spec.get("n_features") if isinstance(spec, dict) else None)
        job = encrypt_queries(keys, X, spec, args.out)
        serve = f"hetrain infer --model MODEL.json --queries {args.out}"
    print(f"{job['n_queries']} queries encrypted ({job['mode']}) into {args.out}: public keys and ciphertexts only")
    if job["mode"] == "encrypted-model" and job.get("scores_final_state"):
        print("note: the mini-batch model scores with the server's final encrypted state, not the best validated "
              "epoch that `hetrain decrypt` releases")
    if args.server:
        r = remote.submit_queries(args.out, args.server, jobdir=args.job, remote_job=args.remote_job,
                                  api_key=args.api_key, server_ca=args.server_ca)
        print(f"submitted to {args.server}: the service's inference job is {r.id} (its id and token: "
              f"{args.out}/remote.json, mode 0600)")
        print(f"then: hetrain decrypt-scores --keys {args.keys} --queries {args.out} --server {args.server} "
              "--out PRED.csv")
        return 0
    print(f"next, the server: {serve}")
    print(f"then: hetrain decrypt-scores --keys {args.keys} --queries {args.out} --out PRED.csv")
    return 0
