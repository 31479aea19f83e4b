"""Load on the training service: N concurrent clients, a `kill -9` of the service, a restart.

    python bench/service_load.py                      # 8 clients, sim backend
    python bench/service_load.py --clients 4 --backend seal --kill-after 20

Each client is its own process running ``hetrain.protocol.fit(..., server=URL)`` on a small job
(mixed: full-batch mlr on iris or breast_cancer; mini-batch mlr with client refresh over HTTP on
wine and iris, 30-40 epochs: hundreds of round trips, so the kill lands in the middle of them). The service (`hetrain serve`, its own process) is SIGKILLed after ``--kill-after``
seconds and started again on the same work directory and port; clients keep retrying their status
requests and refresh answers meanwhile (transport: up to 120 s), and the restarted service resumes
the jobs it finds. Every job must end either with the SAME weights as the same job run locally
(the sim backend has no noise: identical arithmetic; SEAL: within the twin tolerance) or with a
clear failed status; nothing may be mixed up (each client checks its model against its own local
run) or lost (every client reports). Prints one line per client, then counts and times.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
JOBS = [("iris", "mlr", {"iterations": 2, "sigmoid": "deg3:16"}, "none"),
        ("wine", "mlr", {"epochs": 30, "batch_size": 32, "patience": 0}, "client"),
        ("breast_cancer", "mlr", {"iterations": 1, "sigmoid": "deg3:32"}, "none"),
        ("iris", "mlr", {"epochs": 40, "batch_size": 32, "patience": 0}, "client")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(workdir: pathlib.Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src")] + sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "hetrain.cli.main", "serve", "--workdir", str(workdir),
                             "--port", str(port), "--workers", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(workdir.parent / "service.log", "ab"))
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the service did not start")


def client(i: int, url: str, backend: str, out: mp.Queue) -> None:
    from hetrain.data import load_builtin
    from hetrain.protocol import fit

    name, model, config, refresh = JOBS[i % len(JOBS)]
    X, y = load_builtin(name)
    options = {"plan": False} if refresh == "client" else {}
    t0 = time.perf_counter()
    try:
        remote = fit(X, y, model, config, refresh=refresh, backend=backend, seed=i, progress=False, server=url,
                     **options)
        wall = time.perf_counter() - t0
        local = fit(X, y, model, config, refresh=refresh, backend=backend, seed=i, progress=False, **options)
        diff = max(float(np.max(np.abs(remote.model.weights[k] - local.model.weights[k]))) for k in local.model.weights)
        out.put({"client": i, "job": f"{name}/{model}/{refresh}", "status": "done", "wall_s": wall,
                 "accuracy": remote.model.accuracy(X, y), "local_accuracy": local.model.accuracy(X, y),
                 "max_diff_vs_local": diff})
    except Exception as exc:  # a clear failure is an allowed outcome; it must say why
        out.put({"client": i, "job": f"{name}/{model}/{refresh}", "status": "failed",
                 "wall_s": time.perf_counter() - t0, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--backend", default="sim", choices=("sim", "seal"))
    p.add_argument("--kill-after", type=float, default=1.0,
                   help="seconds after half the clients' jobs have reached the service")
    p.add_argument("--down", type=float, default=3.0, help="seconds the service stays down")
    args = p.parse_args(argv)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hetrain-load-"))
    workdir, port = tmp / "service", free_port()
    url = f"http://127.0.0.1:{port}"
    service = start_service(workdir, port)
    out: mp.Queue = mp.get_context("spawn").Queue()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=client, args=(i, url, args.backend, out)) for i in range(args.clients)]
    t0 = time.perf_counter()
    for pr in procs:
        pr.start()
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # the clients import and plan first: wait for their jobs to arrive
        counts = httpx.get(f"{url}/v1/health", timeout=5).json()["jobs"]
        if sum(counts.values()) >= max(1, args.clients // 2):
            break
        time.sleep(0.2)
    time.sleep(args.kill_after)
    service.send_signal(signal.SIGKILL)
    service.wait()
    killed_at = time.perf_counter() - t0
    time.sleep(args.down)
    service = start_service(workdir, port)
    restarted_at = time.perf_counter() - t0
    results = [out.get(timeout=1800) for _ in procs]
    for pr in procs:
        pr.join(timeout=60)
    total = time.perf_counter() - t0
    service.terminate()
    service.wait(timeout=30)
    print(f"service load: {args.clients} clients, backend {args.backend}; service SIGKILLed at {killed_at:.1f} s, "
          f"restarted at {restarted_at:.1f} s; all clients ended at {total:.1f} s")
    for r in sorted(results, key=lambda r: r["client"]):
        if r["status"] == "done":
            print(f"  client {r['client']:2d} {r['job']:28s} done   {r['wall_s']:6.1f} s  accuracy {r['accuracy']:.4f} "
                  f"(local {r['local_accuracy']:.4f}), max |remote - local| {r['max_diff_vs_local']:.1e}")
        else:
            print(f"  client {r['client']:2d} {r['job']:28s} FAILED {r['wall_s']:6.1f} s  {r['error']}")
    done = [r for r in results if r["status"] == "done"]
    same = [r for r in done if r["max_diff_vs_local"] <= (1e-9 if args.backend == "sim" else 1e-2)]
    print(f"done {len(done)}, failed {len(results) - len(done)}, lost {args.clients - len(results)}; "
          f"same model as the local run: {len(same)} of {len(done)}; median wall "
          f"{statistics.median(r['wall_s'] for r in results):.1f} s")
    return 0 if len(results) == args.clients and len(same) == len(done) else 1


if __name__ == "__main__":
    sys.exit(main())
