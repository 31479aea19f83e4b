"""OpenFHE bootstrap time by OpenMP setting: 1 thread, 2 threads spinning (libgomp's default wait policy),
2 threads passive (hetrain's default, ckks/openfhe_backend.py). Interleaved rounds, medians.

    python bench/openfhe_threads.py [--rounds 3] [--preset openfhe-boot-test-deep]

Each setting runs in its own process (OpenMP reads OMP_NUM_THREADS / OMP_WAIT_POLICY when it loads), one
after another in every round, so load on a shared machine hits all of them alike. The preset is an
INSECURE test ring (forced): the comparison is of the threading, not of the parameters.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

SETTINGS = {"1 thread": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
            "2 threads, spinning": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
            "2 threads, passive": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}}
CHILD = """
import sys, time, numpy as np
from hetrain import ckks
e = ckks.create_engine("openfhe", sys.argv[1], [1], force_insecure=True)
x = np.random.default_rng(0).uniform(-1, 1, e.slots)
ct = e.encrypt(x, level=0)
a = e.encrypt(x)
t = time.perf_counter(); b = e.bootstrap(ct); boot = time.perf_counter() - t
t = time.perf_counter(); e.rotate(e.mul(a, a), 1); mul = time.perf_counter() - t
print(boot, mul)
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--preset", default="openfhe-boot-test-deep")
    args = p.parse_args(argv)
    try:
        import openfhe  # noqa: F401
    except ImportError:
        print("openfhe is not installed (optional extra, Python 3.10): nothing to measure")
        return 0
    times = {k: ([], []) for k in SETTINGS}
    for r in range(args.rounds):
        for name, env in SETTINGS.items():
            out = subprocess.run([sys.executable, "-c", CHILD, args.preset], env={**os.environ, **env},
                                 capture_output=True, text=True, check=True).stdout.split()
            times[name][0].append(float(out[0]))
            times[name][1].append(float(out[1]))
            print(f"round {r + 1} {name}: bootstrap {float(out[0]):.2f} s, multiply+rotate {float(out[1]):.3f} s",
                  flush=True)
    print(f"medians over {args.rounds} interleaved rounds ({args.preset}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}):")
    for name, (boot, mul) in times.items():
        print(f"  {name:20s} bootstrap {statistics.median(boot):.2f} s, multiply+rotate {statistics.median(mul):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
