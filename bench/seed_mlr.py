"""Seed-MLR reference workload: encrypted multiclass logistic regression on RegNet MNIST features.

Rows 0–127 of regnet_x_400mf_mnist_train_first256.csv train (standardised with their own
statistics), rows 128–255 are held out; 10 classes; real CKKS (SEAL) at 128-bit security.
Each configuration runs a CLIENT process (keys, encryption, decryption, twin) that starts a separate
SERVER process which receives only public keys and ciphertexts (files) and trains. Both print their
own peak RSS. Then the published Volley Revolver layout's operation counts are printed from the
INSECURE sim backend (counting only; no timings are meaningful there).

    python bench/seed_mlr.py                      # 2 iterations (published run) + project default (3)
    python bench/seed_mlr.py --iterations 2 --preset n16384-deep --repeats 3
"""
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

DATA = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "regnet_x_400mf_mnist_train_first256.csv"
if not DATA.exists():
    DATA = pathlib.Path("/work/shared/data/regnet_x_400mf_mnist_train_first256.csv")


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: on Linux a child started by fork+exec inherits
    its parent's ru_maxrss, so the server would report the client's peak."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def load_seed():
    D = np.loadtxt(DATA, delimiter=",")
    y = D[:, 0].astype(int)
    X = D[:, 1:]
    mu, sd = X[:128].mean(0), X[:128].std(0)
    sd[sd == 0] = 1.0
    X = (X - mu) / sd  # client-side standardisation, statistics from the training rows only
    return X[:128], np.eye(10)[y[:128]], X[128:], y[128:], y[:128]


# ---------------------------------------------------------------- server process
def serve(jobdir: str) -> None:
    from hetrain import ckks
    from hetrain.models.base import get_trainer

    d = pathlib.Path(jobdir)
    job = json.loads((d / "job.json").read_text())
    eng = ckks.load_engine((d / "public.bin").read_bytes())  # no secret key in this process
    inputs = {k: eng.load_ciphertexts(d / f"in_{k}.bin") for k in job["input_names"]}
    trainer = get_trainer(job["model"]).from_job(job)
    per_iter, snaps = [], []

    def progress(done, total, msg):
        snaps.append(eng.counters.snapshot())
        if len(snaps) > 1:
            per_iter.append(eng.counters.diff(snaps[-2]))

    eng.counters.reset()
    t0 = time.perf_counter()
    out = trainer.server_train(eng, inputs, job, progress)
    train_s = time.perf_counter() - t0
    for k, v in out.items():
        eng.save_ciphertexts(d / f"out_{k}.bin", v)
    stats = {"train_s": train_s, "per_iteration": per_iter, "seconds": {k: round(v, 2) for k, v in eng.counters.seconds.items()},
             "peak_rss_mb": peak_rss_mb(), "out_names": list(out)}
    (d / "server.json").write_text(json.dumps(stats))


# ---------------------------------------------------------------- client process
def client(iterations: int, preset: str | None, layout: str, momentum: str) -> dict:
    from hetrain import ckks
    from hetrain.models.base import choose_preset
    from hetrain.models.mlr import MLRTrainer

    Xtr, Ytr, Xte, yte, _ = load_seed()
    tr = MLRTrainer(iterations=iterations, layout=layout, momentum=momentum)
    preset = preset or choose_preset(tr, *Xtr.shape, 10).name
    plan = tr.plan(*Xtr.shape, 10, preset)
    plan.check(ckks.get_params(preset))
    t0 = time.perf_counter()
    eng = ckks.create_engine("seal", preset, rotations=plan.rotation_steps)
    keygen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    inputs, job = tr.client_encrypt(eng, Xtr, Ytr)
    encrypt_s = time.perf_counter() - t0  # includes the twin's interval check (milliseconds)
    with tempfile.TemporaryDirectory(prefix="seed_mlr_") as tmp:
        d = pathlib.Path(tmp)
        public = eng.public_bytes()
        (d / "public.bin").write_bytes(public)
        data_bytes = 0
        for k, v in inputs.items():
            eng.save_ciphertexts(d / f"in_{k}.bin", v)
            data_bytes += (d / f"in_{k}.bin").stat().st_size
        del inputs
        (d / "job.json").write_text(json.dumps({**job, "input_names": ["X", "Xt", "Y"]}))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--serve", str(d)], check=True)
        server_wall_s = time.perf_counter() - t0
        srv = json.loads((d / "server.json").read_text())
        outputs = {k: eng.load_ciphertexts(d / f"out_{k}.bin") for k in srv["out_names"]}
    t0 = time.perf_counter()
    W = tr.client_decrypt(eng, outputs, job)["W"]
    decrypt_s = time.perf_counter() - t0
    tw = tr.twin(Xtr, Ytr)["W"]
    acc = float((tr.predict_scores({"W": W}, Xte).argmax(1) == yte).mean())
    acc_twin = float((tr.predict_scores({"W": tw}, Xte).argmax(1) == yte).mean())
    return {"iterations": iterations, "preset": preset, "layout": layout, "momentum": momentum,
            "levels": f"{plan.levels_needed}/{plan.levels_available}", "iterations_that_fit": plan.iterations_that_fit,
            "rotation_keys": len(plan.rotation_steps), "keygen_s": keygen_s, "encrypt_s": encrypt_s,
            "server_train_s": srv["train_s"], "server_process_wall_s": server_wall_s, "decrypt_s": decrypt_s,
            "upload_key_bytes": len(public), "key_sizes": eng.key_sizes(), "upload_data_bytes": data_bytes,
            "server_peak_rss_mb": srv["peak_rss_mb"], "client_peak_rss_mb": peak_rss_mb(),
            "ops_per_iteration": srv["per_iteration"], "op_seconds": srv["seconds"],
            "accuracy_128_255": acc, "twin_accuracy_128_255": acc_twin,
            "twin_max_abs_diff": float(np.abs(W - tw).max()), "max_abs_weight": float(np.abs(tw).max())}


