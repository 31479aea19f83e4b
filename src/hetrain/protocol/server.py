"""The server: trains on ciphertexts with public material only.

    python -m hetrain.protocol.server_main JOBDIR [--progress] [--channel SOCKET [--channel-timeout S]] [--resume]
        [--workers N] [--executor process|ray [--ray-address auto|local|HOST:PORT]]

(server_main.py is the entry module: this one is imported by the package, so it is not run with
``python -m``; ``server_argv`` builds the command for every caller.) Exit status: 0 done, 2 a
refused job or a clear error (one line on stderr, JOBDIR/server_error.json), 3 a bug (traceback),
4 the process reading its output went away (one line; e.g. the parent died mid-training), 5 out of
memory (e.g. the service's limit, RLIMIT_DATA: one line naming it).

It reads a job bundle (public context, ciphertexts, job json), refuses jobs whose depth plan
does not fit before doing any work, runs ``trainer.server_train`` and writes the encrypted
outputs, its timings and its peak memory back into JOBDIR. Nothing it reads can hold a secret
key (the client never writes one), and the engine it builds cannot decrypt.

Past one modulus chain (job["refresh"]): "client" listens on the refresh channel (``--channel
SOCKET``, from refresh_channel.channel_location(JOBDIR); refresh_channel.py), where data-owner
sessions attach one after another, and passes it to server_train as the ``refresh`` hook (and
``monitor``); while no session is attached it waits ``--channel-timeout`` seconds, then fails.
"bootstrap" refreshes with engine.bootstrap (and still uses the channel, if given, as
``monitor``). Trainers whose ``capabilities`` include "checkpoint" (every built-in one) save
their state in JOBDIR/state.ckpt after every completed iteration, whatever the refresh mode; a
killed job started again with ``--resume`` continues after the last saved iteration. Without
``--resume`` a job directory that already holds state.ckpt is refused before any work (exit 2), so
an unfinished job is never restarted (or a finished one retrained) by accident.

``--workers N`` (default: every core): trainers whose ``capabilities`` include "executor" run their
circuits' independent tasks on N worker processes (hetrain.ckks.executor), each loading the job's
public context and inputs once; the results and operation counts are those of the serial run (N = 1).
``--executor ray`` runs them on the actors of a Ray cluster instead (hetrain.ckks.ray_executor; the
job's public files travel once through Ray's object store; ``--ray-address`` auto: the cluster that
``ray start`` set up here, local: a Ray of this machine's CPUs started for this job, or HOST:PORT).

Every write to a pipe or socket whose reader may be gone (progress lines on stdout, the refresh
channel, log lines) ends in one handler in ``main``: one line, no traceback, exit 4.

Test hook: with HETRAIN_SERVER_AUDIT=FILE the process and its worker processes append "PID PATH"
for every path they open to FILE (a Python audit hook), so tests can prove what the server reads.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import pathlib
import resource
import sys
import time
import traceback

from hetrain import ckks
from hetrain.ckks.container import read_header_file
from hetrain.ckks.executor import EXECUTORS, default_workers, make_executor
from hetrain._streams import to_devnull
from hetrain._format import plain
from hetrain.errors import HetrainUserError
from hetrain.models.base import DepthPlanError, get_trainer, server_hooks

from . import files
from .bundle_check import check_bundle
from .checkpoint import StateCheckpoint, job_fingerprint
from .errors import BundleError, ReaderGoneError
from .events import write_progress
from .refresh_channel import DEFAULT_TIMEOUT_S, ChannelStats, ServerChannel

log = logging.getLogger("hetrain.server")
CHECKPOINT = files.CHECKPOINT
REFRESH_MODES = ("none", "client", "bootstrap")
ENTRY_MODULE = "hetrain.protocol.server_main"  # what ``python -m`` runs (never imported by the package)
EXIT_READER_GONE = 4
LOCAL_RAY_STORE_SPARE = 256 * 2 ** 20  # bytes of a local Ray's object store beyond twice the job's files


def server_argv(jobdir, *, progress: bool = True, trainer_modules=(), channel=None,
                channel_timeout: float | None = None, resume: bool = False, workers: int | None = None,
                executor: str | None = None, ray_address: str | None = None) -> list[str]:
    """The server process's command line; the one place that names its entry module. ``channel``:
    the Unix socket to LISTEN on for the data owner (channel_location(jobdir)); ``resume``: continue
    from JOBDIR/state.ckpt (a job killed before it finished); ``executor``, ``ray_address``: where the
    independent tasks run (``--executor``, ``--ray-address``; None: the server's default, processes)."""
    cmd = [sys.executable, "-m", ENTRY_MODULE, os.fspath(jobdir)]
    if progress:
        cmd.append("--progress")
    if resume:
        cmd.append("--resume")
    for mod in trainer_modules:
        cmd += ["--trainer-module", mod]
    if channel is not None:
        cmd += ["--channel", os.fspath(channel)]
    if channel_timeout is not None:
        cmd += ["--channel-timeout", repr(float(channel_timeout))]
    if workers is not None:
        cmd += ["--workers", str(int(workers))]
    if executor is not None:
        cmd += ["--executor", executor]
    if ray_address is not None:
        cmd += ["--ray-address", ray_address]
    return cmd


class BootstrapRefresh:
    """The ``refresh`` hook by bootstrapping: no interaction (a backend that can bootstrap). A trainer
    that also bootstraps inside its iterations (models/inner_boot.py) reports those with ``add_bootstraps``,
    so the statistics count every bootstrap."""

    via_client = False

    def __init__(self, engine, stats: ChannelStats) -> None:
        self.engine, self.stats = engine, stats

    def add_bootstraps(self, n: int) -> None:
        """Count ``n`` ciphertexts the trainer bootstrapped inside an iteration."""
        self.stats.bootstraps += int(n)

    def __call__(self, state: dict, step: int | None = None) -> dict:
        out = {}
        for k, v in state.items():
            many = isinstance(v, (list, tuple))
            cts = [self.engine.bootstrap(ct) for ct in (v if many else [v])]
            self.stats.bootstraps += len(cts)
            out[k] = cts if many else cts[0]
        return out


def run_job(jobdir: str | pathlib.Path, progress: bool = False, channel_path: str | None = None,
            channel_timeout: float = DEFAULT_TIMEOUT_S, resume: bool = False, workers: int | None = None,
            executor: str = "process", ray_address: str = "auto") -> dict:
    """Train the job in ``jobdir``; writes outputs.bin and server_stats.json, returns the stats.

    ``resume``: continue from JOBDIR/state.ckpt if there is one (else start, saying so on stderr);
    without it a JOBDIR that holds state.ckpt is refused (BundleError) before any work. ``workers``:
    processes for the trainer's independent tasks (None: every core; 1: all in this process);
    ``executor`` "ray": on the Ray cluster at ``ray_address`` instead (None workers: its CPUs)."""
    jobdir = pathlib.Path(jobdir)
    t0 = time.perf_counter()
    ckpt_path = jobdir / CHECKPOINT
    if not resume and ckpt_path.exists():
        raise BundleError(f"{jobdir} already holds a training checkpoint ({CHECKPOINT}) from an earlier run of "
                          f"this job: start the server with --resume to continue it, or delete {ckpt_path} to "
                          "start over")
    # files as they are, checksums verified (inputs.bin's as it is read below: one hashing pass)
    manifest, public, inputs_path, job = files.read_job_files(jobdir, defer_inputs=True, public_path=True)
    # every claim (shapes, counts, sizes, levels, rotation steps) against the content, before anything is
    # sized from one (bundle_check.py)
    check_bundle(jobdir)
    trainer = get_trainer(job["model"]).from_job(job)
    # the workers start now and load the same files, each once, while this process loads its own copy
    # (keys first: the longest part); a backend whose tasks stay in one process (OpenFHE) starts none
    executor, kind = None, executor
    backend = ckks.registry.by_container_name(read_header_file(public, expect_kind="public_context").get("backend"))
    if "executor" in server_hooks(trainer) and backend is not None and backend.process_workers:
        # Ray's actors may run on machines without JOBDIR: the files' bytes go through its object store
        loader = ((files.load_job_public_bytes, files.job_public_bytes(jobdir)) if kind == "ray"
                  else (_load_in_worker, (os.fspath(jobdir),)))
        ray_options = None
        if kind == "ray" and ray_address == "local":  # a Ray of its own: its object store sized to what it ships
            ray_options = {"object_store_bytes": 2 * sum(len(b) for b in loader[1][:2]) + LOCAL_RAY_STORE_SPARE}
        executor = make_executor(None, None, workers, loader=loader, kind=kind, ray_address=ray_address,
                                 ray_options=ray_options)
        del loader
    try:
        # parameters below 128 bits only where the data owner forced them (recorded in the context): INSECURE
        # logs; from the file (OpenFHE reads keys of gigabytes from it without holding them as bytes); its
        # SHA-256 was checked
        engine = ckks.load_engine_file(public, verify=False)
        if engine.has_secret_key:  # cannot happen through load_engine(public): keep the invariant explicit
            raise BundleError("refusing to run: the server engine holds a secret key")
        del public
        _check_galois_keys(engine)
        mode = job.get("refresh", "none")
        hooks = _refresh_hooks(trainer, mode, engine, jobdir, channel_path, channel_timeout,
                               job_id=str(job.get("job_id") or manifest["key_id"]))
        _check_plan(trainer, job, engine, mode)
        if "checkpoint" in server_hooks(trainer):  # whatever the refresh mode
            hooks["checkpoint"] = StateCheckpoint(ckpt_path, engine, job_fingerprint(manifest))
            if resume and hooks["checkpoint"].check() is None:  # other keys or another job: refused here
                log.warning("--resume: no checkpoint %s yet, starting from the beginning", ckpt_path)
        elif resume:
            log.warning("--resume: model %s does not checkpoint, starting from the beginning", trainer.name)
        if executor is not None:
            executor.set_engine(engine)
            hooks["executor"] = executor
        inputs = files.read_ciphertext_map(inputs_path, engine, "encrypted inputs",
                                           sha256=manifest["sha256"][files.INPUTS])
        if executor is not None and executor.workers > 1:
            executor.set_inputs(inputs)
            executor.wait_started()
    except BaseException:
        if executor is not None:
            executor.close()
        raise
    load_s = time.perf_counter() - t0
    engine.counters.reset()  # count training operations only

    report = _progress_printer() if progress else None
    channel = hooks.pop("_channel", None)
    rstats = hooks.pop("_stats")
    t1, c1 = time.perf_counter(), time.process_time()
    try:
        outputs = trainer.server_train(engine, inputs, job, report, **hooks)
    except BaseException:
        if channel is not None:
            channel.abort()  # an attached data owner sees the channel end, then reads our server_error.json
        raise
    finally:
        if executor is not None:
            executor.close()
    if channel is not None:
        channel.close()  # "done": the data owner's session ends; the socket is removed
    train_s, train_cpu_s = time.perf_counter() - t1, time.process_time() - c1
    counters = engine.counters.as_dict()

    t2 = time.perf_counter()
    out_bytes = files.pack_ciphertexts(engine, outputs)
    files.atomic_write(jobdir / files.OUTPUTS, out_bytes)
    stats = {"server_train_s": train_s, "server_load_s": load_s, "server_write_s": time.perf_counter() - t2,
             "server_peak_rss_bytes": peak_rss_bytes(),
             "download_bytes": len(out_bytes), "operations": counters,
             "engine": engine.describe(), "engine_has_secret_key": engine.has_secret_key,
             "workers": 1 if executor is None else executor.workers, "server_train_cpu_s": train_cpu_s,
             "executor": type(executor).__name__ if executor is not None else None,
             "ray_nodes": getattr(executor, "nodes", None),
             "executor_timing": getattr(executor, "timing", None),
             "refresh": {"mode": mode, **rstats.as_dict()},
             "trainer": {"resumed_from": 0, **getattr(trainer, "run_stats", {})}}
    files.atomic_write(jobdir / files.SERVER_STATS, json.dumps(stats, indent=1))
    return stats


def _refresh_hooks(trainer, mode: str, engine, jobdir: pathlib.Path, channel_path, timeout: float,
                   job_id: str = "") -> dict:
    """server_train keyword hooks for the job's refresh mode (checked before any work)."""
    if mode not in REFRESH_MODES:
        raise BundleError(f"job refresh mode must be one of {', '.join(REFRESH_MODES)}, got {mode!r}")
    accepts = server_hooks(trainer)
    hooks: dict = {"_stats": ChannelStats()}
    if mode == "none":
        return hooks
    if "refresh" not in accepts:
        raise DepthPlanError(f"model {trainer.name} cannot refresh its state between iterations "
                             f"(--refresh {mode}); use one that can (mlr, mlp-dvr, mlp-diagonal)")
    if mode == "bootstrap" and not engine.can_bootstrap:
        from hetrain.ckks.registry import bootstrapping_backends

        raise DepthPlanError(f"backend {engine.backend_name} cannot bootstrap: use --refresh client "
                             f"(or a backend that bootstraps: {bootstrapping_backends()})")
    if mode == "client" and channel_path is None:
        raise BundleError("--refresh client needs the refresh channel to listen on (server option --channel)")
    channel = None
    if channel_path is not None:  # listens now; the socket goes away with the channel (or this process)
        channel = ServerChannel.listen(channel_path, engine, job_id or engine.key_id, timeout, jobdir=jobdir)
    if channel is not None:
        hooks["_channel"], hooks["_stats"] = channel, channel.stats
    hooks.update(training_hooks(trainer, mode, engine, channel, hooks["_stats"]))
    return hooks


def training_hooks(trainer, mode: str, engine, answerer, stats: ChannelStats) -> dict:
    """``server_train``'s ``refresh`` and ``monitor`` hooks for refresh ``mode``. ``answerer`` answers
    for the data owner — the refresh channel here, or in the client's rehearsal of the job
    (twin_bound.py) its own handler, called in-process — or is None (bootstrap without monitoring);
    bootstraps are counted in ``stats``."""
    if mode == "none":
        return {}
    hooks = {"refresh": answerer if mode == "client" else BootstrapRefresh(engine, stats)}
    if "monitor" in server_hooks(trainer) and answerer is not None:
        hooks["monitor"] = answerer
    return hooks


def peak_rss_bytes() -> int:
    """This process's own peak RSS. Not ru_maxrss: after fork+exec Linux carries the parent's
    (the client's) peak into the child's ru_maxrss, which would report the client's memory."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # non-Linux fallback (KiB on Linux)


def _check_plan(trainer, job: dict, engine, refresh: str) -> None:
    """Refuse, before any work, a job whose depth or rotation keys do not fit this context
    (``refresh``: the job's mode; "client"/"bootstrap": the state is refreshed between iterations, so one
    iteration must fit; "bootstrap" also inside iterations, Plan.check)."""
    shape = job.get("data_shape")
    if not shape or len(shape) != 3:
        raise BundleError("job has no data_shape [n_samples, n_features, n_classes]")
    plan = trainer.plan(*[int(s) for s in shape], engine.params)
    plan.check(engine.params, refresh=refresh)
    missing = {engine.normalize_step(s) for s in plan.rotation_steps} - engine.rotation_steps - {0}
    if missing:
        raise BundleError(f"the public context lacks Galois keys for rotation steps {plain(sorted(missing))} that the plan needs")


def _check_galois_keys(engine) -> None:
    """The rotation steps the public context declares must have their Galois keys in it (SEAL: the
    loaded key set is asked for each one): a declared but absent key would fail mid-training."""
    gk = getattr(engine, "_gk", None)
    if engine.backend_name != "seal" or gk is None:
        return
    from hetrain.ckks.seal_backend import galois_element

    n = engine.params.poly_modulus_degree
    absent = sorted(s for s in engine.rotation_steps if not gk.has_key(galois_element(s, n)))
    if absent:
        raise BundleError(f"the public context declares rotation steps {plain(absent[:5])}{' ...' if len(absent) > 5 else ''} "
                          "but holds no Galois key for them")


def _progress_printer():
    def report(done: int, total: int, message: str = "") -> None:
        write_progress(sys.stdout, done, total, message)  # one JSON line (protocol/events.py)
    return report


def main(argv: list[str] | None = None) -> int:
    """The server's command line (see the module docstring): train the bundle in ``argv``'s JOBDIR and return
    the exit status (0 done, 2 clear error, 3 bug, 4 reader gone, 5 out of memory); errors are written to
    JOBDIR/server_error.json, never raised.
    """
    p = argparse.ArgumentParser(prog=f"python -m {ENTRY_MODULE}", description=__doc__.splitlines()[0])
    p.add_argument("jobdir")
    p.add_argument("--progress", action="store_true", help='print progress events on stdout, one JSON line each '
                   '({"progress": {"done", "total", "message"}}: protocol/events.py)')
    p.add_argument("--trainer-module", action="append", default=[],
                   help="extra module to import so its trainer registers (set by the operator, never by the job)")
    p.add_argument("--channel", metavar="SOCKET",
                   help="listen on this Unix socket for the data owner's refresh sessions (--refresh client)")
    p.add_argument("--channel-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="seconds to wait for a data owner to attach, or for its answer, before giving up "
                        f"(default {DEFAULT_TIMEOUT_S:.0f})")
    p.add_argument("--resume", action="store_true",
                   help=f"continue a killed job from JOBDIR/{CHECKPOINT} (without it, a JOBDIR holding one is refused)")
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="worker processes for the training's independent tasks (default: every core, "
                        f"{default_workers()} here; 1: all in the server process; with --executor ray: the "
                        "Ray cluster's CPUs)")
    p.add_argument("--executor", choices=EXECUTORS, default="process",
                   help="where the workers run: processes of this machine, or actors of a Ray cluster "
                        "(pip install 'hetrain[ray]'; default process)")
    p.add_argument("--ray-address", default=None, metavar="auto|local|HOST:PORT",
                   help="with --executor ray: the cluster (auto: the one `ray start` set up on this machine; "
                        "local: start a Ray of this machine's CPUs for this job; default auto)")
    args = p.parse_args(argv)
    if args.ray_address is not None and args.executor != "ray":
        p.error("--ray-address applies to --executor ray: add --executor ray")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="server %(levelname)s: %(message)s")
    if os.environ.get("HETRAIN_SERVER_AUDIT"):
        _audit_opens(os.environ["HETRAIN_SERVER_AUDIT"])
    jobdir = pathlib.Path(args.jobdir)
    try:  # a previous run's error (e.g. a killed job started again) must not be read as this one's
        (jobdir / files.SERVER_ERROR).unlink(missing_ok=True)
    except OSError:
        pass
    try:
        for mod in args.trainer_module:
            importlib.import_module(mod)
        stats = run_job(jobdir, progress=args.progress, channel_path=args.channel,
                        channel_timeout=args.channel_timeout, resume=args.resume, workers=args.workers,
                        executor=args.executor, ray_address=args.ray_address or "auto")
        log.info("trained in %.2f s", stats["server_train_s"])
        return 0
    except HetrainUserError as exc:
        _write_error(jobdir, exc)
        _say(f"server error: {exc}")
        return 2
    except MemoryError:  # under the service's limit (RLIMIT_DATA) an allocation failed: say so, no traceback
        limit = resource.getrlimit(resource.RLIMIT_DATA)[0]
        where = (f"the service's memory limit of {limit / 1024 ** 3:g} GB" if limit != resource.RLIM_INFINITY
                 else "the memory of this machine")
        exc = MemoryError(f"the job exceeded {where}")
        _write_error(jobdir, exc)
        _say(f"server error: {exc}")
        return 5
    except Exception as exc:
        gone = _reader_gone(exc)
        if gone is not None:  # the parent (or whoever read our output) died: nothing to report to
            to_devnull(sys.stdout)
            err = ReaderGoneError(f"stopped: the process reading the server's output is gone ({gone})")
            _write_error(jobdir, err)
            _say(f"server error: {err}")
            return EXIT_READER_GONE
        # a bug: keep the traceback for the client to show
        _write_error(jobdir, exc, traceback.format_exc())
        try:
            traceback.print_exc()
        except OSError:
            pass
        return 3


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--workers must be a whole number of at least 1, got {text!r}")
    return value


def _reader_gone(exc: BaseException) -> str | None:
    """Why, if ``exc`` (or what caused it) is a write to a pipe or socket whose reader is gone."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            return exc.strerror or type(exc).__name__
        exc = exc.__cause__ or exc.__context__
    return None


def _say(line: str) -> None:
    """One line on stderr, which may itself be a pipe whose reader is gone."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        to_devnull(sys.stderr)


def _load_in_worker(jobdir: str):
    """A worker process's one load of the job's public context and inputs (files.load_job_public),
    under the same audit hook as the server process when HETRAIN_SERVER_AUDIT is set."""
    if os.environ.get("HETRAIN_SERVER_AUDIT"):
        _audit_opens(os.environ["HETRAIN_SERVER_AUDIT"])
    return files.load_job_public(jobdir)


def _audit_opens(log_path: str) -> None:
    """Test hook: append "PID PATH" for every path this process opens to ``log_path`` (see module
    docstring); worker processes append to the same file."""
    log_file = open(log_path, "a", buffering=1)
    pid = os.getpid()

    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            log_file.write(f"{pid} {os.fsdecode(args[0])}\n")
    sys.addaudithook(hook)


def _write_error(jobdir: pathlib.Path, exc: BaseException, tb: str | None = None) -> None:
    if jobdir.is_dir():
        files.atomic_write(jobdir / files.SERVER_ERROR, json.dumps(
            {"type": type(exc).__name__, "message": str(exc),
             "user_error": isinstance(exc, (HetrainUserError, MemoryError)), "traceback": tb}))

