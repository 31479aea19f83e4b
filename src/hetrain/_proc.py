"""Process helpers below every layer: a child process that dies with its parent.

On Linux a process can ask the kernel to send it a signal when the thread that created it exits
(``prctl(PR_SET_PDEATHSIG)``, man 2 prctl): a server whose client was SIGKILLed, or a worker whose
server was, then goes too instead of holding keys and memory with nobody to answer. Elsewhere this
is a no-op. ``die_with_parent`` looks nothing up and imports nothing, so a forked child may call it
before ``exec`` (subprocess's ``preexec_fn``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
try:  # resolved at import, not in a forked child
    _prctl = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _prctl = None


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when the thread that created it exits (Linux only);
    exit at once (status 1) if ``parent`` (that process's pid) has died already, since nobody would
    kill us then. Returns None; raises nothing."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
