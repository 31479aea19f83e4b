"""Per-operation time, OpenFHE vs SEAL at the same parameters, through the hetrain engine; OpenFHE at 1 and 2 threads.

    python bench/openfhe_vs_seal.py [--preset n16384] [--rounds 3] [--reps 5]

Both backends get the same CKKS parameters (a SEAL preset: ring N, scale and level count; OpenFHE maps
it to the same ring, first modulus, 7 primes of the same size and one key-switching prime: ckks/openfhe_backend
.resolve). Operations on fresh ciphertexts at the top level: encrypt, add, multiply (ct x ct with
relinearisation and rescale), rotate (by 1), plaintext multiply (encode + multiply + rescale). OpenFHE's own 128-bit check refuses
n16384 (its key-switching primes make log QP larger than SEAL's): forced here, as a timing comparison at
the same ring, chain and scale.
Each setting runs in its own process (OpenMP reads OMP_NUM_THREADS when it loads): SEAL (single-threaded),
OpenFHE with 2 threads, OpenFHE with 1 thread, one after another in every round, so the load on a shared
machine hits all alike; each process times every operation ``--reps`` times. Prints medians over all
rounds and reps, in ms. Needs a Python with both tenseal and openfhe (3.10); without openfhe it says so.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

OPS = ("encrypt", "add", "multiply", "rotate", "plain_multiply")
CHILD = """
import json, sys, time, statistics, numpy as np
from hetrain import ckks
backend, preset, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
# OpenFHE refuses n16384 at 128 bits (its special primes for key switching are larger than SEAL's one
# 60-bit prime, so log QP passes the HE standard's bound for N=16384): forced, same ring, chain and scale
e = ckks.create_engine(backend, preset, [1], force_insecure=backend == "openfhe")
rng = np.random.default_rng(0)
x, y = rng.uniform(-1, 1, e.slots), rng.uniform(-1, 1, e.slots)
a, b = e.encrypt(x), e.encrypt(y)
ops = {"encrypt": lambda: e.encrypt(x), "add": lambda: e.add(a, b), "multiply": lambda: e.mul(a, b),
       "rotate": lambda: e.rotate(a, 1), "plain_multiply": lambda: e.mul_plain(a, y)}
err = float(np.max(np.abs(e.decrypt(e.rotate(e.mul(a, b), 1)) - np.roll(x * y, -1))))
out = {"describe": e.describe(), "max_error": err}
for name, fn in ops.items():
    fn()  # warm-up (first-use precomputations)
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    out[name] = ts
print(json.dumps(out))
"""
SETTINGS = {"seal": ("seal", {}), "openfhe 2 threads": ("openfhe", {"OMP_NUM_THREADS": "2"}),
            "openfhe 1 thread": ("openfhe", {"OMP_NUM_THREADS": "1"})}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="n16384")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    try:
        import openfhe  # noqa: F401
    except ImportError:
        print("openfhe is not installed (optional extra, Python 3.10): nothing to compare")
        return 0
    times = {k: {op: [] for op in OPS} for k in SETTINGS}
    info = {}
    loads = []
    for r in range(args.rounds):
        for name, (backend, env) in SETTINGS.items():
            loads.append(os.getloadavg()[0])
            res = subprocess.run([sys.executable, "-c", CHILD, backend, args.preset, str(args.reps)],
                                 env={**os.environ, **env}, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"{name} failed:\n{res.stderr[-2000:]}")
                return 1
            out = json.loads(res.stdout.strip().splitlines()[-1])
            info[name] = (out["describe"], out["max_error"])
            for op in OPS:
                times[name][op].extend(out[op])
            print(f"round {r + 1} {name}: " + ", ".join(f"{op} {1000 * statistics.median(out[op]):.2f}" for op in OPS)
                  + " ms", flush=True)
    print(f"\nmedians (ms) over {args.rounds} interleaved rounds x {args.reps} reps; {os.cpu_count()} cores; "
          f"load average during the run {min(loads):.1f}-{max(loads):.1f} (shared machine)")
    for name, (desc, err) in info.items():
        print(f"  {name}: {desc}; max error of rotate(a*b) {err:.1e}")
    print(f"  {'operation':16s}" + "".join(f"{k:>20s}" for k in SETTINGS) + f"{'openfhe(2)/seal':>18s}")
    for op in OPS:
        med = {k: 1000 * statistics.median(times[k][op]) for k in SETTINGS}
        print(f"  {op:16s}" + "".join(f"{med[k]:20.2f}" for k in SETTINGS)
              + f"{med['openfhe 2 threads'] / med['seal']:18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
