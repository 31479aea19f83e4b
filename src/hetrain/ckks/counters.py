"""Operation counters: how many of each homomorphic operation ran, and how long they took."""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict


class OpCounters:
    """Count and total wall time per operation kind (multiply, relinearise, rotate, ...; the kinds are
    keys of model files' statistics, spelled as they always were: "relinearize").

    Every engine owns one; read ``counts``/``seconds`` or ``as_dict()``, and ``reset()`` between
    phases. ``snapshot()`` and ``diff()`` measure one phase without resetting.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def time(self, kind: str, n: int = 1):
        """Context manager: adds ``n`` to ``counts[kind]`` and the block's wall time (seconds, perf_counter) to
        ``seconds[kind]``, also when the block raises.
        """
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.counts[kind] += n
            self.seconds[kind] += time.perf_counter() - t0

    def add(self, kind: str, n: int = 1, seconds: float = 0.0) -> None:
        """Add ``n`` operations of ``kind`` and ``seconds`` of wall time (counts merged from a worker process)."""
        self.counts[kind] += n
        self.seconds[kind] += seconds

    def reset(self) -> None:
        """Forget every count and time (between phases)."""
        self.counts.clear()
        self.seconds.clear()

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts (kind -> number of operations), for ``diff`` later; times are not included."""
        return dict(self.counts)

    def diff(self, before: dict[str, int]) -> dict[str, int]:
        """Counts since ``before`` (a ``snapshot()``), zero entries dropped."""
        out = {k: v - before.get(k, 0) for k, v in self.counts.items()}
        return {k: v for k, v in sorted(out.items()) if v}

    def as_dict(self) -> dict[str, dict[str, float]]:
        """kind -> {"count": operations, "seconds": total wall time rounded to microseconds}, sorted by kind."""
        return {k: {"count": self.counts[k], "seconds": round(self.seconds[k], 6)} for k in sorted(self.counts)}

    def format(self) -> str:
        """One log line ``kind=count(seconds s) ...`` of the nonzero kinds, sorted by kind."""
        return " ".join(f"{k}={self.counts[k]}({self.seconds[k]:.2f}s)" for k in sorted(self.counts) if self.counts[k])
