"""Every trainer on every core: mlr-minibatch and mlp-diagonal server time with 1 and 2 workers.

    python bench/scaling_trainers.py                       # both workloads, workers 1,2, 3 repeats
    python bench/scaling_trainers.py --only mlp-diagonal --repeats 1 --out /tmp/tasks/bench

Workloads (real CKKS, SEAL, n16384-deep, what one modulus chain holds, so no refresh round trip
enters the server's time):
* mlr-minibatch on the seed data (bench/seed_mlr.py's load_seed: RegNet rows 0–127, 400 features,
  10 classes), batch_size 64: 2 steps (1 epoch of 2 batches), each step 4 sample groups x 13
  feature blocks (the blocked packing at 8,192 slots): tasks per sample group (forward, sigmoid,
  spread) and per feature block (gradient, momentum/decay, update).
* mlp-diagonal on Iris (120 rows, 4 → 4 → 3): the W2-only first step and one full iteration;
  the full iteration's W1 and W2 updates are its two tasks (everything before them is one chain).
  The trainer does not declare the executor (the server would not give it workers), so this one
  runs ``server_train(executor=make_executor(engine, inputs, N))`` in this process: the same tasks
  as a server would run, its workers started (and loaded) before the clock starts.

The data owner's side writes a job bundle once; then, per repeat, the SERVER PROCESS (what `hetrain
train --workers N` starts: bench/scaling.py's run_server) runs with 1 and with 2 workers in turn
(interleaved: drifts of the shared machine's load hit both). The "critical path" is the training
time with a free core per process: the larger of the server's and a worker's CPU seconds (compute
and transfers), what the shared 2-core machine's wall times cannot show while it is busy.
Printed per run and as medians: the server's training time, per-step times (mlr-minibatch), the
server's and its workers' CPU seconds, the executor's transfer seconds, ``os.getloadavg()`` beside
each figure, and whether the operation counts and the decrypted outputs (this process holds the
data owner's keys: a benchmark) are identical across worker counts. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))
from hetrain import ckks  # noqa: E402
from hetrain.models.base import get_trainer  # noqa: E402
from hetrain.protocol import files  # noqa: E402

PRESET = "n16384-deep"


def seed_data():
    from seed_mlr import load_seed

    X, Y, *_ = load_seed()
    return X, Y


def iris_data():
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True)
    X, _, y, _ = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)  # bench/iris.py's split
    return (X - X.mean(0)) / X.std(0), np.eye(3)[y]


WORKLOADS = {
    "mlr-minibatch": ("mlr-minibatch", {"epochs": 1, "batch_size": 64, "patience": 0}, seed_data),
    "mlp-diagonal": ("mlp-diagonal", {"iterations": 2}, iris_data),
}


def build(jobdir: pathlib.Path, name: str):
    """Write the workload's bundle (SEAL); returns (trainer, engine with the secret key, job, a description)."""
    model, config, data = WORKLOADS[name]
    X, Y = data()
    tr = get_trainer(model)(**config)
    plan = tr.plan(*X.shape, Y.shape[1], PRESET)
    eng = ckks.create_engine("seal", PRESET, rotations=plan.rotation_steps)
    inputs, job = tr.client_encrypt(eng, X, Y)
    job["data_shape"] = [int(X.shape[0]), int(X.shape[1]), int(Y.shape[1])]
    job["refresh"] = "none"
    files.write_job(jobdir, eng, inputs, job)
    shape = tr.packing(X.shape[1], Y.shape[1], eng.slots).describe() if model == "mlr-minibatch" else {}
    return tr, eng, job, f"{model} {config} on {X.shape[0]}x{X.shape[1]}, {Y.shape[1]} classes, {PRESET} {shape}"


def run_in_process(tr, eng, jobdir: pathlib.Path, workers: int) -> dict:
    """``server_train`` here with ``workers`` (an executor loading the job's inputs from their bytes),
    timed from its call; the keys of bench/scaling.py's run_server's statistics that ``bench`` prints."""
    import time

    from hetrain.ckks.executor import make_executor

    job = json.loads((jobdir / files.JOB).read_text())
    inputs = files.read_ciphertext_map(jobdir / files.INPUTS, eng, "encrypted inputs")
    t0 = time.perf_counter()
    with make_executor(eng, inputs, workers) as ex:
        if workers > 1:
            ex.wait_started()
        load_s = time.perf_counter() - t0
        eng.counters.reset()
        t1, c1 = time.perf_counter(), time.process_time()
        out = tr.server_train(eng, inputs, job, executor=ex)
        train_s, cpu_s = time.perf_counter() - t1, time.process_time() - c1
        timing = getattr(ex, "timing", None)
    counts = dict(eng.counters.counts)  # training operations only, before the outputs are serialised
    files.atomic_write(jobdir / files.OUTPUTS, files.pack_ciphertexts(eng, out))
    t = timing or {}
    per_worker = (t.get("worker_compute_cpu_s", 0.0) + t.get("worker_transfer_s", 0.0)) / max(1, workers - 1)
    return {"server_train_s": train_s, "server_train_cpu_s": cpu_s, "server_load_s": load_s,
            "critical_path_s": max(cpu_s, per_worker), "executor_timing": timing,
            "operations": {k: {"count": v} for k, v in counts.items()},
            "trainer": dict(getattr(tr, "run_stats", {}))}


