"""Benchmark: mlp-diagonal on Iris (issue 6). Prints medians; nothing is asserted.

    python bench/iris.py [--preset n16384] [--repeats 3]

Reports, for the packed transpose (Wᵀδ on W's own diagonals) and the naive one (Wᵀ re-packed by
rotations + masks each iteration): operations of one full iteration and of the Wᵀδ product alone,
levels per iteration, iterations that fit; time per iteration under SEAL; test accuracy of the
encrypted model and of the twin; twin accuracy per iteration count (how far one chain gets).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from hetrain import ckks
from hetrain.circuits import diagonal as dg
from hetrain.models.base import get_trainer

HEAVY = ("relinearize", "multiply_plain", "multiply_scalar", "rotate")


def iris():
    X, y = load_iris(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    mu, sd = Xtr.mean(0), Xtr.std(0)
    return (Xtr - mu) / sd, np.eye(3)[ytr], (Xte - mu) / sd, yte


def heavy(d: dict) -> dict:
    return {k: int(d.get(k, 0)) for k in HEAVY}


def run(preset, transpose, repeats, Xtr, Y, Xte, yte):
    T = get_trainer("mlp-diagonal")(transpose=transpose)
    plan = T.plan(len(Xtr), 4, 3, ckks.get_params(preset))
    eng = ckks.create_engine("seal", preset, rotations=plan.rotation_steps)
    inputs, job = T.client_encrypt(eng, Xtr, Y)
    times, ops = [], None
    for _ in range(repeats):
        marks = [(time.perf_counter(), eng.counters.snapshot())]
        out = T.server_train(eng, inputs, job, progress=lambda *a: marks.append((time.perf_counter(), eng.counters.snapshot())))
        # iteration 1 is the cheap W2-only step; a "full" iteration is any later one
        times += [marks[i + 1][0] - marks[i][0] for i in range(1, len(marks) - 1)]
        ops = heavy(eng.counters.diff(marks[1][1]) if len(marks) > 2 else {})
    w = T.client_decrypt(eng, out, job)
    tw = T.twin(Xtr, Y, iterations=job["iterations"])
    acc = (T.predict_scores(w, Xte).argmax(1) == yte).mean()
    acc_t = (T.predict_scores(tw, Xte).argmax(1) == yte).mean()
    gap = max(np.abs(w["W1"] - tw["W1"]).max(), np.abs(w["W2"] - tw["W2"]).max())
    return plan, ops, times, acc, acc_t, gap, len(eng.rotation_steps)


def transpose_ops(preset):
    """The Wᵀδ product alone (W2: 3 × 5 with the hidden bias), packed vs re-packed, under sim counting."""
    layout = dg.SampleLayout(120, ckks.get_params(preset).slots)
    band = dg.BandDiagonals(3, 5)
    steps = set(band.offsets) | {-t for t in band.offsets}
    eng = ckks.create_engine("sim", preset, rotations=sorted(steps - {0}))
    diags = {t: eng.encrypt(layout.replicate(v)) for t, v in band.diagonals(np.ones((3, 5))).items()}
    d = eng.encrypt(layout.place(np.ones((120, 3))))
    s = eng.counters.snapshot(); dg.matvec_transpose(eng, diags, d); packed = heavy(eng.counters.diff(s))
    s = eng.counters.snapshot(); dg.matvec_transpose_repacked(eng, diags, d, dg.transpose_masks(band, layout))
    return packed, heavy(eng.counters.diff(s))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="n16384-deep")  # 9 levels: the naive variant also gets one full iteration
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    Xtr, Y, Xte, yte = iris()
    print(f"Iris train {len(Xtr)} / test {len(Xte)}, preset {a.preset}, SEAL (machine shared with other developers)")
    res = {}
    for tr in ("packed", "repacked"):
        plan, ops, times, acc, acc_t, gap, nkeys = run(a.preset, tr, a.repeats, Xtr, Y, Xte, yte)
        res[tr] = ops
        print(f"[{tr:8s}] iterations that fit {plan.iterations_that_fit}, levels/iteration {plan.levels_per_iteration}, "
              f"rotation keys {nkeys}")
        print(f"[{tr:8s}] ops per full iteration {ops} -> rotations+multiplications {sum(ops.values())}")
        print(f"[{tr:8s}] time per full iteration: median {statistics.median(times):.2f} s over {len(times)}")
        print(f"[{tr:8s}] test accuracy encrypted {acc:.3f}, twin {acc_t:.3f}, max |weight - twin| {gap:.2e}")
    print(f"whole-iteration ratio naive/packed: {sum(res['repacked'].values()) / sum(res['packed'].values()):.2f}x")
    p, n = transpose_ops(a.preset)
    print(f"W2ᵀδ alone: packed {p} ({sum(p.values())}), re-packed {n} ({sum(n.values())}), "
          f"ratio {sum(n.values()) / sum(p.values()):.2f}x, levels 1 vs 2")
    T = get_trainer("mlp-diagonal")()
    hist = []
    T.twin(Xtr, Y, iterations=20, history=hist)
    accs = [(T.predict_scores(h, Xte).argmax(1) == yte).mean() for h in hist]
    fit = {pr: T.plan(len(Xtr), 4, 3, ckks.get_params(pr)).iterations_that_fit for pr in ("n16384", "n16384-deep", "n32768")}
    print(f"iterations in one chain: {fit}")
    print("twin test accuracy per iteration count: " + " ".join(f"{i + 1}:{x:.2f}" for i, x in enumerate(accs)))


if __name__ == "__main__":
    main()
