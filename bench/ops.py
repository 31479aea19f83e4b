"""Median time of each CKKS operation and the size of ciphertexts and keys, per preset.

    python bench/ops.py [--presets n8192,n16384,n16384-deep,n32768] [--reps 7]

Times are medians over --reps runs on one core (SEAL is single-threaded here). "multiply" is the
whole ct x ct product (tensor + relinearise + rescale); its parts are also timed alone. Rotations
are timed at the top level and at level 1, because their cost falls with the number of primes left.
Later issues measure against this table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from hetrain import ckks  # noqa: E402
from hetrain.ckks.seal_backend import _seal_to_bytes  # noqa: E402  (sizes of raw SEAL objects)


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def bench_preset(name: str, reps: int) -> tuple[dict[str, float], dict[str, float]]:
    t0 = time.perf_counter()
    eng = ckks.create_engine("seal", name, rotations=[1])
    keygen_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, eng.slots), rng.uniform(-1, 1, eng.slots)
    a, b = eng.encrypt(x), eng.encrypt(y)
    low = eng.drop_to_level(a, 1)
    ev = eng._ev  # the raw SEAL evaluator, to time the parts of a product alone
    import tenseal.sealapi as seal

    def tensor():
        out = seal.Ciphertext()
        ev.multiply(a.data, b.data, out)
        return out

    t = tensor()

    def relin_only():
        out = seal.Ciphertext()
        ev.relinearize(t, eng._rlk, out)
        return out
    times = {
        "encode": median_ms(lambda: eng._encode_add(x, eng.max_level), reps),
        "encrypt": median_ms(lambda: eng.encrypt(x), reps),
        "decrypt": median_ms(lambda: eng.decrypt(a), reps),
        "add": median_ms(lambda: a + b, reps),
        "multiply (ct x ct, relinearise, rescale)": median_ms(lambda: a * b, reps),
        "  tensor product only": median_ms(tensor, reps),
        "  relinearise only": median_ms(relin_only, reps),
        "  tensor + rescale (no relinearisation)": median_ms(lambda: eng._rescale(tensor(), eng.max_level), reps),
        "multiply_plain (+ rescale)": median_ms(lambda: eng.mul_plain(a, y), reps),
        "multiply_scalar (+ rescale)": median_ms(lambda: eng.mul_scalar(a, 0.5), reps),
        "rotate (top level)": median_ms(lambda: eng.rotate(a, 1), reps),
        "rotate (level 1)": median_ms(lambda: eng.rotate(low, 1), reps),
        "drop one level": median_ms(lambda: eng.drop_to_level(a, eng.max_level - 1), reps),
        "serialize ciphertext": median_ms(lambda: eng.serialize(a), reps),
    }
    sizes = {
        "ciphertext (top level)": eng.ciphertext_nbytes(a),
        "ciphertext (level 1)": eng.ciphertext_nbytes(low),
        "public key": len(_seal_to_bytes(eng._pk)),
        "relinearisation keys": len(_seal_to_bytes(eng._rlk)),
        "one rotation (Galois) key": len(_seal_to_bytes(eng._gk)),
        "secret key": len(_seal_to_bytes(eng._sk)),
    }
    times["keygen (sk, pk, relinearisation key, 1 Galois key) [s]"] = keygen_s
    return times, sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="n8192,n16384,n16384-deep,n32768")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    presets = args.presets.split(",")
    results = {p: bench_preset(p, args.reps) for p in presets}
    w = 44
    print(f"median ms per operation (reps={args.reps}); sizes in MB")
    print("operation".ljust(w) + "".join(p.rjust(14) for p in presets))
    for op in results[presets[0]][0]:
        print(op.ljust(w) + "".join(f"{results[p][0][op]:14.2f}" for p in presets))
    for what in results[presets[0]][1]:
        print(what.ljust(w) + "".join(f"{results[p][1][what] / 1e6:14.2f}" for p in presets))
    levels = "".join(f"{ckks.PRESETS[p].levels:14d}" for p in presets)
    print("levels".ljust(w) + levels)


if __name__ == "__main__":
    main()
