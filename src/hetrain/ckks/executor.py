"""Run a circuit's independent tasks on every core: a serial executor and a process pool.

    ex = make_executor(engine, inputs, workers=2, loader=(fn, args))  # SerialExecutor when workers == 1
    z = ex.map(task_fn, [(g,) for g in range(G)], shared=(U,))     # [task_fn(engine, U, g) for g ...]
    ex.close()

TenSEAL holds the GIL during SEAL calls (two threads run at 0.99x one), so the pool runs worker
*processes*: N workers are this process and N-1 spawned ones. Each spawned worker loads the job's
public context and its input ciphertexts ONCE (from the job directory through ``loader``, or from
bytes sent at start), then runs chunks of tasks: ``map`` splits the tasks into one contiguous chunk
per worker (the first runs here, without any transfer), sends every other chunk the ``shared``
arguments once, and merges the results back in task order. Ciphertexts travel as the backend's raw serialisation (lossless:
SEAL's own save/load), an input ciphertext as a reference to the worker's copy, and a result the
main process received from a worker is sent on as the bytes it came in (no second serialisation).

Results are identical to the serial run: a worker performs the same engine operations on the same
ciphertexts (CKKS evaluation is deterministic given its inputs), and the operation counters every
worker records for its tasks are added to the main engine's counters (``OpCounters.add``), so the
counts equal the serial run's; their seconds are the workers' summed time. Transfers are not counted
as operations. ``task_fn`` must be a module-level function (it is pickled by name) and must not use
plaintext encodings cached on the main process's ``PlainVector`` objects (a worker re-encodes).

``make_executor(..., kind="ray")`` gives the same interface on the actors of a Ray cluster
(ray_executor.RayExecutor: this class's ``map`` and wire format, its own transport).
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
import weakref
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence

from hetrain._proc import die_with_parent

from .engine import Ciphertext, Engine
from .errors import WorkerFailed

_WORKER: dict = {}
STARTUP_TIMEOUT_S = 600.0  # a worker loading gigabytes of keys on a busy machine  # in a worker process: {"engine": Engine, "inputs": {name: [Ciphertext]}}


def default_workers() -> int:
    """All cores of this machine (``os.cpu_count()``; 1 if unknown)."""
    return max(1, os.cpu_count() or 1)


class SerialExecutor:
    """Runs every task in this process, in order: the reference behaviour."""

    workers = 1

    def __init__(self, engine: Engine | None) -> None:
        self.engine = engine

    def set_engine(self, engine: Engine) -> None:
        """This process's engine, for an executor made without one (``make_executor(None, ...)``: the
        server starts its workers loading before it loads its own keys)."""
        self.engine = engine

    def map(self, fn: Callable, tasks: Sequence[tuple], shared: tuple = ()) -> list:
        """``[fn(engine, *shared, *task) for task in tasks]``."""
        return [fn(self.engine, *shared, *task) for task in tasks]

    def close(self) -> None:
        """Nothing to release here (ProcessExecutor stops its workers); called by ``__exit__``."""
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ProcessExecutor(SerialExecutor):
    """``workers`` processes: this one and ``workers - 1`` spawned ones (concurrent.futures), each
    holding the public keys and inputs once. This process runs the first chunk of every ``map``
    itself (no transfer, and one copy of the keys fewer) while the others run theirs.

    ``loader``: (module-level function, args) that each worker calls once to get (engine, inputs)
    itself (the server: protocol.files.load_job_public, which reads JOBDIR with its checksums), or
    None to send it ``engine.public_bytes()`` and the serialised ``inputs`` (tests, small rings).
    ``inputs``: the main process's copies, by which a task argument that IS an input is recognised
    and sent as a reference to the worker's copy; with a ``loader`` they may come later
    (``set_inputs``), so that the workers load while this process loads its own copy.
    The workers start at once; ``wait_started`` (or the first ``map``) waits until all have loaded.
    """

    def __init__(self, engine: Engine, inputs: dict[str, list[Ciphertext]] | None, workers: int,
                 loader: tuple | None = None) -> None:
        super().__init__(engine)
        self.workers = int(workers)
        source = self._setup(engine, inputs, loader)
        ctx = multiprocessing.get_context("spawn")
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers - 1, mp_context=ctx, initializer=_init_pool_worker,
            initargs=(os.getpid(), source, ctx.Barrier(self.workers - 1)))
        # start every worker now (each loads the keys and inputs): start-up is not training time
        self._starting = [self._pool.submit(_started) for _ in range(self.workers - 1)]

    def _setup(self, engine: Engine, inputs, loader: tuple | None) -> tuple:
        """State every pool executor shares (ProcessExecutor, ray_executor.RayExecutor); returns the
        ``source`` each worker loads from (``_init_worker``)."""
        if self.workers < 2:
            raise ValueError(f"a process executor needs at least 2 workers, got {self.workers}")
        if loader is None and inputs is None:
            raise ValueError("without a loader the executor needs the inputs to send its workers")
        self.set_inputs(inputs or {})
        self._sent: dict[int, tuple] = {}  # id of a live result received -> its wire form (resent as is)
        self.started_workers = 0
        # seconds: serialising in this process, waiting for the workers, deserialising their results,
        # and (summed over workers) their task computation and their own (de)serialisation
        self.timing = {"main_encode_s": 0.0, "main_compute_s": 0.0, "main_compute_cpu_s": 0.0,
                       "wait_s": 0.0, "main_decode_s": 0.0,
                       "worker_compute_s": 0.0, "worker_compute_cpu_s": 0.0, "worker_transfer_s": 0.0}
        if loader is not None:
            return ("call",) + tuple(loader)
        return ("bytes", engine.public_bytes(), {name: [_wire(engine, ct) for ct in cts] for name, cts in inputs.items()})

    def set_inputs(self, inputs: dict[str, list[Ciphertext]]) -> None:
        """This process's copies of the inputs the workers hold (recognised in task arguments)."""
        self._refs = {id(ct): (name, i) for name, cts in inputs.items() for i, ct in enumerate(cts)}
        self._inputs = inputs  # keeps the ids above valid

    def wait_started(self) -> int:
        """Wait until every worker has loaded; returns the number of workers (this process included)."""
        if self._starting:
            try:
                pids = {f.result() for f in self._starting}
            except BrokenProcessPool:
                self.close()
                raise _worker_failed("while loading the job") from None
            except BaseException:
                self.close()
                raise
            self._starting = []
            self.started_workers = len(pids) + 1
        return self.started_workers

    def map(self, fn: Callable, tasks: Sequence[tuple], shared: tuple = ()) -> list:
        """``[fn(engine, *shared, *task) for task in tasks]``, the tasks split into ``min(workers, len(tasks))``
        contiguous chunks: the first runs in this process, the others in worker processes (results in task order).

        ``fn`` must be a module-level function (pickled by name). Ciphertexts in ``shared`` and ``tasks`` travel
        serialised (inputs named at start-up travel as references); the workers' operation counts are added to
        ``engine.counters`` and their times to ``timing`` (seconds). One task or fewer runs serially here.
        Raises WorkerFailed when a worker process dies (out of memory, killed) while starting or computing.
        """
        tasks = list(tasks)
        if len(tasks) <= 1:
            return super().map(fn, tasks, shared)
        self.wait_started()
        n = min(self.workers, len(tasks))
        bounds = [len(tasks) * k // n for k in range(n + 1)]
        t0 = time.perf_counter()
        wire_shared = self._share(self._encode(shared))
        futures = [self._submit(fn, wire_shared, self._encode(tasks[a:b])) for a, b in zip(bounds[1:], bounds[2:])]
        self.timing["main_encode_s"] += time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        out = [fn(self.engine, *shared, *task) for task in tasks[:bounds[1]]]  # the first chunk: here
        self.timing["main_compute_s"] += time.perf_counter() - t0
        self.timing["main_compute_cpu_s"] += time.process_time() - c0
        for fut in futures:
            t0 = time.perf_counter()
            results, counts, compute_s, cpu_s, transfer_s = self._result(fut)
            t1 = time.perf_counter()
            self.timing["wait_s"] += t1 - t0
            self.timing["worker_compute_s"] += compute_s
            self.timing["worker_compute_cpu_s"] += cpu_s
            self.timing["worker_transfer_s"] += transfer_s
            for kind, (count, seconds) in counts.items():
                self.engine.counters.add(kind, count, seconds)
            out.extend(self._decode(r) for r in results)
            self.timing["main_decode_s"] += time.perf_counter() - t1
        return out

    # ------------------------------------------------------------------ the pool (a subclass may run another)
    def _share(self, wire_shared: tuple):
        """The shared arguments of one ``map`` as every chunk receives them (here: pickled with each)."""
        return wire_shared

    def _submit(self, fn: Callable, wire_shared, wire_tasks: list):
        """Start one chunk on a worker; a handle for ``_result``."""
        return self._pool.submit(_run_chunk, fn, wire_shared, wire_tasks)

    def _result(self, handle) -> tuple:
        """``_run_chunk``'s answer for a handle of ``_submit``; WorkerFailed if the worker died."""
        try:
            return handle.result()
        except BrokenProcessPool:
            raise _worker_failed("during training") from None

    def close(self) -> None:
        """Shut the worker pool down: wait for running chunks, cancel queued ones."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ wire format
    def _encode(self, obj):
        if isinstance(obj, Ciphertext):
            key = id(obj)
            if key in self._refs:
                return ("in",) + self._refs[key]
            if key in self._sent:
                return self._sent[key]
            return _wire(self.engine, obj)
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._encode(x) for x in obj)
        if isinstance(obj, dict):
            return {k: self._encode(v) for k, v in obj.items()}
        return obj

    def _decode(self, obj):
        if isinstance(obj, tuple) and obj and isinstance(obj[0], str) and obj[0] == "ct":
            ct = _unwire(self.engine, obj)
            self._sent[id(ct)] = obj  # dropped with the ciphertext (so an id is never reused stale)
            weakref.finalize(ct, self._sent.pop, id(ct), None)
            return ct
        if isinstance(obj, list):
            return [self._decode(x) for x in obj]
        if isinstance(obj, dict):
            return {k: self._decode(v) for k, v in obj.items()}
        return obj


def _worker_failed(when: str) -> WorkerFailed:
    return WorkerFailed(f"a worker process of this server died {when} (out of memory under the job's memory limit, "
                        "or killed): train with fewer workers (`--workers 1` runs everything in the server "
                        "process) or with a higher memory limit")


EXECUTORS = ("process", "ray")


def make_executor(engine: Engine | None, inputs: dict[str, list[Ciphertext]] | None = None, workers: int | None = None,
                  loader: tuple | None = None, *, kind: str = "process", ray_address: str | None = None,
                  ray_options: dict | None = None) -> SerialExecutor:
    """SerialExecutor for 1 worker or a backend whose tasks stay in one process (``engine.process_workers``
    False: OpenFHE, which uses every core per operation), else a ProcessExecutor (``kind`` "process";
    ``workers`` None: every core) or a ray_executor.RayExecutor (``kind`` "ray": actors on the Ray
    cluster at ``ray_address``, "auto", "local" or host:port; ``workers`` None: the cluster's CPUs;
    ``ray_options``: ray.init's for a local cluster; ExecutorUnavailable without Ray). ``engine`` None
    (with a ``loader``): the workers start loading at once, and the caller, having checked that its
    backend's tasks may leave the process (``registry`` ``process_workers``), gives this process's
    engine with ``set_engine`` before the first ``map``.
    ValueError for a worker count below 1 or an unknown ``kind``."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if engine is None and loader is None:
        raise ValueError("an executor made without an engine needs a loader for its workers")
    if not getattr(engine, "process_workers", True):
        return SerialExecutor(engine)
    if kind == "ray":
        if workers is not None and int(workers) == 1:
            return SerialExecutor(engine)
        from .ray_executor import RayExecutor

        return RayExecutor(engine, inputs, workers, loader, address=ray_address or "auto", ray_options=ray_options)
    workers = default_workers() if workers is None else int(workers)
    if workers == 1:
        return SerialExecutor(engine)
    return ProcessExecutor(engine, inputs, workers, loader)


def _wire(engine: Engine, ct: Ciphertext) -> tuple:
    """("ct", level, raw bytes): the backend's own lossless serialisation, outside the op counters."""
    return ("ct", ct.level, engine._ct_to_bytes(ct))


def _unwire(engine: Engine, w: tuple) -> Ciphertext:
    return Ciphertext(engine, w[1], engine._ct_from_bytes(w[2], w[1]))


# ---------------------------------------------------------------------- worker side
def _init_pool_worker(parent: int, source: tuple, barrier) -> None:
    """A pool worker's start: it dies with the server process that spawned it (hetrain._proc; a
    SIGKILLed server leaves no worker holding its keys), then loads what ``_init_worker`` loads."""
    die_with_parent(parent)
    _init_worker(source, barrier)


def _init_worker(source: tuple, barrier=None) -> None:
    from . import load_engine, owner_forced_insecure

    if source[0] == "call":
        engine, inputs = source[1](*source[2])
    else:  # the server's own engine: parameters its data owner forced below 128 bits load as they did there
        engine = load_engine(source[1], force_insecure=owner_forced_insecure(source[1]))
        inputs = {name: [_unwire(engine, w) for w in ws] for name, ws in source[2].items()}
    if engine.has_secret_key:
        raise RuntimeError("a worker engine must hold public material only")
    _WORKER.update(engine=engine, inputs=inputs, barrier=barrier)


def _started() -> int:
    """A worker's process id, once every worker has run its initializer (the start-up tasks wait for
    each other, so each goes to a different worker and all workers are started)."""
    _WORKER["barrier"].wait(STARTUP_TIMEOUT_S)
    return os.getpid()


def _worker_decode(obj):
    if isinstance(obj, tuple) and obj and isinstance(obj[0], str):
        if obj[0] == "ct":
            return _unwire(_WORKER["engine"], obj)
        if obj[0] == "in":
            return _WORKER["inputs"][obj[1]][obj[2]]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_worker_decode(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _worker_decode(v) for k, v in obj.items()}
    return obj


def _worker_encode(obj):
    if isinstance(obj, Ciphertext):
        return _wire(_WORKER["engine"], obj)
    if isinstance(obj, (list, tuple)):
        return [_worker_encode(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _worker_encode(v) for k, v in obj.items()}
    return obj


def _run_chunk(fn: Callable, shared: tuple, tasks: list) -> tuple[list, dict, float, float, float]:
    """(results, {kind: (count, seconds)}, compute seconds (wall, CPU), (de)serialisation seconds) of one chunk."""
    engine = _WORKER["engine"]
    t0 = time.perf_counter()
    shared = _worker_decode(shared)
    tasks = [_worker_decode(task) for task in tasks]
    t1 = time.perf_counter()
    engine.counters.reset()
    c1 = time.process_time()
    results = [fn(engine, *shared, *task) for task in tasks]
    cpu = time.process_time() - c1
    counts = {k: (engine.counters.counts[k], engine.counters.seconds[k]) for k in engine.counters.counts}
    t2 = time.perf_counter()
    wire = [_worker_encode(r) for r in results]
    return wire, counts, t2 - t1, cpu, (t1 - t0) + (time.perf_counter() - t2)
