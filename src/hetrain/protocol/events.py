"""The server process's events on its stdout: JSON lines, written and parsed here and nowhere else.

One JSON object per line, its one key naming the event:

    {"progress": {"done": 3, "total": 14, "message": "epoch 1 batch 3/7"}}

``write_event`` writes a line (the server: ``write_progress``), ``parse_event`` reads one back
(protocol/runner.py follows the server's stdout with ``parse_progress``; the service and the CLI
get the events from it). Any other line (a library that prints, an interpreter warning) is not an
event and is skipped, as is an event of a kind this reader does not know: a newer server may
report more. ``done`` and ``total`` are non-negative integers (iterations, steps: whatever the
trainer counts), ``message`` a short public label (never a value derived from decrypted data:
the server has none).
"""
from __future__ import annotations

import json
from typing import TextIO

PROGRESS = "progress"
MAX_LINE = 64 << 10  # characters: longer lines are not events (a runaway print is skipped, not parsed)


def event_line(kind: str, fields: dict) -> str:
    """The line (with its newline) of the event ``kind`` with JSON-able ``fields``."""
    return json.dumps({kind: fields}, separators=(",", ":")) + "\n"


def write_event(stream: TextIO, kind: str, fields: dict) -> None:
    """Write one event line to ``stream`` and flush it (a reader follows it live). OSError
    (BrokenPipeError when the reader is gone) is the caller's: the server stops on it."""
    stream.write(event_line(kind, fields))
    stream.flush()


def write_progress(stream: TextIO, done: int, total: int, message: str = "") -> None:
    """A progress event: ``done`` of ``total`` steps, ``message`` a short public label."""
    write_event(stream, PROGRESS, {"done": int(done), "total": int(total), "message": str(message)})


def parse_event(line: str) -> tuple[str, dict] | None:
    """(kind, fields) of an event line; None for any other line (not one JSON object with one key
    whose value is an object)."""
    line = line.strip()
    if not line.startswith("{") or len(line) > MAX_LINE:
        return None
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or len(obj) != 1:
        return None
    (kind, fields), = obj.items()
    return (kind, fields) if isinstance(fields, dict) else None


def parse_progress(line: str) -> tuple[int, int, str] | None:
    """(done, total, message) of a progress event line; None for any other line, or a progress
    event whose counts are not non-negative integers."""
    event = parse_event(line)
    if event is None or event[0] != PROGRESS:
        return None
    f = event[1]
    done, total, message = f.get("done"), f.get("total"), f.get("message", "")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (done, total)):
        return None
    return done, total, message if isinstance(message, str) else ""
