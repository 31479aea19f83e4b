"""Every core: seed-MLR server time with 1 and N workers, the job-loading hot spot before/after,
upload bytes, and a model of training time against cores.

    python bench/scaling.py                          # seed-MLR, 3 iterations, n16384-deep, workers 1,2, 3 repeats
    python bench/scaling.py --repeats 1 --workers 1,2 --out /tmp/hetrain-scaling
    python bench/scaling.py --ray-only                # Ray local vs the process pool only (needs hetrain[ray])
    python bench/scaling.py --workload nn             # seed-NN: 400-32-16-10, 1 iteration, n32768 (~8 GB)
    python bench/scaling.py --workload minibatch      # mini-batch mlr: 2 steps of 64 rows, n16384-deep

Seed-NN (``--workload nn``): the same rows, the network 400-32-16-10 (mlp-dvr, bench/seed_nn.py's
standardisation and learning rate), 1 iteration (``--iterations``), real CKKS (SEAL) at n32768 (an
iteration takes 14 levels); every server process holds the ~3 GB of keys, so 2 workers take ~8 GB.

Mini-batch mlr (``--workload minibatch``): the same rows, 2 steps (``--iterations``) of 64 rows, each
4 sample groups x 13 feature blocks of the blocked packing (tasks per sample group, then per block).

Seed-MLR: RegNet rows 0–127 (bench/seed_mlr.py's data and standardisation), 10 classes, 3 iterations,
real CKKS (SEAL). The data owner's side encrypts once into a job bundle; then, for each repeat, the
SERVER PROCESS (``python -m hetrain.protocol.server_main JOB --workers N``, exactly what ``hetrain
train`` starts) runs with every worker count in turn (interleaved: load drifts hit both alike).
Printed per worker count: medians of the process wall time, the training time, the loading time,
and CPU seconds (the server and its workers, from getrusage of the waited children). On a shared
machine wall times depend on the other load (printed with ``os.getloadavg``); the "critical path"
figure is the training time the same work would take with a free core per process: the largest of
the main process's training CPU and each worker's CPU (compute + its transfers), a lower bound.

Ray local vs the process pool (``--ray``, ``--ray-only``): the same server process with the same
worker count (default 2), once with ``--executor process`` and once with ``--executor ray
--ray-address local`` (a Ray of this machine's CPUs started inside the server process, which ships
the job's files to its actors through the object store), interleaved, medians of the repeats;
Ray's start-up and the actors' loading count as loading time, not training time.

Upload: the data owner encrypts symmetrically (secret key) and uploads each ciphertext seeded, (c0,
PRNG seed) instead of (c0, c1); printed beside the size the same ciphertexts have in full.

Hot spot "job loading": the server's loading path as it was (every file hashed whole, then every
container part and every ciphertext's payload hashed again, the public context unpacked twice, SEAL
objects through temporary files in /dev/shm) and as it is (one SHA-256 pass per file, parts not
re-hashed, an anonymous memfd), interleaved, medians.

Model of time against cores: every ``map`` of the executor is a phase of independent tasks (its task
count and its serial task seconds come from a serial in-process run with a timing executor); the
rest of training is serial. With p cores on one machine a phase takes ceil(tasks/p) task times
plus the transfer of its shared ciphertexts and results (per-ciphertext save+load seconds measured
here); across M machines of 16 cores the shared ciphertexts also cross a network (assumed 10 Gbit/s,
one copy per machine, no overlap of transfer and compute). Stated as assumptions in the output.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))
from hetrain import ckks  # noqa: E402
from hetrain.ckks import container, seal_backend  # noqa: E402
from hetrain.ckks.executor import SerialExecutor  # noqa: E402
from hetrain.models.base import get_trainer  # noqa: E402
from hetrain.models.mlp_dvr import MLPTrainer  # noqa: E402
from hetrain.models.mlr import MLRTrainer  # noqa: E402
from hetrain.models.mlr_minibatch import MiniBatchMLR  # noqa: E402
from hetrain.protocol import files  # noqa: E402
from hetrain.protocol.server import server_argv  # noqa: E402

NETWORK_BYTES_PER_S = 10e9 / 8  # assumption of the multi-machine model: 10 Gbit/s between machines


def build_mlr_job(jobdir: pathlib.Path, preset: str, iterations: int, workload: str = "mlr") -> dict:
    """Encrypt the seed workload (``workload`` "mlr": seed-MLR; "nn": seed-NN 400-32-16-10) into ``jobdir``."""
    from seed_mlr import load_seed

    Xtr, Ytr, *_ = load_seed()
    if workload == "nn":  # bench/seed_nn.py's network and step
        tr = MLPTrainer(hidden=[32, 16], iterations=iterations, learning_rate=2.0)
    elif workload == "minibatch":  # `iterations` steps of 64 rows (4 sample groups x 13 feature blocks each)
        tr = MiniBatchMLR(epochs=max(1, iterations // 2), batch_size=64, patience=0)
    else:
        tr = MLRTrainer(iterations=iterations)
    plan = tr.plan(*Xtr.shape, Ytr.shape[1], preset)
    eng = ckks.create_engine("seal", preset, rotations=plan.rotation_steps)
    inputs, job = tr.client_encrypt(eng, Xtr, Ytr)
    job["data_shape"] = [Xtr.shape[0], Xtr.shape[1], Ytr.shape[1]]
    job["refresh"] = "none"  # what one modulus chain holds: no refresh round trip in the server's time
    sizes = files.write_job(jobdir, eng, inputs, job)
    seeded = sum(len(eng._ct_to_bytes(c)) for v in inputs.values() for c in v)
    unseeded = sum(len(seal_backend._seal_to_bytes(c.data)) for v in inputs.values() for c in v)  # (c0, c1)
    return {"rows": Xtr.shape[0], "sizes": sizes, "n_inputs": sum(len(v) for v in inputs.values()),
            "seeded_bytes": seeded, "unseeded_bytes": unseeded,
            "input_levels": {k: sorted({c.level for c in v}) for k, v in inputs.items()}}


def run_server(jobdir: pathlib.Path, workers: int, executor: str | None = None) -> dict:
    for name in files.SERVER_FILES:
        (jobdir / name).unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    ray = {"executor": "ray", "ray_address": "local"} if executor == "ray" else {}
    subprocess.run(server_argv(jobdir, progress=False, workers=workers, **ray), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats = json.loads((jobdir / files.SERVER_STATS).read_text())
    stats["process_wall_s"] = wall
    stats["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    t = stats.get("executor_timing") or {}
    per_worker = (t.get("worker_compute_cpu_s", 0.0) + t.get("worker_transfer_s", 0.0)) / max(1, workers - 1)
    stats["critical_path_s"] = max(stats["server_train_cpu_s"], per_worker)
    return stats


def ray_vs_processes(jobdir: pathlib.Path, workers: int, repeats: int) -> None:
    """Ray local vs the process pool, ``workers`` each, interleaved; prints the medians."""
    print(f"\n== Ray local vs process pool, {workers} workers, medians of {repeats}, interleaved ==")
    runs = {"process": [], "ray": []}
    for r in range(repeats):
        for kind in runs:
            st = run_server(jobdir, workers, kind)
            st["load_avg"] = os.getloadavg()[0]
            runs[kind].append(st)
            print(f"  repeat {r + 1} {kind:7s}: train {st['server_train_s']:.2f} s load {st['server_load_s']:.2f} s "
                  f"wall {st['process_wall_s']:.2f} s (load average {st['load_avg']:.2f})", flush=True)
    med = lambda k, key: statistics.median(x[key] for x in runs[k])  # noqa: E731
    for kind in runs:
        t = med(kind, "server_train_s")
        print(f"{kind:7s}: train {t:.2f} s ({med('process', 'server_train_s') / t:.2f}x the process pool's speed) "
              f"load {med(kind, 'server_load_s'):.2f} s process wall {med(kind, 'process_wall_s'):.2f} s")
    counts = [{k: v["count"] for k, v in st["operations"].items()} for rs in runs.values() for st in rs]
    print(f"operation counts identical, Ray and processes: {all(c == counts[0] for c in counts)}")


# ---------------------------------------------------------------------- hot spot: loading
def load_before(jobdir: pathlib.Path):
    saved = seal_backend._load_via_file
    seal_backend._load_via_file = seal_backend._load_via_tempfile  # every object through a temporary file
    try:
        manifest, public, inputs_path, _ = files.read_job_files(jobdir)  # every file hashed whole
        container.unpack(public, expect_kind="public_context")  # load_engine unpacked it for its header
        engine = ckks.load_engine(public)  # key parts hashed again
        return files.read_ciphertext_map(inputs_path, engine, "inputs")  # map parts and payloads hashed again
    finally:
        seal_backend._load_via_file = saved


def load_after(jobdir: pathlib.Path):
    return files.load_job_public(jobdir)[1]


def hotspot_loading(jobdir: pathlib.Path, repeats: int) -> dict:
    times = {"before": [], "after": []}
    for _ in range(repeats):
        for name, fn in (("before", load_before), ("after", load_after)):
            t0 = time.perf_counter()
            fn(jobdir)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# ---------------------------------------------------------------------- model of time against cores
class TimingExecutor(SerialExecutor):
    """Serial, recording every map: (function, tasks, shared ciphertexts, seconds)."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.phases: list[dict] = []

    def map(self, fn, tasks, shared=()):
        t0 = time.perf_counter()
        out = super().map(fn, tasks, shared)
        n_shared = sum(len(x) if isinstance(x, list) else 0 for x in shared)
        self.phases.append({"fn": fn.__name__, "tasks": len(tasks), "shared_cts": n_shared,
                            "seconds": time.perf_counter() - t0})
        return out


