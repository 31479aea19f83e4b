"""`hetrain keygen`: the data owner's secret key, in a directory of its own (see hetrain.protocol.keys)."""
from __future__ import annotations

import argparse

from hetrain import ckks

from .insecure import add_force_insecure_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="KEYS", help="new key directory (mode 0700; never overwritten)")
    p.add_argument("--preset", default="n16384",
                   help=f"CKKS parameters of the key: one of {', '.join(ckks.PRESETS)} (default n16384: mlr and "
                        "one-hidden-layer networks; two hidden layers need n32768)")
    p.add_argument("--backend", default="seal", choices=ckks.BACKENDS, help=ckks.registry.backend_help())
    p.add_argument("--seed", type=int, help="seed of the simulation backend (sim only; default: none, fresh "
                                            "randomness)")
    add_force_insecure_argument(p)


def run(args) -> int:
    from hetrain.protocol.steps import keygen

    keys = keygen(args.out, backend=args.backend, preset=args.preset, seed=args.seed,
                  force_insecure=args.force_insecure)
    print(f"key {keys.key_id}: {keys.backend} {keys.params.name} ({keys.params.describe()})")
    if keys.force_insecure:
        print("INSECURE: --force-insecure: these keys may be below 128-bit security (tests only, never real data)")
    print(f"secret key: {keys.path / 'secret.key'} (mode 0600: never copy it to the training server)")
    print(f"public record: {keys.path / 'key.json'}, public keys: {keys.path / 'public.bin'}")
    print(f"next: hetrain encrypt --keys {keys.path} --data TRAIN.csv --out JOB/")
    return 0