def vr_counts(iterations: int) -> dict:
    """Operation counts of both layouts on the INSECURE sim backend (counting only)."""
    from hetrain import ckks
    from hetrain.models.mlr import MLRTrainer

    Xtr, Ytr, *_ = load_seed()
    out = {}
    for layout in ("volley-revolver", "blocked"):
        tr = MLRTrainer(iterations=iterations, layout=layout)
        plan = tr.plan(*Xtr.shape, 10, "n16384-deep")
        eng = ckks.create_engine("sim", "n16384-deep", rotations=plan.rotation_steps)
        inputs, job = tr.client_encrypt(eng, Xtr, Ytr)
        snaps, per_iter = [], []

        def progress(done, total, msg):
            snaps.append(eng.counters.snapshot())
            if len(snaps) > 1:
                per_iter.append(eng.counters.diff(snaps[-2]))

        eng.counters.reset()
        tr.server_train(eng, inputs, job, progress)
        out[layout] = {"rotation_keys": len(plan.rotation_steps), "input_ciphertexts": plan.n_input_ciphertexts,
                       "ops_per_iteration": per_iter}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--client-json", help=argparse.SUPPRESS)
    ap.add_argument("--iterations", type=int, nargs="*", default=[2, 3], help="runs (default: 2 = published, 3 = default)")
    ap.add_argument("--preset", default=None, help="CKKS preset (default: the trainer's recommendation)")
    ap.add_argument("--layout", default="blocked")
    ap.add_argument("--momentum", default="none")
    ap.add_argument("--repeats", type=int, default=1, help="repeat each run; medians are printed")
    ap.add_argument("--no-counts", action="store_true", help="skip the sim operation counts of both layouts")
    a = ap.parse_args()
    if a.serve:
        return serve(a.serve)
    if a.client_json:
        cfg = json.loads(a.client_json)
        print("RESULT " + json.dumps(client(**cfg)), flush=True)
        return
    print("seed-MLR benchmark (machine shared with other developers: timings are medians of noisy runs)")
    for T in a.iterations:
        runs = []
        for _ in range(a.repeats):
            cfg = {"iterations": T, "preset": a.preset, "layout": a.layout, "momentum": a.momentum}
            res = subprocess.run([sys.executable, __file__, "--client-json", json.dumps(cfg)], check=True,
                                 capture_output=True, text=True)
            runs.append(json.loads(next(l for l in res.stdout.splitlines() if l.startswith("RESULT "))[7:]))
        _print_run(runs)
    if not a.no_counts:
        print("\n== operation counts per iteration, sim backend (INSECURE, counting only), n16384-deep, 2 iterations ==")
        for layout, c in vr_counts(2).items():
            print(f"{layout}: rotation_keys={c['rotation_keys']} input_ciphertexts={c['input_ciphertexts']}")
            for i, ops in enumerate(c["ops_per_iteration"], 1):
                print(f"  iteration {i}: " + " ".join(f"{k}={v}" for k, v in ops.items()))


def _print_run(runs: list[dict]) -> None:
    r0 = runs[0]
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    print(f"\n== {r0['iterations']} iterations, preset {r0['preset']} (levels used {r0['levels']}, "
          f"{r0['iterations_that_fit']} iterations fit), layout {r0['layout']}, momentum {r0['momentum']}, "
          f"{len(runs)} run(s) ==")
    print(f"client: keygen_s={med('keygen_s'):.2f} encrypt_s={med('encrypt_s'):.2f} decrypt_s={med('decrypt_s'):.3f} "
          f"peak_rss_mb={med('client_peak_rss_mb'):.0f}")
    print(f"server: peak_rss_mb={med('server_peak_rss_mb'):.0f} process_wall_s={med('server_process_wall_s'):.2f} "
          f"(includes loading keys and ciphertexts)")
    print(f"upload: keys_bytes={r0['upload_key_bytes']} ({r0['rotation_keys']} rotation keys; sizes {r0['key_sizes']}) "
          f"data_bytes={r0['upload_data_bytes']}")
    for i, ops in enumerate(r0["ops_per_iteration"], 1):
        print(f"ops iteration {i}: " + " ".join(f"{k}={v}" for k, v in ops.items()))
    print(f"op seconds (run 1): {r0['op_seconds']}")
    print(f"accuracy_128_255={med('accuracy_128_255'):.4f} (twin {r0['twin_accuracy_128_255']:.4f}) "
          f"max|w|={r0['max_abs_weight']:.3g}")
    print(f"twin_max_abs_diff={max(r['twin_max_abs_diff'] for r in runs):.3g}")
    print(f"server_train_s={med('server_train_s'):.2f}")


if __name__ == "__main__":
    main()
