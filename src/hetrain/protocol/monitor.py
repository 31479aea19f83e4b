"""Peak resident memory of this process and of a child process, sampled with psutil."""
from __future__ import annotations

import os
import threading

import psutil


class PeakRSS:
    """Samples RSS every ``interval`` seconds in a background thread; ``watch(pid)`` adds a process."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peaks: dict[str, int] = {"client": 0}
        self._procs = {"client": psutil.Process(os.getpid())}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def watch(self, name: str, pid: int) -> None:
        """Also sample process ``pid`` under ``name``; a process that is already gone is ignored."""
        try:
            self._procs[name] = psutil.Process(pid)
            self.peaks.setdefault(name, 0)
        except psutil.NoSuchProcess:
            pass

    def sample(self) -> None:
        """Update ``peaks`` (bytes of resident memory per watched name) now; processes that ended are dropped."""
        for name, p in list(self._procs.items()):
            try:
                self.peaks[name] = max(self.peaks[name], p.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                self._procs.pop(name, None)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "PeakRSS":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
