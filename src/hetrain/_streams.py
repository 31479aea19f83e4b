"""Standard streams whose reader is gone (a closed pipe): one helper for the CLI and the server."""
from __future__ import annotations

import os


def to_devnull(stream) -> None:
    """Point ``stream`` (sys.stdout or sys.stderr) at /dev/null after a broken pipe, so that its
    buffer does not fail again at exit ("Exception ignored ..."): the Python docs' advice for SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
