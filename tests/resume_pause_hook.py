"""Imported by the server process in tests/test_resume.py (``--trainer-module resume_pause_hook``):
after its HETRAIN_TEST_PAUSE_AFTER-th progress line the server sleeps instead of going on, so the
test can SIGKILL it at a known point (a sim run would otherwise finish before the kill lands).
Only the progress printer is wrapped; training, checkpoints and outputs are the server's own."""
import os
import time

from hetrain.protocol import server

_PAUSE_AFTER = int(os.environ.get("HETRAIN_TEST_PAUSE_AFTER", "0"))
_printer = server._progress_printer


def _pausing_printer():
    report, printed = _printer(), 0

    def wrapped(done, total, message=""):
        nonlocal printed
        report(done, total, message)
        printed += 1
        if printed == _PAUSE_AFTER:
            time.sleep(600)  # the test kills us here
    return wrapped


server._progress_printer = _pausing_printer
