"""Measure desilofhe bootstrapping through the hetrain engine: key sizes, keygen, bootstrap time, memory.

    python bench/bootstrap.py [--key-size small|medium] [--repeats 2] [--threads 2] [--force]

Needs the optional desilofhe package (non-commercial licence; ``pip install hetrain[desilo]``).
At N = 2^16 it needs several GB (small key ≈10 GB peak, medium ≈15 GB+), so it refuses to start
unless 18 GB are available (the machine is shared) — ``--force`` overrides.
Prints medians of the bootstrap time, the error after bootstrapping, key sizes and peak RSS.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import numpy as np
import psutil

NEED_GB = 18


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--key-size", default="small", choices=("small", "medium"))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--force", action="store_true", help="run even with less than 18 GB available")
    args = p.parse_args(argv)

    from hetrain.ckks import desilo_backend
    if not desilo_backend.available():
        print("desilofhe is not installed (optional extra: pip install 'hetrain[desilo]'); nothing to measure")
        return 0
    avail = psutil.virtual_memory().available / 2**30
    if avail < NEED_GB and not args.force:
        print(f"only {avail:.1f} GB available (< {NEED_GB} GB): not starting on a shared machine; --force overrides")
        return 1

    from hetrain import ckks
    t0 = time.perf_counter()
    eng = ckks.create_engine("desilo", "desilo-boot", [], threads=args.threads, bootstrap_key_size=args.key_size)
    keygen = time.perf_counter() - t0
    print(f"{eng.describe()}; bootstrap key '{args.key_size}'; keygen {keygen:.1f} s", flush=True)
    for k, v in eng.key_sizes().items():
        print(f"  {k}: {v / 2**20:.1f} MiB")
    x = np.random.default_rng(0).uniform(-1, 1, eng.slots)
    ct = eng.encrypt(x, level=0)
    times, errs = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        b = eng.bootstrap(ct)
        times.append(time.perf_counter() - t0)
        errs.append(float(np.max(np.abs(eng.decrypt(b) - x))))
        print(f"  bootstrap {times[-1]:.1f} s, level {b.level}, max abs error {errs[-1]:.2e}", flush=True)
    t0 = time.perf_counter()
    eng.square(b)
    mul = time.perf_counter() - t0
    print(f"median bootstrap {statistics.median(times):.1f} s over {len(times)}; max error {max(errs):.2e}; "
          f"levels after bootstrap {eng.bootstrap_level}; ct x ct multiply at the top {mul:.2f} s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB "
          f"(available at start {avail:.1f} GB; machine shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