def bench(name: str, root: pathlib.Path, counts: list[int], repeats: int) -> None:
    from scaling import run_server

    from hetrain.models.base import server_hooks

    jobdir = root / name
    tr, eng, job, what = build(jobdir, name)
    served = "executor" in server_hooks(tr)
    print(f"\n== {what}: {'server process' if served else 'server_train in this process'}, workers {counts}, "
          f"medians of {repeats}, interleaved ==", flush=True)
    runs = {w: [] for w in counts}
    outputs = {}
    for r in range(repeats):
        for w in counts:
            st = run_server(jobdir, w) if served else run_in_process(tr, eng, jobdir, w)
            st["load_avg"] = os.getloadavg()[0]
            runs[w].append(st)
            t = st.get("executor_timing") or {}
            moved = t.get("main_encode_s", 0) + t.get("main_decode_s", 0) + t.get("worker_transfer_s", 0)
            steps = st["trainer"].get("step_s")
            print(f"  repeat {r + 1} workers {w}: train {st['server_train_s']:.2f} s"
                  + (f" (steps {', '.join(f'{s:.2f}' for s in steps)} s)" if steps else "")
                  + f", server cpu {st['server_train_cpu_s']:.2f} s, "
                  f"workers' cpu {t.get('worker_compute_cpu_s', 0):.2f} s, transfers {moved:.2f} s, "
                  f"critical path {st['critical_path_s']:.2f} s (load average {st['load_avg']:.2f})", flush=True)
            if r == 0:
                out = files.unpack_ciphertexts(eng, (jobdir / files.OUTPUTS).read_bytes(), "outputs")
                outputs[w] = {k: [eng.decrypt(ct) for ct in v] for k, v in out.items()}
    med = lambda w, k: statistics.median(x[k] for x in runs[w])  # noqa: E731
    base = counts[0]
    for w in counts:
        print(f"workers {w}: train {med(w, 'server_train_s'):.2f} s "
              f"({med(base, 'server_train_s') / med(w, 'server_train_s'):.2f}x), critical path "
              f"{med(w, 'critical_path_s'):.2f} s ({med(base, 'critical_path_s') / med(w, 'critical_path_s'):.2f}x), "
              f"load {med(w, 'server_load_s'):.2f} s, load average {med(w, 'load_avg'):.2f}")
        if runs[w][0]["trainer"].get("step_s"):
            per = [statistics.median(x["trainer"]["step_s"][k] for x in runs[w])
                   for k in range(len(runs[w][0]["trainer"]["step_s"]))]
            print(f"   median per step: {', '.join(f'{s:.2f}' for s in per)} s")
        t = runs[w][0].get("executor_timing")
        if t:
            print("   executor (repeat 1): " + " ".join(f"{k}={v:.2f}" for k, v in t.items()))
    ops = [{k: v["count"] for k, v in x["operations"].items()} for rs in runs.values() for x in rs]
    print(f"operation counts identical across worker counts and repeats: {all(o == ops[0] for o in ops)} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(ops[0].items()))})")
    same = all(np.array_equal(a, b) for w in counts for k in outputs[base]
               for a, b in zip(outputs[base][k], outputs[w][k]))
    print(f"decrypted outputs bit-identical across worker counts: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=list(WORKLOADS), default=None, help="one workload (default: both)")
    ap.add_argument("--workers", default="1,2", help="worker counts, comma separated (interleaved)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="directory for the job bundles (default: a temporary one)")
    a = ap.parse_args()
    counts = [int(w) for w in a.workers.split(",")]
    root = pathlib.Path(a.out) if a.out else pathlib.Path(tempfile.mkdtemp(prefix="hetrain-scaling-trainers-"))
    print(f"hetrain scaling of mlr-minibatch and mlp-diagonal; {os.cpu_count()} cores; load average at start "
          f"{os.getloadavg()}")
    for name in [a.only] if a.only else list(WORKLOADS):
        bench(name, root, counts, a.repeats)
    print(f"\nload average at end {os.getloadavg()}")
    if not a.out:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
