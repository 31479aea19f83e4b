"""Benchmark: mlp-diagonal on Iris against the row-major baseline (bench/rowmajor_baseline.py). Prints medians; nothing is asserted.

    python bench/iris.py [--preset n16384-deep] [--iterations 16] [--repeats 3]
                         [--compare rowmajor-repack,diagonal-repack] [--compare-preset n32768]

Data: scikit-learn's Iris, the fixed stratified 80/20 split (random_state 0): 120 training rows,
30 test rows; the client standardises with the training rows' statistics (protocol.Preprocessor).

1. Training (accuracy, twin gap): the real cross-process path, ``hetrain.protocol.fit(..., refresh=
   "client")`` — the same code as ``hetrain fit --model mlp --hidden 4 --refresh client`` on the
   training rows: the server is a separate process with public material only and asks this process
   over the refresh channel to re-encrypt its weights whenever the next iteration would not fit
   (every full iteration at n16384-deep). The test rows are scored here with the decrypted model.
2. Operations and time per full iteration (medians over --repeats fresh runs of one full iteration;
   iteration 1 is a cheaper W2-only step and is not counted). All variants share the network
   (4 → 4 → 3, degree-7 hidden sigmoid on z/24, linear output), the batching of the 120 samples in
   slot blocks (B = 128 blocks), the sample sums (all-reduce over blocks: log2 B rotations), and the
   level-saving folds (learning rates and output slope folded into the data). They differ in the
   weight layout and in how Wᵀ·δ (back-propagation through W2) is computed:
   * packed (mlp-diagonal) — W in diagonal order, one ciphertext per generalised diagonal D_t;
     W·x = Σ_t D_t ⊙ rot(x, t) and Wᵀ·δ = Σ_t rot(D_t ⊙ δ, −t) on the SAME encrypted diagonals
     (one level, one rotation per non-zero offset); gradients are packed into windows of one
     ciphertext, all-reduced, and unpacked by rotation.
   * diagonal-repack — the same diagonal layout, but Wᵀ's diagonals are rebuilt each iteration as
     E_t = mask_t ⊙ rot(D_{−t}, t) (one rotation + one plaintext mask per diagonal, one extra level)
     and the forward product runs on them. It still uses the idea that Wᵀ's diagonals are W's
     diagonals rotated, so it is the weaker baseline.
   * rowmajor-repack — WITHOUT the idea (bench/rowmajor_baseline.py, circuits/rowmajor.py): W
     row-major, row i in its own 8-slot segment of every sample block; W·x = W ⊙ (x tiled in every
     segment) + rotate-and-sum inside segments (result strided at i·8); the next layer's input is
     gathered (one mask and one rotation per entry) and tiled (log2 rotations); for back-propagation
     Wᵀ is re-packed row-major from the encrypted W every iteration by masking the entries with the
     same i − j and rotating them into place by (i − j)·7 (7 masks, 6 rotations, 1 level for the 3×5
     W2), δ is gathered and tiled into Wᵀ's rows and the row-major product runs on Wᵀ; gradients
     Σ_s δ aᵀ come out row-major (δ spread over its segment: one mask, 3 rotations) and need no
     unpacking. It needs 11 levels per iteration, more than n16384-deep's 9, hence --compare-preset.
   Counted: ct×ct multiplications (one relinearisation each; mul_sum shares one), ct×plaintext
   (masks), ct×scalar and rotations, from the engine's counters.
3. Rotation keys per variant (each distinct step is one Galois key: ≈23 MB at n16384, ≈200 MB at
   n32768).
4. ``--without-client`` (Python 3.10 with openfhe): a network with two hidden layers (``--hidden``, default
   8,4) trained WITHOUT the data owner: ``protocol.fit(..., "mlp", {"layout": "dvr", ...},
   refresh="bootstrap", backend="openfhe")``, the same code as ``hetrain fit --model mlp --layout dvr
   --hidden 8,4 --refresh bootstrap --backend openfhe``. An iteration needs 14-15 levels and a bootstrap
   restores 6, so the server also bootstraps intermediate ciphertexts inside each iteration
   (models/inner_boot.py). Prints wall time, bootstraps per iteration (the state's and those inside),
   their seconds, held-out accuracy (encrypted and twin), the twin gap and peak memory. The planner
   chooses the options not given (learning rate, sigmoids); ``--iterations`` is fixed.

       python bench/iris.py --without-client --boot-preset openfhe-boot-test --iterations 10    # INSECURE test ring

   At 128 bits (``openfhe-boot``, ≈8 GB of bootstrapping keys; OpenFHE keeps its tasks in the server
   process, one engine) the data owner peaks at ≈11 GB while it makes the keys and the server at ≈13 GB;
   ``hetrain fit`` holds both at once (the owner ≈3 GB after releasing its keys), so on a machine without
   ≈17 GB free run the two parties one after the other:

       mkdir -p /tmp/ofhe128-nn/owner /tmp/ofhe128-nn/server && cd /tmp/ofhe128-nn
       hetrain datasets export iris --out iris-train.csv --test-out iris-test.csv
       cd owner && hetrain keygen --out KEYS --backend openfhe --preset openfhe-boot
       hetrain encrypt --keys KEYS --data ../iris-train.csv --out ../server/JOB --model mlp --layout dvr \
           --hidden 8,4 --iterations 4 --refresh bootstrap --yes
       cd ../server && hetrain train --job JOB
       cd ../owner && hetrain decrypt --keys KEYS --job ../server/JOB --out ../model.json
       cd .. && hetrain evaluate --model model.json --data iris-test.csv

   (checked on openfhe-boot-test with --force-insecure on keygen and encrypt: 2 iterations, 38 bootstraps,
   32 inside iterations, twin 9.0e-7, 0 round trips.)

The machine is shared with other developers: times are noisy.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time

import numpy as np
import psutil
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from hetrain import ckks
from hetrain.circuits import diagonal as dg
from hetrain.circuits import rowmajor as rmj
from hetrain.models.base import get_trainer
from hetrain.models.mlp_diagonal_twin import Scales, init_hidden, scaled_step
from hetrain.protocol import fit
from hetrain.protocol.preprocess import Preprocessor
from rowmajor_baseline import RowMajorIteration  # bench/ (this script's directory is on sys.path)

HEAVY = ("relinearize", "multiply_plain", "multiply_scalar", "rotate")
VARIANTS = ("packed", "diagonal-repack", "rowmajor-repack")
KEY_MB = {16384: 23, 32768: 200}  # MB of one Galois key (SEAL: engine.key_sizes()["galois_keys"] / number of rotation steps)


def iris_split():
    X, y = load_iris(return_X_y=True)
    return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)  # Xtr, Xte, ytr, yte


def heavy(d: dict) -> dict:
    return {k: int(d.get(k, 0)) for k in HEAVY}


def accuracy(T, w, Xte, yte) -> float:
    return float((T.predict_scores(w, Xte).argmax(1) == yte).mean())


# ------------------------------------------------------------------------------ 1. training, cross-process
def train_cross_process(preset, iterations, Xtr, ytr, Xte, yte):
    t0 = time.perf_counter()
    r = fit(Xtr, ytr, "mlp", {"hidden": [4], "iterations": iterations}, preset=preset, backend="seal",
            refresh="client", progress=False)
    wall = time.perf_counter() - t0
    pre = r.model.preprocessing
    T = get_trainer("mlp-diagonal")(iterations=iterations)
    hist = []
    T.twin(pre.transform(Xtr), pre.one_hot(ytr), iterations=iterations, history=hist)
    return dict(wall=wall, stats=r.stats, gap=r.twin_max_abs_diff, enc=r.model.accuracy(Xte, yte),
                twin=[accuracy(T, h, pre.transform(Xte), yte) for h in hist], model=r.model)


# ------------------------------------------------------------------------------ 4. without the client (openfhe)
def train_without_client(preset, hidden, iterations, Xtr, ytr, Xte, yte):
    """``fit`` with refresh "bootstrap" on OpenFHE: no round trip; bootstraps inside iterations where needed."""
    from hetrain.ckks.openfhe_backend import PRESETS

    insecure = not PRESETS[preset].secure  # the INSECURE test rings must be forced; the 128-bit ones need not
    t0 = time.perf_counter()
    r = fit(Xtr, ytr, "mlp", {"layout": "dvr", "hidden": hidden, "iterations": iterations}, preset=preset,
            backend="openfhe", refresh="bootstrap", force_insecure=insecure, progress=False)
    wall = time.perf_counter() - t0
    pre = r.model.preprocessing
    T = get_trainer(r.model.model)(**r.model.config)
    return dict(wall=wall, stats=r.stats, gap=r.twin_max_abs_diff, enc=r.model.accuracy(Xte, yte),
                twin=accuracy(T, r.twin, pre.transform(Xte), yte))


def report_without_client(a, Xtr, ytr, Xte, yte):
    hidden = [int(h) for h in a.hidden.split(",")]
    r = train_without_client(a.boot_preset, hidden, a.iterations, Xtr, ytr, Xte, yte)
    st, rf, run = r["stats"], r["stats"]["refresh"], r["stats"].get("run") or {}
    inside, total = int(run.get("bootstraps_in_iterations") or 0), int(rf["bootstraps"])
    ops = st.get("server_operations") or {}
    boot = ops.get("bootstrap") or {}
    print(f"[without client] protocol.fit(refresh='bootstrap', backend='openfhe'), preset {st['params']}, hidden "
          f"{hidden}, {a.iterations} iterations, levels per iteration {st['levels_per_iteration']}")
    print(f"[without client] wall {r['wall']:.1f} s; server training {st['server_train_s']:.1f} s "
          f"({st['server_train_s'] / a.iterations:.1f} s per iteration); round trips {rf['round_trips']}")
    print(f"[without client] bootstraps {total} ({total / a.iterations:.1f} per iteration): {inside} inside iterations "
          f"({inside / a.iterations:.1f} per iteration), {total - inside} of the state; planned "
          f"{st.get('bootstraps_planned')}; {boot.get('seconds', float('nan')) / max(1, boot.get('count', 0)):.2f} s "
          f"per bootstrap ({boot.get('seconds', 0):.1f} s in all)")
    print(f"[without client] test accuracy: encrypted {r['enc']:.3f}, twin {r['twin']:.3f}; max |decrypted weight - "
          f"twin| {r['gap']:.2e} (the check allows {st['twin_bound']:.2e}); peak RSS client "
          f"{st['client_peak_rss_bytes'] / 2**20:.0f} MiB, server {st['server_peak_rss_bytes'] / 2**20:.0f} MiB")


# ------------------------------------------------------------------------------ 2. one full iteration
def _diag_iteration(preset, transpose, Xs, Y, repeats):
    """Iteration 2 of mlp-diagonal (the first full one), ``repeats`` times from fresh encryptions."""
    T = get_trainer("mlp-diagonal")(transpose=transpose, iterations=2)
    plan = T.plan(len(Xs), Xs.shape[1], Y.shape[1], ckks.get_params(preset))
    eng = ckks.create_engine("seal", preset, rotations=plan.rotation_steps)
    times, ops = [], []
    for _ in range(repeats):
        inputs, job = T.client_encrypt(eng, Xs, Y)
        marks = [(time.perf_counter(), eng.counters.snapshot())]
        T.server_train(eng, inputs, job, progress=lambda *a: marks.append(
            (time.perf_counter(), eng.counters.snapshot())))
        (t1, s1), (t2, s2) = marks[1], marks[2]
        times.append(t2 - t1)
        ops.append({k: s2.get(k, 0) - s1.get(k, 0) for k in HEAVY})
    # levels of a full iteration from weights at the same level (iteration 2 starts lower), traced
    plan = T.plan(len(Xs), Xs.shape[1], Y.shape[1], ckks.get_params(preset))
    levels = plan.levels_per_iteration["each later iteration"]
    return dict(times=times, ops=ops, levels=levels, keys=len(eng.rotation_steps), secure=eng.secure)


def _rowmajor_iteration(preset, Xs, Y, repeats):
    T = get_trainer("mlp-diagonal")()
    it = RowMajorIteration(T, len(Xs), Xs.shape[1], Y.shape[1], ckks.get_params(preset).slots)
    eng = ckks.create_engine("seal", preset, rotations=it.rotation_steps())
    s: Scales = it.scales
    xh = s.x * np.hstack([Xs, np.ones((len(Xs), 1))])
    V1 = init_hidden(T.H, Xs.shape[1], T.gain) / s.x
    V1, V2, _ = scaled_step(V1, np.zeros((Y.shape[1], T.H + 1)), xh, Y, s, T.hidden_sig, T.hb, hidden_update=False)
    want1, want2, _ = scaled_step(V1, V2, xh, Y, s, T.hidden_sig, T.hb)
    times, ops, gap = [], [], 0.0
    for _ in range(repeats):
        inp = it.client_encrypt(eng, Xs, Y, V1, V2)
        snap, t0 = eng.counters.snapshot(), time.perf_counter()
        out = it.iteration(eng, inp)
        times.append(time.perf_counter() - t0)
        ops.append(heavy(eng.counters.diff(snap)))
        g1, g2 = it.decrypt(eng, out)
        gap = max(gap, np.abs(g1 - want1).max() * s.x, np.abs(g2 - want2).max() / s.w2)  # in W1, W2 units
    return dict(times=times, ops=ops, levels=eng.max_level - out["w1"].level, keys=len(eng.rotation_steps),
                secure=eng.secure, twin_gap=gap)


def full_iteration(variant, preset, Xs, Y, repeats):
    if variant == "rowmajor-repack":
        return _rowmajor_iteration(preset, Xs, Y, repeats)
    return _diag_iteration(preset, {"packed": "packed", "diagonal-repack": "repacked"}[variant], Xs, Y, repeats)


def median_ops(ops: list[dict]) -> dict:
    return {k: int(statistics.median(o[k] for o in ops)) for k in HEAVY}


def transpose_alone(preset):
    """W2ᵀδ alone (W2 3 × 5 with the hidden bias), sim counts: packed, diagonal re-pack, row-major re-pack."""
    layout = dg.SampleLayout(120, ckks.get_params(preset).slots)
    band, W = dg.BandDiagonals(3, 5), np.ones((3, 5))
    rm = rmj.RowMajor.for_matrix(3, 5, layout.block)
    steps = set(band.offsets) | {-t for t in band.offsets} | set(rm.gather_steps()) | set(rm.transpose_steps())
    steps |= set(rm.T.tile_steps(rm.cols)) | set(rm.T.rowsum_steps())
    eng = ckks.create_engine("sim", preset, rotations=sorted(steps - {0}))
    diags = {t: eng.encrypt(layout.replicate(v)) for t, v in band.diagonals(W).items()}
    d = eng.encrypt(layout.place(np.ones((120, 3))))
    out = {}
    s = eng.counters.snapshot(); dg.matvec_transpose(eng, diags, d); out["packed"] = heavy(eng.counters.diff(s))
    s = eng.counters.snapshot(); dg.matvec_transpose_repacked(eng, diags, d, dg.transpose_masks(band, layout))
    out["diagonal-repack"] = heavy(eng.counters.diff(s))
    w, ds = eng.encrypt(layout.replicate(rm.pack(W))), eng.encrypt(layout.place(rm.strided(np.ones((120, 3)))))
    s = eng.counters.snapshot()
    rmj.matvec_transpose(eng, w, ds, rm, rmj.transpose_masks(rm, layout), rmj.gather_masks(rm, layout))
    out["rowmajor-repack"] = heavy(eng.counters.diff(s))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="n16384-deep", help="training preset (9 levels: one full iteration per chain)")
    ap.add_argument("--iterations", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="full iterations timed per variant (median)")
    ap.add_argument("--compare", default="rowmajor-repack,diagonal-repack", help=f"baselines: {', '.join(VARIANTS[1:])}")
    ap.add_argument("--compare-preset", default="n32768",
                    help="preset for the side-by-side timing (the row-major baseline needs 11 levels)")
    ap.add_argument("--skip-train", action="store_true", help="only the per-iteration comparison")
    ap.add_argument("--without-client", action="store_true",
                    help="only part 4: a two-hidden-layer network trained by the server alone (openfhe, Python 3.10)")
    ap.add_argument("--boot-preset", default="openfhe-boot-test", help="openfhe preset of --without-client")
    ap.add_argument("--hidden", default="8,4", help="hidden widths of --without-client")
    a = ap.parse_args()
    compare = [v.strip() for v in a.compare.split(",") if v.strip()]
    bad = set(compare) - set(VARIANTS[1:])
    if bad:
        ap.error(f"unknown --compare variant(s) {sorted(bad)}; choose from {', '.join(VARIANTS[1:])}")
    Xtr, Xte, ytr, yte = iris_split()
    pre = Preprocessor.fit(Xtr, ytr)
    Xs, Y = pre.transform(Xtr), pre.one_hot(ytr)
    if a.without_client:
        print(f"Iris stratified 80/20 split: train {len(Xtr)} / test {len(Xte)}; OpenFHE; machine shared with other "
              "developers")
        report_without_client(a, Xtr, ytr, Xte, yte)
        return
    print(f"Iris stratified 80/20 split: train {len(Xtr)} / test {len(Xte)}; SEAL; machine shared with other developers")

    if not a.skip_train:
        r = train_cross_process(a.preset, a.iterations, Xtr, ytr, Xte, yte)
        st, rf = r["stats"], r["stats"]["refresh"]
        compute = st["server_train_s"] - rf.get("wait_seconds", 0.0)
        print(f"[train] protocol.fit(refresh='client'), server in its own process, preset {st['params']}, "
              f"{a.iterations} iterations, {len(st['rotation_steps'])} rotation keys")
        print(f"[train] wall {r['wall']:.1f} s; server training {st['server_train_s']:.1f} s of which refresh waits "
              f"{rf.get('wait_seconds', 0):.1f} s ({rf['round_trips']} round trips, {rf['bytes_to_client'] / 2**20:.1f} "
              f"MiB to the client, {rf['bytes_to_server'] / 2**20:.1f} MiB back, client share "
              f"{rf.get('client_seconds', 0):.1f} s); compute {compute / a.iterations:.2f} s per iteration on average "
              f"(iteration 1 included)")
        print(f"[train] peak RSS client {st['client_peak_rss_bytes'] / 2**20:.0f} MiB, server "
              f"{st['server_peak_rss_bytes'] / 2**20:.0f} MiB; public keys {st['upload_key_bytes'] / 2**20:.0f} MiB")
        print(f"[train] test accuracy after {a.iterations} iterations: encrypted {r['enc']:.3f}, twin "
              f"{r['twin'][-1]:.3f}; max |decrypted weight - twin| {r['gap']:.2e}")
        print("[train] twin test accuracy per iteration: "
              + " ".join(f"{i + 1}:{acc:.2f}" for i, acc in enumerate(r["twin"])))

    res = {}
    runs = [("packed", a.preset)] + [(v, a.compare_preset) for v in ["packed"] + compare]
    for variant, preset in runs:
        if (variant, preset) in res:
            continue
        avail = psutil.virtual_memory().available / 2**30
        if preset.startswith("n32768") and avail < 14:
            print(f"[{variant} @ {preset}] skipped: {avail:.1f} GiB available (needs its keys plus 8 GiB left to others)")
            continue
        gc.collect()
        res[variant, preset] = x = full_iteration(variant, preset, Xs, Y, a.repeats)
        ops = median_ops(x["ops"])
        extra = f"; max |weights - twin step| {x['twin_gap']:.1e}" if "twin_gap" in x else ""
        print(f"[{variant} @ {preset}] one full iteration: {ops} -> rotations+multiplications {sum(ops.values())}; "
              f"{x['levels']} levels; {statistics.median(x['times']):.2f} s (median of {len(x['times'])}); "
              f"{x['keys']} rotation keys (≈{x['keys'] * KEY_MB[ckks.get_params(preset).poly_modulus_degree] / 1024:.2f} "
              f"GB); 128-bit secure: {x['secure']}{extra}")
    p = res.get(("packed", a.compare_preset))
    for v in compare:
        n = res.get((v, a.compare_preset))
        if p and n:
            po, no = median_ops(p["ops"]), median_ops(n["ops"])
            print(f"ratio {v}/packed (rotations+multiplications per full iteration): "
                  f"{sum(no.values()) / sum(po.values()):.2f}x; rotations alone {no['rotate'] / po['rotate']:.2f}x; "
                  f"time at {a.compare_preset} {statistics.median(n['times']) / statistics.median(p['times']):.2f}x; "
                  f"levels {n['levels']} vs {p['levels']}")
    for v, ops in transpose_alone(a.preset).items():
        print(f"W2ᵀδ alone, {v}: {ops} ({sum(ops.values())})")


if __name__ == "__main__":
    main()
