"""Seed workload for the encrypted MLP: one iteration of 400-32-16-10 on RegNet rows 0–127, real CKKS.

Prints: key generation / encryption / server iteration time, peak memory (RSS of this process,
which holds client and server), operation counts of the iteration, levels per iteration part,
the gap between the decrypted weights and the plaintext twin, and held-out accuracy (rows 128–255).
Targets: one iteration <= 5 minutes, peak memory <= 8 GB (2-core machine).

    python bench/seed_nn.py [--preset n32768] [--hidden 32,16] [--iterations 1] [--backend seal]

One iteration is one run; medians need --repeat (each repeat re-runs the server iteration only).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import numpy as np
import psutil

from hetrain import ckks
from hetrain.models.mlp_dvr import MLPTrainer

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "regnet_x_400mf_mnist_train_first256.csv")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="n32768")
    ap.add_argument("--backend", default="seal")
    ap.add_argument("--hidden", default="32,16")
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--learning-rate", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--data", default=os.environ.get("HETRAIN_REGNET_CSV", DATA))
    args = ap.parse_args(argv)

    raw = np.loadtxt(args.data, delimiter=",")
    y, F = raw[:, 0].astype(int), raw[:, 1:]
    mu, sd = F[:128].mean(0), F[:128].std(0)
    sd[sd == 0] = 1.0
    X, Xva = (F[:128] - mu) / sd, (F[128:256] - mu) / sd
    Y = np.eye(10)[y[:128]]

    tr = MLPTrainer(hidden=[int(h) for h in args.hidden.split(",")], iterations=args.iterations,
                    learning_rate=args.learning_rate)
    params = ckks.get_params(args.preset)
    plan = tr.plan(*X.shape, 10, params)
    plan.check(params)
    print(f"network {'-'.join(map(str, tr.sizes(400, 10)))}, n=128, {args.backend} {params.describe()}")
    print(f"plan: {plan.levels_needed} of {plan.levels_available} levels; per iteration part: {plan.levels_per_iteration}")
    print(f"plan: {len(plan.rotation_steps)} rotation keys {sorted(plan.rotation_steps)}; " + "; ".join(plan.notes))

    t0 = time.perf_counter()
    eng = ckks.create_engine(args.backend, params, rotations=plan.rotation_steps)
    keygen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    inputs, job = tr.client_encrypt(eng, X, Y)
    job["data_shape"] = [128, 400, 10]
    encrypt_s = time.perf_counter() - t0
    n_ct = sum(len(v) for v in inputs.values())
    print(f"keygen {keygen_s:.1f}s, encrypt {encrypt_s:.1f}s ({n_ct} ciphertexts), rss {rss_gb():.2f} GB")

    times = []
    for r in range(args.repeat):
        eng.counters.reset()
        t0 = time.perf_counter()
        out = tr.server_train(eng, inputs, job)
        times.append(time.perf_counter() - t0)
        print(f"server iteration(s) run {r + 1}: {times[-1]:.1f}s, rss {rss_gb():.2f} GB", flush=True)
    print(f"server_train_s median {statistics.median(times):.1f} over {len(times)} run(s) "
          f"({args.iterations} iteration(s))")
    print("operations:", eng.counters.format().replace("\n", "; "))
    levels = {k: v[0].level for k, v in out.items()}
    print(f"state levels after training: {levels} (started at {eng.max_level})")

    W = tr.client_decrypt(eng, out, job)
    twin = tr.twin(X, Y)
    gap = max(float(np.max(np.abs(W[k] - twin[k]))) for k in twin)
    rel = max(float(np.max(np.abs(W[k] - twin[k])) / (np.max(np.abs(twin[k])) + 1e-30)) for k in twin)
    acc = lambda w: float(np.mean(np.argmax(tr.predict_scores(w, Xva), 1) == y[128:256]))  # noqa: E731
    init = tr.initial_weights(400, 10)
    print(f"twin_max_abs_diff={gap:.3e} (relative {rel:.2e})")
    print(f"held-out accuracy rows 128-255: init {acc(init):.3f}, encrypted {acc(W):.3f}, twin {acc(twin):.3f}")
    print(f"peak_rss_gb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} (machine shared with other developers)")


def rss_gb() -> float:
    return psutil.Process().memory_info().rss / 2**30


if __name__ == "__main__":
    sys.exit(main())
