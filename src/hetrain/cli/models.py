"""`hetrain models`: what can be asked for: trainers, packings, CKKS presets and backends, one line each.

Packings and backends come from their registries (circuits/packings.py, ckks/registry.py). The option
that picks a packing keeps its name, ``--layout``, for compatibility."""
from __future__ import annotations

import argparse

AUTO_PACKING = "mlp: diagonal up to 16 features, dvr above; mlr: blocked"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args) -> int:
    from hetrain import ckks
    from hetrain.models.base import get_trainer, registry

    get_trainer("mlr")  # imports the catalog: every built-in trainer registers
    print("trainers (--model; `mlr` is mlr-minibatch with refresh and mlr without, `mlp` resolves by --layout):")
    for name in sorted(registry):
        cls = registry[name]
        caps = ", ".join(sorted(cls.capabilities)) or "none"
        text = cls.summary or next(iter((cls.__doc__ or "").strip().splitlines()), "")
        print(f"  {name:14s} {text} [capabilities: {caps}]")
    from hetrain.circuits.packings import packing_entry, packing_names

    print("packings (--layout; for mlp it picks the trainer, for mlr with --refresh none its packing):")
    print(f"  {'auto':16s} {AUTO_PACKING}")
    for name in packing_names():
        e = packing_entry(name)
        print(f"  {name:16s} {e.summary} [{e.trainer}]" if e.option else
              f"  {name:16s} {e.summary} [{e.trainer}; not a --layout value]")
    print("presets (--preset; `auto`: the smallest that fits):")
    for name, p in {**ckks.PRESETS, **ckks.TEST_PRESETS}.items():
        secure = "128-bit secure" if p.is_128_bit_secure() else "INSECURE test ring: below 128-bit (--force-insecure)"
        print(f"  {name:14s} N={p.poly_modulus_degree}, {p.levels} levels, scale 2^{p.scale_bits}, {p.slots} slots, "
              f"{secure}")
    print("backends (--backend):")
    for b in ckks.registry.backends():
        present = "" if b.installed() else f" [not installed: {b.install_hint}]"
        print(f"  {b.name:14s} {b.summary}{present}")
    return 0
