"""Which 128-bit OpenFHE bootstrapping sets at N=2^16 leave L levels after a bootstrap (contexts only: no keys).

    python bench/openfhe_params.py [--after 9] [--budgets 2,2 3,3 4,4] [--dnums 3 4 6 8 11 15]

For each level budget (CoeffsToSlots, SlotsToCoeffs) and number of key-switching digits dnum, the largest
scaling-modulus size OpenFHE accepts at HEStd_128_classic with a uniform ternary secret (its bound on log QP,
1772 bits at N=2^16, counts the key-switching primes P: a smaller dnum means larger P), with 4096 slots,
FLEXIBLEAUTO and depth = after + 1 + GetBootstrapDepth(budget) (hetrain's rule: ckks/openfhe_backend.py).
Bootstrap error grows ≈2x per scaling bit lost (measured on small rings: 59-bit 2e-7, 55-bit 2e-6, 50-bit
3e-4, 45-bit 4e-3 on 64 sparse slots; 47-bit 2.5e-2 on 4096 slots) and key memory grows with dnum
(a key is 2·dnum·(towers of Q and P)·N·8 bytes), so the table shows the trade-off.
``--measure N``: also build keys for one set (--budget, --scale, --dnum, --first-mod) on ring N
(N=2^13 or 2^14 keep memory at 1/8 or 1/4 of N=2^16's) and print keygen time, key sizes, bootstrap time
(median of 3), max error and peak RSS.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time


def accepts(o, depth: int, scale: int, dnum: int, first: int, n: int = 65536, slots: int = 4096) -> bool:
    p = o.CCParamsCKKSRNS()
    p.SetSecretKeyDist(o.SecretKeyDist.UNIFORM_TERNARY)
    p.SetSecurityLevel(o.SecurityLevel.HEStd_128_classic)
    p.SetRingDim(n)
    p.SetScalingModSize(scale)
    p.SetFirstModSize(first)
    p.SetScalingTechnique(o.ScalingTechnique.FLEXIBLEAUTO)
    p.SetMultiplicativeDepth(depth)
    p.SetBatchSize(slots)
    p.SetNumLargeDigits(dnum)
    try:
        return o.GenCryptoContext(p).GetRingDimension() == n
    except RuntimeError:
        return False


def measure(args) -> None:
    import numpy as np

    from hetrain.ckks.openfhe_backend import OpenFHEEngine, _boot

    budget = tuple(int(b) for b in args.budget.split(","))
    cfg = _boot(f"measure@{args.measure}", args.measure, args.after, budget, False, scale_bits=args.scale,
                dnum=args.dnum, slots=4096, first_mod=args.first_mod)
    t0 = time.perf_counter()
    eng = OpenFHEEngine(cfg, [], force_insecure=True)
    keygen = time.perf_counter() - t0
    print(f"{eng.describe()}; keygen {keygen:.1f} s", flush=True)
    x = np.random.default_rng(0).uniform(-1, 1, eng.slots)
    ct = eng.encrypt(x, level=0)
    times, errs = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        b = eng.bootstrap(ct)
        times.append(time.perf_counter() - t0)
        errs.append(float(np.max(np.abs(eng.decrypt(b) - x))))
    print(f"bootstrap median {statistics.median(times):.2f} s of 3, max error {max(errs):.2e}, level after {b.level}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if args.key_sizes:  # serialising the keys doubles the memory
        print("key sizes (MiB):", {k: round(v / 2**20, 1) for k, v in eng.key_sizes().items()})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--after", type=int, default=9, help="levels left after a bootstrap (default 9: one mlp iteration)")
    p.add_argument("--budgets", nargs="*", default=["2,2", "3,3", "4,4"])
    p.add_argument("--dnums", nargs="*", type=int, default=[3, 4, 6, 8, 11, 15])
    p.add_argument("--first-mod", type=int, default=0, help="first modulus bits (default: scale + 8, at most 60)")
    p.add_argument("--measure", type=int, default=0, metavar="N", help="build keys for one set on ring N")
    p.add_argument("--budget", default="4,4")
    p.add_argument("--scale", type=int, default=47)
    p.add_argument("--dnum", type=int, default=11)
    p.add_argument("--key-sizes", action="store_true")
    args = p.parse_args(argv)
    try:
        import openfhe as o
    except ImportError:
        print("openfhe is not installed (optional extra, Python 3.10): nothing to measure")
        return 0
    if args.measure:
        args.first_mod = args.first_mod or min(60, args.scale + 8)
        measure(args)
        return 0
    print(f"128-bit (HEStd_128_classic), N=2^16, uniform ternary, 4096 slots, {args.after} levels after a bootstrap")
    for text in args.budgets:
        budget = [int(b) for b in text.split(",")]
        depth = args.after + 1 + int(o.CryptoContext.GetBootstrapDepth(budget, o.SecretKeyDist.UNIFORM_TERNARY))
        for dnum in args.dnums:
            best = next((s for s in range(59, 39, -1)
                         if accepts(o, depth, s, dnum, args.first_mod or min(60, s + 8))), None)
            print(f"  budget {budget} depth {depth} dnum {dnum:2d}: "
                  + (f"largest scaling {best} bits" if best else "none down to 40 bits"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
