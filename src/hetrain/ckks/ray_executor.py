"""The executor on Ray: the circuits' independent tasks on the actors of a Ray cluster (every machine).

    ex = make_executor(engine, inputs, workers=4, kind="ray", ray_address="auto")  # or "local", "host:port"
    z = ex.map(task_fn, [(g,) for g in range(G)], shared=(U,))                    # as executor.ProcessExecutor
    ex.close()

The same interface, wire format and results as ``executor.ProcessExecutor`` (whose ``map`` this
class reuses): N workers are this process and N-1 Ray actors (one CPU each, wherever the cluster
places them). What each actor loads (the job's public files, or the public context and serialised
inputs) is put in Ray's object store ONCE (``ray.put``) and handed to every actor by reference, so
Ray moves it to each node once and every actor of that node reads it from the node's shared
memory; each actor then builds its public engine and inputs once, with the same loader and checks
as a worker process (``executor._init_worker``: never a secret key). ``map`` puts its shared
arguments in the object store once (one copy per node, not one per chunk) and sends each actor
its chunk of tasks; the actor runs them with ``executor._run_chunk`` (so the same engine
operations, the same results, and operation counters merged back into this engine's).

Clusters: ``address`` "local" starts a Ray of this machine's CPUs inside this process (stopped by
``close``); "auto" joins the cluster that ``ray start`` set up on this machine; "host:port" joins
that cluster's head. Every node needs the same hetrain (and Python, TenSEAL) installed. Ray's own
dashboard and log forwarding stay off. Source: Ray's actor and object-store API (docs.ray.io, Ray 2.x).
"""
from __future__ import annotations

import os
from typing import Callable

from . import executor as _ex
from .engine import Ciphertext, Engine
from .errors import ExecutorUnavailable, WorkerFailed

INSTALL_HINT = "pip install 'hetrain[ray]'"
LOCAL = "local"
_ACTOR = None  # the Ray actor class, made on first use (ray is imported lazily)


def import_ray():
    """The ``ray`` module; ExecutorUnavailable naming the extra to install when it is missing."""
    try:
        import ray
    except ImportError as exc:
        raise ExecutorUnavailable(f"--executor ray needs Ray: {INSTALL_HINT} ({exc})") from None
    return ray


