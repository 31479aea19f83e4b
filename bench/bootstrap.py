"""Measure bootstrapping through the hetrain engine: key sizes, keygen, bootstrap time, memory.

    python bench/bootstrap.py [--key-size small|medium] [--repeats 2] [--threads 2] [--force]
    python bench/bootstrap.py --backend openfhe [--preset openfhe-boot] [--force-insecure] [--force] [--amplitudes 16 64]
    python bench/bootstrap.py --backend openfhe --split DIR [--preset openfhe-boot] [--rounds 2] [--split-threads 2 1]

desilo: needs the optional desilofhe package (non-commercial licence; ``pip install hetrain[desilo]``).
At N = 2^16 it needs several GB (small key ≈10 GB peak, medium ≈15 GB+), so it refuses to start
unless 18 GB are available (the machine is shared) — ``--force`` overrides.
openfhe: needs ``pip install 'hetrain[openfhe]'`` (Python 3.10). openfhe-boot (N=2^16, 128-bit, 1024
slots, [2,2]) holds ≈42 rotation/bootstrapping keys of ≈186 MiB: a 7.65 GiB public context, 11.0 GiB
peak at keygen (measured), so the same 18 GB guard applies; the INSECURE test rings
(``--preset openfhe-boot-test --force-insecure``) need well under 1 GB. Key sizes are printed for
openfhe only with ``--key-sizes`` (serialising the keys doubles the memory).
``--split DIR`` (openfhe): the client/server split, each party in its own process, keys through files
(bench/openfhe_split.py: keygen, server bootstraps at each OMP_NUM_THREADS interleaved, client decrypts).
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
    p.add_argument("--backend", default="desilo", choices=("desilo", "openfhe"))
    p.add_argument("--preset", default=None, help="openfhe: parameter set (default openfhe-boot)")
    p.add_argument("--force-insecure", action="store_true", help="openfhe: allow an INSECURE test ring")
    p.add_argument("--key-sizes", action="store_true", help="openfhe: serialise the keys to print their sizes")
    p.add_argument("--key-size", default="small", choices=("small", "medium"))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--force", action="store_true", help="run even with less than 18 GB available")
    p.add_argument("--split", metavar="DIR", help="openfhe: client and server in separate processes (openfhe_split.py)")
    p.add_argument("--rounds", type=int, default=2, help="--split: interleaved rounds")
    p.add_argument("--split-threads", nargs="*", default=["2", "1"], help="--split: the server's OMP_NUM_THREADS values")
    p.add_argument("--amplitudes", nargs="*", type=float, default=[],
                   help="also the max error of one bootstrap of x ~ U(-A, A) for each A (e.g. 16 64: the magnitudes of "
                        "the pre-activations an mlp bootstraps inside an iteration, models/inner_boot.py)")
    args = p.parse_args(argv)
    if args.split:
        if args.backend != "openfhe":
            p.error("--split needs --backend openfhe")
        import openfhe_split
        return openfhe_split.main([args.split, "--preset", args.preset or "openfhe-boot", "--rounds", str(args.rounds),
                                   "--repeats", str(args.repeats), "--threads", *args.split_threads]
                                  + (["--force-insecure"] if args.force_insecure else []))

    if args.backend == "openfhe":
        from hetrain.ckks import openfhe_backend as backend_module
        extra = "pip install 'hetrain[openfhe]', Python 3.10"
    else:
        from hetrain.ckks import desilo_backend as backend_module
        extra = "pip install 'hetrain[desilo]'"
    if not backend_module.available():
        print(f"{args.backend} is not installed (optional extra: {extra}); nothing to measure")
        return 0
    preset = args.preset or ("openfhe-boot" if args.backend == "openfhe" else "desilo-boot")
    small = args.backend == "openfhe" and backend_module.PRESETS.get(preset) is not None \
        and backend_module.PRESETS[preset].ring_dim <= 8192
    avail = psutil.virtual_memory().available / 2**30
    if avail < NEED_GB and not args.force and not small:
        print(f"only {avail:.1f} GB available (< {NEED_GB} GB): not starting on a shared machine; --force overrides")
        return 1

    from hetrain import ckks
    t0 = time.perf_counter()
    if args.backend == "openfhe":
        eng = ckks.create_engine("openfhe", preset, [], force_insecure=args.force_insecure)
    else:
        eng = ckks.create_engine("desilo", preset, [], threads=args.threads, bootstrap_key_size=args.key_size)
    keygen = time.perf_counter() - t0
    print(f"{eng.describe()}; keygen {keygen:.1f} s; peak RSS after keygen "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB", flush=True)
    if args.backend != "openfhe" or args.key_sizes:
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
    for amp in args.amplitudes:  # the error grows with the magnitude (openfhe-boot-test: 1e-6 at 1, 4.9e-4 at 64)
        xa = np.random.default_rng(1).uniform(-amp, amp, eng.slots)
        err = float(np.max(np.abs(eng.decrypt(eng.bootstrap(eng.encrypt(xa, level=0))) - xa)))
        print(f"  |x| <= {amp:g}: max abs error {err:.2e} (relative {err / amp:.1e})", flush=True)
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
