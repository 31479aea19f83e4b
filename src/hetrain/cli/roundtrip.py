"""`hetrain roundtrip`: encrypt -> compute -> decrypt, printing the error and the timings.

The computation is what a training step is made of: a ciphertext x ciphertext product, a
plaintext product, a rotate-and-sum and an addition, checked against NumPy.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from hetrain import ckks


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="n16384", choices=sorted(ckks.PRESETS), help="CKKS parameter preset")
    p.add_argument("--backend", default="seal", choices=ckks.BACKENDS, help=ckks.registry.backend_help())
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    eng = ckks.create_engine(args.backend, args.preset, rotations=ckks.rotate_sum_steps(16))
    t_keys = time.perf_counter() - t0
    if not eng.secure:
        print("WARNING: sim backend: nothing is encrypted (INSECURE simulation)")
    x, y, w = (rng.uniform(-1, 1, eng.slots) for _ in range(3))
    t0 = time.perf_counter()
    a, b = eng.encrypt(x), eng.encrypt(y)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = eng.sum_slots(eng.mul_plain(a * b, w), 16) + a
    t_compute = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = eng.decrypt(out)
    t_dec = time.perf_counter() - t0
    expected = sum(np.roll(x * y * w, -k) for k in range(16)) + x
    err = float(np.max(np.abs(got - expected)))
    print(f"engine: {eng.describe()}")
    print("computed sum_{k<16} rot(x*y*w, k) + x on", eng.slots, "slots")
    print(f"levels used: {eng.max_level - out.level} of {eng.max_level}")
    print(f"operations: {eng.counters.format()}")
    print(f"keygen_s={t_keys:.3f} encrypt_s={t_enc:.3f} compute_s={t_compute:.3f} decrypt_s={t_dec:.3f}")
    print(f"max_abs_error={err:.3e}")
    return 0 if err < 1e-3 else 1
