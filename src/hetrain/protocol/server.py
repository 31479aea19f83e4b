"""The server: trains on ciphertexts with public material only.

    python -m hetrain.protocol.server JOBDIR [--progress]

It reads a job bundle (public context, ciphertexts, job json), refuses jobs whose depth plan
does not fit before doing any work, runs ``trainer.server_train`` and writes the encrypted
outputs, its timings and its peak memory back into JOBDIR. Nothing it reads can hold a secret
key (the client never writes one), and the engine it builds cannot decrypt.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import pathlib
import resource
import sys
import time
import traceback

from hetrain import ckks
from hetrain.errors import HetrainUserError
from hetrain.models.base import get_trainer

from . import files
from .errors import BundleError

log = logging.getLogger("hetrain.server")
PROGRESS_PREFIX = "@progress "


def run_job(jobdir: str | pathlib.Path, progress: bool = False) -> dict:
    """Train the job in ``jobdir``; writes outputs.bin and server_stats.json, returns the stats."""
    jobdir = pathlib.Path(jobdir)
    t0 = time.perf_counter()
    manifest, public, inputs_bytes, job = files.read_job_files(jobdir)
    engine = ckks.load_engine(public)
    if engine.has_secret_key:  # cannot happen through load_engine(public): keep the invariant explicit
        raise BundleError("refusing to run: the server engine holds a secret key")
    del public
    trainer = get_trainer(job["model"]).from_job(job)
    _check_plan(trainer, job, engine)
    inputs = files.unpack_ciphertexts(engine, inputs_bytes, "encrypted inputs")
    del inputs_bytes
    load_s = time.perf_counter() - t0
    engine.counters.reset()  # count training operations only

    report = _progress_printer() if progress else None
    t1 = time.perf_counter()
    outputs = trainer.server_train(engine, inputs, job, report)
    train_s = time.perf_counter() - t1
    counters = engine.counters.as_dict()

    t2 = time.perf_counter()
    out_bytes = files.pack_ciphertexts(engine, outputs)
    files.atomic_write(jobdir / files.OUTPUTS, out_bytes)
    stats = {"server_train_s": train_s, "server_load_s": load_s, "server_write_s": time.perf_counter() - t2,
             # ru_maxrss is in KiB on Linux: the exact peak of this (fresh) process
             "server_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
             "download_bytes": len(out_bytes), "operations": counters,
             "engine": engine.describe()}
    files.atomic_write(jobdir / files.SERVER_STATS, json.dumps(stats, indent=1))
    return stats


def _check_plan(trainer, job: dict, engine) -> None:
    """Refuse, before any work, a job whose depth or rotation keys do not fit this context."""
    shape = job.get("data_shape")
    if not shape or len(shape) != 3:
        raise BundleError("job has no data_shape [n_samples, n_features, n_classes]")
    plan = trainer.plan(*[int(s) for s in shape], engine.params)
    plan.check(engine.params)
    missing = {engine.normalize_step(s) for s in plan.rotation_steps} - engine.rotation_steps - {0}
    if missing:
        raise BundleError(f"the public context lacks Galois keys for rotation steps {sorted(missing)} that the plan needs")


def _progress_printer():
    def report(done: int, total: int, message: str = "") -> None:
        print(f"{PROGRESS_PREFIX}{int(done)} {int(total)} {message}".rstrip(), flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hetrain.protocol.server", description=__doc__.splitlines()[0])
    p.add_argument("jobdir")
    p.add_argument("--progress", action="store_true", help=f"print '{PROGRESS_PREFIX.strip()} DONE TOTAL MSG' lines")
    p.add_argument("--trainer-module", action="append", default=[],
                   help="extra module to import so its trainer registers (set by the operator, never by the job)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="server %(levelname)s: %(message)s")
    jobdir = pathlib.Path(args.jobdir)
    try:
        for mod in args.trainer_module:
            importlib.import_module(mod)
        stats = run_job(jobdir, progress=args.progress)
        log.info("trained in %.2f s", stats["server_train_s"])
        return 0
    except HetrainUserError as exc:
        _write_error(jobdir, exc)
        print(f"server error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: keep the traceback for the client to show
        _write_error(jobdir, exc, traceback.format_exc())
        traceback.print_exc()
        return 3


def _write_error(jobdir: pathlib.Path, exc: BaseException, tb: str | None = None) -> None:
    if jobdir.is_dir():
        files.atomic_write(jobdir / files.SERVER_ERROR, json.dumps(
            {"type": type(exc).__name__, "message": str(exc), "user_error": isinstance(exc, HetrainUserError),
             "traceback": tb}))


if __name__ == "__main__":
    sys.exit(main())
