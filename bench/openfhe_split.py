"""One OpenFHE bootstrap with the client/server split, each party in its own process, from files.

    python bench/openfhe_split.py DIR [--preset openfhe-boot] [--rounds 2] [--repeats 3] [--threads 2 1]
                                      [--force-insecure] [--need-gb 15] [--reuse]

(also reached as ``python bench/bootstrap.py --backend openfhe --split DIR ...``)

1. client (keygen): fresh keys for the preset; the secret key goes to DIR/client/secret.bin (0600) and
   nowhere else; the public context (context, public, relinearisation, rotation and bootstrapping keys)
   to DIR/server/public.bin through ``OpenFHEEngine.write_public`` (streamed: the keys never sit in memory
   twice); an encryption of x ~ U(-1, 1) at level 0 to DIR/server/in.bin.
2. server, once per thread count per round (interleaved: 2, 1, 2, 1, ...; OMP_NUM_THREADS): a process that
   is given DIR/server only loads the public file (``from_public_file``: no secret key), bootstraps
   ``--repeats`` times, writes the last result to DIR/server/out.bin.
3. client (decrypt), after each server run: context + public key + secret key only (no evaluation keys),
   decrypts out.bin and compares with x.

Each step prints its wall times and its own peak RSS (ru_maxrss); the load average (the machine is shared)
is printed before each step. Waits (up to 30 min) until ``--need-gb`` GB are available before each step
on N >= 2^15. Medians over rounds and repeats at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve()


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _x(slots: int):
    import numpy as np
    return np.random.default_rng(0).uniform(-1, 1, slots)


def step_keygen(d: pathlib.Path, preset: str, force_insecure: bool) -> dict:
    from hetrain import ckks
    from hetrain._atomic import atomic_write
    t0 = time.perf_counter()
    eng = ckks.create_engine("openfhe", preset, [], force_insecure=force_insecure)
    keygen = time.perf_counter() - t0
    rss_keys = _rss_gib()
    (d / "client").mkdir(parents=True, exist_ok=True)
    (d / "server").mkdir(parents=True, exist_ok=True)
    atomic_write(d / "client" / "secret.bin", eng.secret_key_bytes(), mode=0o600)
    t0 = time.perf_counter()
    size, _ = eng.write_public(d / "server" / "public.bin")
    write = time.perf_counter() - t0
    eng.save_ciphertexts(d / "server" / "in.bin", [eng.encrypt(_x(eng.slots), level=0)])
    return {"step": "keygen", "describe": eng.describe(), "keygen_s": keygen, "write_public_s": write,
            "public_bytes": size, "rss_after_keygen_gib": rss_keys, "peak_rss_gib": _rss_gib()}


def step_server(d: pathlib.Path, repeats: int, force_insecure: bool) -> dict:
    from hetrain.ckks.openfhe_backend import OpenFHEEngine
    t0 = time.perf_counter()
    eng = OpenFHEEngine.from_public_file(d / "public.bin", force_insecure=force_insecure)
    load = time.perf_counter() - t0
    assert not eng.has_secret_key and eng.can_bootstrap
    (ct,) = eng.load_ciphertexts(d / "in.bin")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = eng.bootstrap(ct)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    eng.square(out)
    mul = time.perf_counter() - t0
    eng.save_ciphertexts(d / "out.bin", [out])
    return {"step": "server", "threads": os.environ.get("OMP_NUM_THREADS", "default"), "load_keys_s": load,
            "bootstrap_s": times, "level_after": out.level, "square_at_top_s": mul, "peak_rss_gib": _rss_gib()}


def step_decrypt(d: pathlib.Path, force_insecure: bool) -> dict:
    import numpy as np

    from hetrain.ckks.openfhe_backend import OpenFHEEngine
    t0 = time.perf_counter()
    eng = OpenFHEEngine.from_public_file(d / "server" / "public.bin", (d / "client" / "secret.bin").read_bytes(),
                                         force_insecure=force_insecure, evaluation_keys=False)
    load = time.perf_counter() - t0
    (out,) = eng.load_ciphertexts(d / "server" / "out.bin")
    err = float(np.max(np.abs(eng.decrypt(out) - _x(eng.slots))))
    return {"step": "decrypt", "load_s": load, "max_abs_error": err, "level": out.level, "peak_rss_gib": _rss_gib()}


def _wait_for_memory(need_gb: float) -> None:
    import psutil
    for _ in range(15):
        avail = psutil.virtual_memory().available / 2**30
        if avail >= need_gb:
            return
        print(f"  only {avail:.1f} GB available (< {need_gb}): waiting 120 s", flush=True)
        time.sleep(120)
    raise SystemExit(f"memory did not become available ({need_gb} GB); stopping")


def _child(args: list[str], env: dict | None = None) -> dict:
    load = os.getloadavg()
    res = subprocess.run([sys.executable, str(HERE), "--step", *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if res.returncode != 0:
        raise SystemExit(f"step {args[0]} failed:\n{res.stderr[-3000:]}")
    out = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("{")][-1])
    out["load_average_before"] = [round(v, 2) for v in load]
    print(json.dumps(out), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=pathlib.Path)
    p.add_argument("--preset", default="openfhe-boot")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", nargs="*", default=["2", "1"], help="OMP_NUM_THREADS of the server, interleaved")
    p.add_argument("--force-insecure", action="store_true")
    p.add_argument("--need-gb", type=float, default=15.0)
    p.add_argument("--reuse", action="store_true", help="keep the keys of an earlier run in DIR (no keygen)")
    p.add_argument("--step", choices=("keygen", "server", "decrypt"), help=argparse.SUPPRESS)  # internal: run one party
    args = p.parse_args(argv)
    fi = args.force_insecure
    if args.step:
        kind = args.step
        r = (step_keygen(args.dir, args.preset, fi) if kind == "keygen" else
             step_server(args.dir / "server", args.repeats, fi) if kind == "server" else step_decrypt(args.dir, fi))
        print(json.dumps(r))
        return 0
    from hetrain.ckks import openfhe_backend
    if not openfhe_backend.available():
        print("openfhe is not installed (optional extra, Python 3.10): nothing to measure")
        return 0
    big = openfhe_backend.resolve(args.preset).ring_dim >= 32768
    common = [str(args.dir), "--preset", args.preset, "--repeats", str(args.repeats)] + (["--force-insecure"] if fi else [])
    if args.reuse and (args.dir / "server" / "public.bin").is_file():
        kg = None
    else:
        if big:
            _wait_for_memory(args.need_gb)
        kg = _child(["keygen"] + common)
    runs = []
    for _ in range(args.rounds):
        for t in args.threads:
            if big:
                _wait_for_memory(args.need_gb)
            s = _child(["server"] + common, {"OMP_NUM_THREADS": t})
            dec = _child(["decrypt"] + common)
            runs.append((t, s, dec))
    if kg is not None:
        print(f"\n{kg['describe']}")
        print(f"client: keygen {kg['keygen_s']:.1f} s, public context {kg['public_bytes'] / 2**30:.2f} GiB written in "
              f"{kg['write_public_s']:.1f} s, peak RSS {kg['peak_rss_gib']:.2f} GiB")
    for t in args.threads:
        mine = [(s, d) for tt, s, d in runs if tt == t]
        boots = [b for s, _ in mine for b in s["bootstrap_s"]]
        print(f"server, OMP_NUM_THREADS={t}: bootstrap median {statistics.median(boots):.2f} s "
              f"(n={len(boots)}, {args.rounds} interleaved rounds), keys loaded in "
              f"{statistics.median(s['load_keys_s'] for s, _ in mine):.1f} s, peak RSS "
              f"{max(s['peak_rss_gib'] for s, _ in mine):.2f} GiB, level after {mine[0][0]['level_after']}; "
              f"client max abs error {max(d['max_abs_error'] for _, d in mine):.2e} "
              f"(client decrypt peak RSS {max(d['peak_rss_gib'] for _, d in mine):.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