def connect(address: str = "auto", *, num_cpus: int | None = None, object_store_bytes: int | None = None) -> bool:
    """Join (or, for "local", start) the Ray cluster at ``address`` unless this process already has
    one; returns whether this call started or joined it (then the caller shuts it down). ``num_cpus``
    and ``object_store_bytes``: a local cluster's size (default: this machine's CPUs, Ray's default
    object store). ExecutorUnavailable if Ray is missing or the cluster cannot be reached."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "configure_logging": False}
    try:
        if address == LOCAL:
            ray.init(address="local", num_cpus=num_cpus or _ex.default_workers(), include_dashboard=False,
                     object_store_memory=object_store_bytes, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExecutorUnavailable(f"cannot join the Ray cluster at --ray-address {address} ({first}): start one "
                                  "with `ray start --head`, or use --ray-address local") from None
    return True


def cluster_cpus() -> int:
    """CPUs of the joined Ray cluster (all nodes)."""
    return int(import_ray().cluster_resources().get("CPU", 0))


def probe(address: str) -> int:
    """CPUs of the Ray cluster at ``address`` (joined, counted, left: ``hetrain serve --ray-address``
    checks its cluster before it listens). ExecutorUnavailable as ``connect``."""
    ray = import_ray()
    joined = connect(address)
    try:
        return cluster_cpus()
    finally:
        if joined:
            ray.shutdown()


# Restarts of a dead actor (and retries of the chunk it was running) before the job fails with
# WorkerFailed: a chunk only reads its arguments, so running it again gives the same result.
ACTOR_RESTARTS = 2


def _actor_class():
    global _ACTOR
    if _ACTOR is None:
        ray = import_ray()

        @ray.remote(num_cpus=1, max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
        class HetrainWorker:
            """One worker: public engine and inputs loaded once (``executor._init_worker``). An actor
            whose process dies (killed, its node lost) is restarted by Ray up to ``ACTOR_RESTARTS``
            times — it loads the job again from the object store — and its unfinished chunk is run
            again: a chunk is a pure function of its arguments, so the result is the same."""

            def __init__(self, source: tuple) -> None:
                _ex._init_worker(source)

            def started(self) -> tuple[int, str]:
                return os.getpid(), ray.get_runtime_context().get_node_id()

            def run_chunk(self, fn: Callable, shared, tasks: list) -> tuple:
                return _ex._run_chunk(fn, shared, tasks)

        _ACTOR = HetrainWorker
    return _ACTOR


class RayExecutor(_ex.ProcessExecutor):
    """``workers`` processes: this one and ``workers - 1`` Ray actors of one CPU each (None: as many
    as the cluster has CPUs, at least 2). ``loader`` and ``inputs`` as for ProcessExecutor, except
    that a ``loader``'s arguments travel through the object store (a node without this machine's
    files needs a loader that takes the files' bytes: protocol.files.load_job_public_bytes).
    ``address``: "local", "auto" or "host:port" (``connect``); ``ray_options``: ``connect``'s
    ``num_cpus``/``object_store_bytes`` for a local cluster. ExecutorUnavailable if Ray is missing,
    unreachable, or has fewer free CPUs than actors; WorkerFailed if an actor dies more than
    ``ACTOR_RESTARTS`` times (Ray restarts it and runs its chunk again until then)."""

    def __init__(self, engine: Engine, inputs: dict[str, list[Ciphertext]] | None, workers: int | None = None,
                 loader: tuple | None = None, *, address: str = "auto", ray_options: dict | None = None) -> None:
        _ex.SerialExecutor.__init__(self, engine)
        self._ray = import_ray()
        self._owns_ray = connect(address, **(ray_options or {}))
        self.address = address
        self._actors: list = []
        try:
            cpus = cluster_cpus()
            self.workers = max(2, cpus) if workers is None else int(workers)
            source = self._setup(engine, inputs, loader)
            free = int(self._ray.available_resources().get("CPU", 0))
            if self.workers - 1 > free:
                raise ExecutorUnavailable(
                    f"--workers {self.workers} needs {self.workers - 1} Ray actors of one CPU each, but the Ray "
                    f"cluster at {address} has {free} free CPU(s) of {cpus}: use --workers {max(2, free + 1)} or "
                    "add nodes")
            source_ref = self._ray.put(source)  # once: each node fetches it once, its actors share it
            del source
            actor = _actor_class()
            self._actors = [actor.remote(source_ref) for _ in range(self.workers - 1)]
            self._starting = [a.started.remote() for a in self._actors]
        except BaseException:
            self.close()
            raise
        self.nodes = 0

    def wait_started(self) -> int:
        """Wait until every actor has loaded; returns the number of workers (this process included)."""
        if self._starting:
            ray = self._ray
            try:
                answers = ray.get(self._starting, timeout=_ex.STARTUP_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                self.close()
                raise WorkerFailed(f"the Ray actors did not start within {_ex.STARTUP_TIMEOUT_S:.0f} s (the "
                                   f"cluster at {self.address} is busy or too small): train with fewer --workers"
                                   ) from None
            except ray.exceptions.RayError as exc:
                self.close()
                raise _actor_failed("while loading the job", exc) from None
            except BaseException:
                self.close()
                raise
            self._starting = []
            self.started_workers = len(answers) + 1
            self.nodes = len({node for _, node in answers})
        return self.started_workers

    def _share(self, wire_shared: tuple):
        return self._ray.put(wire_shared) if wire_shared else wire_shared  # once per map, one copy per node

    def _submit(self, fn: Callable, wire_shared, wire_tasks: list):
        k = getattr(self, "_next", 0)
        self._next = k + 1
        return self._actors[k % len(self._actors)].run_chunk.remote(fn, wire_shared, wire_tasks)

    def map(self, fn: Callable, tasks, shared: tuple = ()) -> list:
        self._next = 0  # chunk k of every map goes to actor k (as a process pool spreads them)
        return super().map(fn, tasks, shared)

    def _result(self, handle) -> tuple:
        ray = self._ray
        try:
            return ray.get(handle)
        except ray.exceptions.RayTaskError as exc:  # the task's own error (e.g. DepthExhausted): as it was raised
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except ray.exceptions.RayError as exc:  # the actor died, was killed for memory, lost its node or objects
            raise _actor_failed("during training", exc) from None

    def close(self) -> None:
        """Stop the actors; and Ray itself if this executor started or joined it (``connect``)."""
        ray = getattr(self, "_ray", None)
        if ray is None:
            return
        for a in self._actors:
            try:
                ray.kill(a)
            except Exception:  # already gone
                pass
        self._actors, self._starting = [], []
        if getattr(self, "_owns_ray", False) and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False


def _actor_failed(when: str, exc: BaseException) -> WorkerFailed:
    why = ("Ray stopped it: its node ran low on memory" if "OutOfMemory" in type(exc).__name__
           else f"{type(exc).__name__}: out of memory, its node lost, or killed")
    return WorkerFailed(f"a Ray actor of this server died {when} ({why}): train with fewer workers (`--workers 1` "
                        "runs everything in the server process) or on a larger cluster")
