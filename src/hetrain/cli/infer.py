"""`hetrain infer`: score encrypted queries (server side: never holds a secret key)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queries", required=True, metavar="QJOB", help="query bundle (hetrain encrypt-queries); the "
                                                                   "encrypted scores go to QJOB/outputs.bin")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="the model owner's plaintext model file (case b; default: none, one of --model or --job is required)")
    which.add_argument("--job", metavar="JOB", help="a trained job whose outputs.bin is the encrypted model (case a; default: none, one of --model or --job is required)")
    p.add_argument("--noise-std", type=float, default=0.0,
                   help="add fresh encrypted Gaussian noise of this standard deviation to every score (limits what "
                        "the decrypted scores reveal of the model; keep it well below the gap between class scores)")


def run(args) -> int:
    from hetrain.errors import HetrainUserError
    from hetrain.protocol.inference import infer

    if not args.noise_std >= 0:
        raise HetrainUserError(f"--noise-std must be >= 0, got {args.noise_std}")
    stats = infer(args.queries, model=args.model, job=args.job, noise_std=args.noise_std)
    print(f"{stats['n_queries']} queries scored in {stats['infer_s']:.2f} s ({stats['mode']}): "
          f"{stats['n_output_ciphertexts']} encrypted score ciphertext(s) in {args.queries}/outputs.bin")
    if stats.get("scores"):
        print("note: the mini-batch model scored with the server's final encrypted state, not the best validated "
              "epoch that `hetrain decrypt` releases")
    return 0