def phase_profile(jobdir: pathlib.Path) -> tuple[float, list[dict], float, float, int]:
    engine, inputs = files.load_job_public(jobdir)
    job = json.loads((jobdir / files.JOB).read_text())
    trainer = get_trainer(job["model"]).from_job(job)
    ex = TimingExecutor(engine)
    t0 = time.perf_counter()
    trainer.server_train(engine, inputs, job, executor=ex)
    total = time.perf_counter() - t0
    ct = max((c for v in inputs.values() for c in v), key=lambda c: c.level)  # transfer cost at the top level
    # used: an upper bound for the shared ciphertexts
    raw = engine._ct_to_bytes(ct)
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        engine._ct_to_bytes(ct)
    save_s = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        engine._ct_from_bytes(raw, ct.level)
    load_s = (time.perf_counter() - t0) / reps
    return total, ex.phases, save_s, load_s, len(raw)


def model(total: float, phases: list[dict], save_s: float, load_s: float, ct_bytes: int, cores: int,
          machines: int = 1) -> float:
    serial = total - sum(p["seconds"] for p in phases)
    t = serial
    for p in phases:
        task = p["seconds"] / p["tasks"]
        rounds = math.ceil(p["tasks"] / cores)
        if cores > 1:  # shared ciphertexts: saved once here, loaded by every worker (in parallel); each
            # worker saves its results, this process loads every result it did not compute itself
            t += p["shared_cts"] * (save_s + load_s) + rounds * save_s + (p["tasks"] - rounds) * load_s
            if machines > 1:
                t += p["shared_cts"] * ct_bytes * machines / NETWORK_BYTES_PER_S
        t += rounds * task
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("mlr", "nn", "minibatch"), default="mlr",
                    help="mlr: seed-MLR (default); nn: seed-NN 400-32-16-10 (mlp-dvr); minibatch: mini-batch "
                         "mlr on the same rows, steps of 64 rows")
    ap.add_argument("--preset", default=None, help="default n16384-deep (mlr), n32768 (nn)")
    ap.add_argument("--iterations", type=int, default=None, help="default 3 (mlr), 1 (nn), 2 steps (minibatch)")
    ap.add_argument("--workers", default="1,2", help="worker counts, comma separated (interleaved)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="directory for the job bundle (default: a temporary one)")
    ap.add_argument("--ray", action="store_true", help="also compare a local Ray with the process pool "
                                                       "(pip install 'hetrain[ray]')")
    ap.add_argument("--ray-only", action="store_true", help="only that comparison (after building the job)")
    ap.add_argument("--ray-workers", type=int, default=2, help="workers of the Ray comparison (default 2)")
    a = ap.parse_args()
    nn = a.workload == "nn"
    a.preset = a.preset or ("n32768" if nn else "n16384-deep")
    a.iterations = a.iterations or (1 if nn else 2 if a.workload == "minibatch" else 3)
    counts = [int(w) for w in a.workers.split(",")]
    root = pathlib.Path(a.out) if a.out else pathlib.Path(tempfile.mkdtemp(prefix="hetrain-scaling-"))
    jobdir = root / a.workload
    what = {"nn": "seed-NN 400-32-16-10", "minibatch": "mini-batch mlr (64 rows per step)"}.get(a.workload, "seed-MLR")
    print(f"hetrain scaling benchmark: {what}, {a.iterations} iterations, {a.preset}; {os.cpu_count()} cores; "
          f"load average at start {os.getloadavg()}")
    # in a child process: SEAL's memory pool keeps what the data owner's engine used (~6 GB for seed-NN)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        info = pool.submit(build_mlr_job, jobdir, a.preset, a.iterations, a.workload).result()
    s = info["sizes"]
    upload = s[files.PUBLIC_CONTEXT] + s[files.INPUTS] + s[files.JOB]
    print(f"\n== upload ==\n{info['n_inputs']} input ciphertexts at levels {info['input_levels']}; "
          f"keys {s[files.PUBLIC_CONTEXT]} B {s['key_parts']}; ciphertexts {s[files.INPUTS]} B; total {upload} B; "
          f"{s[files.INPUTS] / info['rows']:.0f} B of ciphertexts per training row ({upload / info['rows']:.0f} B with keys)")
    print(f"SEAL payloads: {info['seeded_bytes']} B seeded (symmetric encryption by the data owner) vs "
          f"{info['unseeded_bytes']} B as full (c0, c1) ciphertexts ({info['seeded_bytes'] / info['unseeded_bytes']:.2f}x)")
    if a.ray or a.ray_only:
        ray_vs_processes(jobdir, a.ray_workers, a.repeats)
    if a.ray_only:
        print(f"\nload average at end {os.getloadavg()}")
        if not a.out:
            shutil.rmtree(root, ignore_errors=True)
        return

    if not nn:  # (seed-NN's keys are 10x larger: the loading path is the same)
        print(f"\n== hot spot: job loading (server process start-up), medians of {a.repeats}, interleaved ==")
        h = hotspot_loading(jobdir, a.repeats)
        print(f"before {h['before']:.2f} s   after {h['after']:.2f} s   ({h['before'] / h['after']:.2f}x)   "
              f"load average {os.getloadavg()[0]:.2f}")

    print(f"\n== server process, workers {counts}, medians of {a.repeats}, interleaved ==")
    runs = {w: [] for w in counts}
    for r in range(a.repeats):
        for w in counts:
            st = run_server(jobdir, w)
            st["load_avg"] = os.getloadavg()[0]
            runs[w].append(st)
            print(f"  repeat {r + 1} workers {w}: train {st['server_train_s']:.2f} s load {st['server_load_s']:.2f} s "
                  f"wall {st['process_wall_s']:.2f} s cpu {st['process_cpu_s']:.2f} s critical path "
                  f"{st['critical_path_s']:.2f} s (load average {st['load_avg']:.2f})", flush=True)
    med = lambda w, k: statistics.median(x[k] for x in runs[w])  # noqa: E731
    base = counts[0]
    for w in counts:
        print(f"workers {w}: train {med(w, 'server_train_s'):.2f} s ({med(base, 'server_train_s') / med(w, 'server_train_s'):.2f}x) "
              f"load {med(w, 'server_load_s'):.2f} s (start-up {med(w, 'server_load_s') / med(w, 'server_train_s'):.0%} of training) "
              f"process wall {med(w, 'process_wall_s'):.2f} s cpu {med(w, 'process_cpu_s'):.2f} s; critical path "
              f"{med(w, 'critical_path_s'):.2f} s ({med(base, 'critical_path_s') / med(w, 'critical_path_s'):.2f}x)")
        t = runs[w][0].get("executor_timing")
        if t:
            print("   executor (repeat 1): " + " ".join(f"{k}={v:.2f}" for k, v in t.items()))
    ops1 = runs[base][0]["operations"]
    print(f"\n== operations (workers {base}, repeat 1): count, seconds ==")
    for k, v in sorted(ops1.items(), key=lambda kv: -kv[1]["seconds"]):
        print(f"  {k:16s} {v['count']:6d} {v['seconds']:8.2f}")
    same = all({k: v["count"] for k, v in r["operations"].items()} == {k: v["count"] for k, v in ops1.items()}
               for rs in runs.values() for r in rs)
    print(f"operation counts identical across worker counts: {same}")

    print("\n== model of training time against cores (serial in-process profile of the task graph) ==")
    total, phases, save_s, load_s, ct_bytes = phase_profile(jobdir)
    print(f"serial training {total:.2f} s; {len(phases)} phases: "
          + ", ".join(f"{p['fn']}[{p['tasks']} tasks, {p['seconds']:.2f} s]" for p in phases))
    print(f"per ciphertext transfer: save {1000 * save_s:.1f} ms, load {1000 * load_s:.1f} ms, {ct_bytes} B")
    print("assumptions: one core per process, a phase's tasks equal in cost, the serial remainder on one core, "
          f"transfers not overlapped with compute, {NETWORK_BYTES_PER_S * 8 / 1e9:g} Gbit/s between machines")
    for cores, machines in ((1, 1), (2, 1), (8, 1), (16, 1), (64, 1), (64, 4)):
        m = model(total, phases, save_s, load_s, ct_bytes, cores, machines)
        print(f"  {cores:3d} cores on {machines} machine(s): {m:6.2f} s ({total / m:.2f}x)")
    print("published C++ system: 64 vCPUs (its figures are not in this repository; compare by hand)")
    print(f"\nload average at end {os.getloadavg()}")
    if not a.out:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
