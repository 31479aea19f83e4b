"""Independent tasks of a circuit, run by an executor (hetrain.ckks.executor) or here in order."""
from __future__ import annotations


def run_tasks(engine, executor, fn, tasks: list, shared: tuple = ()) -> list:
    """``executor.map(fn, tasks, shared)``: ``[fn(engine, *shared, *task) for task in tasks]``, on the
    executor's workers; without an executor the same calls run here, in order. ``fn`` must be a
    module-level function (workers receive it by name)."""
    if executor is None:
        return [fn(engine, *shared, *t) for t in tasks]
    return executor.map(fn, tasks, shared)
