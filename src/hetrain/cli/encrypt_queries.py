"""`hetrain encrypt-queries`: encrypt rows to be scored, for a published model spec (case b) or for
the encrypted model the server kept from training (case a, --job)."""
from __future__ import annotations

import argparse
import json

from .predict import _read_queries


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", required=True, metavar="KEYS", help="the query owner's key directory (hetrain keygen)")
    p.add_argument("--data", required=True, help="rows to score: CSV without header (features only) or .npz (X)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model-spec", metavar="SPEC", help="the spec a model owner published (hetrain model-spec)")
    which.add_argument("--job", metavar="JOB", help="a job trained under KEYS: the server scores with its encrypted model")
    p.add_argument("--out", required=True, metavar="QJOB", help="query bundle directory to write (public material only)")


def run(args) -> int:
    from hetrain.errors import HetrainUserError
    from hetrain.protocol.inference import encrypt_queries, encrypt_queries_for_job
    from hetrain.protocol.keys import KeyDir

    keys = KeyDir.open(args.keys)
    if args.model_spec:
        try:
            with open(args.model_spec, "rb") as f:
                spec = json.load(f)
        except (OSError, ValueError) as exc:
            raise HetrainUserError(f"--model-spec {args.model_spec}: not a readable spec file ({exc})") from None
        X = _read_queries(args.data, spec.get("n_features") if isinstance(spec, dict) else None)
        job = encrypt_queries(keys, X, spec, args.out)
        serve = f"hetrain infer --model MODEL.json --queries {args.out}"
    else:
        X = _read_queries(args.data)
        job = encrypt_queries_for_job(keys, X, args.job, args.out)
        serve = f"hetrain infer --job {args.job} --queries {args.out}"
    print(f"{job['n_queries']} queries encrypted ({job['mode']}) into {args.out}: public keys and ciphertexts only")
    print(f"next, the server: {serve}")
    print(f"then: hetrain decrypt-scores --keys {args.keys} --queries {args.out} --out PRED.csv")
    return 0
