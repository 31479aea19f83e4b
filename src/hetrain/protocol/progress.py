"""One progress display for a whole run: keygen → encrypt → train (iteration, epoch, ETA, the last
validation accuracy, refreshes) → decrypt.

    with RunProgress(quiet=False) as p:             # stderr; log lines (p.write) go to stdout
        with p.phase("encrypt", total=17, unit="ct") as ph:
            ph.advance()                            # never shows more than its total
        with p.phase("train", unit="step"):
            p.step(3, 14, "epoch 3 batch 1/1")      # the server's progress events (events.parse_progress)
            p.epoch_result({"epoch": 3, "step": 3, "val_accuracy": 0.96, "val_loss": 0.7, "best": True})

On a terminal (stderr is a TTY) each phase is a tqdm bar (elapsed time, rate, ETA) with the epoch,
the last validation accuracy and the refreshes in its postfix; validation lines print above it as
each epoch is evaluated. Elsewhere (a pipe, a log file, CI) it prints plain lines instead: one when a
phase starts and one when it ends, one per epoch (step i/n, elapsed, ETA, validation accuracy), and
every tenth of a run without epochs. ``quiet``: nothing at all (log lines still print).

The server's progress events are written and parsed in one place, protocol/events.py (runner.py
follows them with ``parse_progress``); this module only draws what it is given.
"""
from __future__ import annotations

import contextlib
import re
import sys
import time

_EPOCH = re.compile(r"\bepoch (\d+)\b")


def _clock(s: float | None) -> str:
    if s is None or s != s:
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Phase:
    """One phase of the display: a counter towards ``total`` (grows with the count, never overshoots)."""

    def __init__(self, display: "RunProgress", name: str, total: int | None, unit: str) -> None:
        self.display, self.name, self.total, self.unit = display, name, total, unit
        self.n = 0
        self.started = time.perf_counter()
        self.bar = None

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.set(self.n + n, self.total)

    def set(self, done: int, total: int | None) -> None:
        """Set the count to ``done`` and (unless None) the total; a count past the total raises the total to it."""
        self.n = int(done)
        if total is not None:
            self.total = int(total)
        if self.total is not None and self.n > self.total:  # a plan that counted fewer: the total follows
            self.total = self.n
        if self.bar is not None:
            self.bar.total, self.bar.n = self.total, self.n
            self.display._draw(self.bar)

    @property
    def elapsed(self) -> float:
        """Seconds since the phase started."""
        return time.perf_counter() - self.started

    def eta(self) -> float | None:
        """Seconds left at the average pace so far, or None before the first unit or without a total."""
        if not self.total or not self.n:
            return None
        return self.elapsed / self.n * (self.total - self.n)


class RunProgress:
    """The display (see the module docstring). ``stream``: where bars and progress lines go (default
    stderr); ``tty``: draw bars (default: whether ``stream`` is a terminal); ``out``: where ``write``
    prints log lines (default stdout)."""

    def __init__(self, quiet: bool = False, stream=None, tty: bool | None = None, out=None) -> None:
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self._out = out
        if tty is None:
            try:
                tty = bool(self.stream.isatty())
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty and not quiet
        self.current: Phase | None = None
        self.epoch: int | None = None
        self.last_accuracy: float | None = None
        self.refreshes = 0
        self._printed_tenth = -1
        self._drawing = True

    def __enter__(self) -> "RunProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the current bar (if any); called by ``__exit__``."""
        if self.current is not None and self.current.bar is not None:
            self.current.bar.close()
            self.current.bar = None

    # -------------------------------------------------------------- output
    def _line(self, text: str) -> None:
        """A progress line (plain mode, or above the bars)."""
        if self.quiet:
            return
        if self.tty:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _draw(self, bar) -> None:
        if not self._drawing:
            return
        try:
            bar.refresh()
        except OSError:  # the terminal is gone (a closed pipe): stop drawing, keep counting
            self._drawing = False

    def write(self, line: str) -> None:
        """A log line (plan, warnings, messages): printed on stdout without breaking a bar."""
        out = self._out if self._out is not None else sys.stdout
        if self.tty and self.current is not None and self.current.bar is not None:
            from tqdm import tqdm

            tqdm.write(line, file=out)
        else:
            print(line, file=out, flush=True)

    # -------------------------------------------------------------- phases
    @contextlib.contextmanager
    def phase(self, name: str, total: int | None = None, unit: str = "", detail: str = ""):
        """A phase from start to end; yields its Phase (``advance``/``set``)."""
        ph = Phase(self, name, total, unit)
        prev, self.current = self.current, ph
        self._printed_tenth = -1
        if self.tty:
            from tqdm import tqdm

            ph.bar = tqdm(total=total, desc=name, unit=unit or "it", file=self.stream, leave=True,
                          dynamic_ncols=True)
        else:
            self._line(f"{name}: started" + (f" ({detail})" if detail else ""))
        failed = False
        try:
            yield ph
        except BaseException:
            failed = True
            raise
        finally:
            if ph.bar is not None:
                ph.bar.close()
                ph.bar = None
            elif failed:
                self._line(f"{name}: stopped after {ph.elapsed:.1f} s")
            else:
                count = f", {ph.n}/{ph.total} {unit}" if ph.total else (f", {ph.n} {unit}" if ph.n else "")
                extra = ""
                if name == "train":
                    extra = (f", last epoch {self.epoch}" if self.epoch is not None else "") + \
                            (f", refreshes {self.refreshes}" if self.refreshes else "")
                self._line(f"{name}: done in {ph.elapsed:.1f} s{count}{extra}")
            self.current = prev

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more in the current phase (e.g. one ciphertext encrypted)."""
        if self.current is not None:
            self.current.advance(n)

    # -------------------------------------------------------------- training
    def _postfix(self) -> str:
        parts = []
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}")
        if self.last_accuracy is not None:
            parts.append(f"val acc {self.last_accuracy:.4f}")
        if self.refreshes:
            parts.append(f"refreshes {self.refreshes}")
        return ", ".join(parts)

    def step(self, done: int, total: int, message: str = "") -> None:
        """The server finished ``done`` of ``total`` iterations (``message``: its own words, e.g.
        'epoch 3 batch 1/2')."""
        ph = self.current
        if ph is None:
            return
        m = _EPOCH.search(message or "")
        new_epoch = m is not None and int(m.group(1)) != self.epoch
        if m is not None:
            self.epoch = int(m.group(1))
        if ph.bar is not None:
            ph.bar.set_postfix_str(self._postfix(), refresh=False)
        ph.set(done, total)
        if ph.bar is None and not self.quiet and self.last_accuracy is None:
            # plain lines: each epoch's validation line carries the progress once there is one (epoch_result);
            # before that (or without validation) a line per epoch, else one every tenth of the run
            tenth = (10 * done) // max(total, 1)
            if (new_epoch and done > 1) or (self.epoch is None and tenth != self._printed_tenth):
                self._printed_tenth = tenth
                self._line(self._step_text(ph))

    def _step_text(self, ph: Phase) -> str:
        return (f"{ph.name}: step {ph.n}/{ph.total}" + (f", epoch {self.epoch}" if self.epoch is not None else "")
                + f", elapsed {_clock(ph.elapsed)}, ETA {_clock(ph.eta())}"
                + (f", last validation accuracy {self.last_accuracy:.4f}" if self.last_accuracy is not None else "")
                + (f", refreshes {self.refreshes}" if self.refreshes else ""))

    def epoch_result(self, entry: dict) -> None:
        """The client evaluated an epoch (refresh.MLRValidation): a line now, and the bar's postfix."""
        acc, loss = entry.get("val_accuracy"), entry.get("val_loss")
        if acc is not None:
            self.last_accuracy = float(acc)
        self.epoch = entry.get("epoch", self.epoch)
        text = (f"epoch {entry.get('epoch')}: validation accuracy "
                + ("?" if acc is None else f"{acc:.4f}") + ", loss " + ("?" if loss is None else f"{loss:.4f}")
                + (" (best so far)" if entry.get("best") else ""))
        ph = self.current
        if ph is not None and ph.bar is None and ph.total:  # plain lines: where the run stands, too
            text += (f"; step {entry.get('step')}/{ph.total}, elapsed {_clock(ph.elapsed)}, "
                     f"ETA {_clock(ph.eta())}" + (f", refreshes {self.refreshes}" if self.refreshes else ""))
        self._line(text)
        if self.current is not None and self.current.bar is not None:
            self.current.bar.set_postfix_str(self._postfix(), refresh=False)
            self._draw(self.current.bar)

    def refreshed(self) -> None:
        """The client re-encrypted the state once."""
        self.refreshes += 1


class CountingHandler:
    """A refresh-channel handler (refresh.ClientRefresher) that tells the display about each refresh."""

    def __init__(self, handler, display: RunProgress) -> None:
        self._handler, self._display = handler, display

    def refresh(self, state, step):
        """The wrapped handler's ``refresh``, then one refresh counted on the display."""
        out = self._handler.refresh(state, step)
        self._display.refreshed()
        return out

    def evaluate(self, state, step, epoch, refresh: bool = False):
        """The wrapped handler's ``evaluate``; a refresh is counted when it also re-encrypted the state."""
        out = self._handler.evaluate(state, step, epoch, refresh)
        if refresh and out[0] is not None:
            self._display.refreshed()
        return out

    def __getattr__(self, name):
        return getattr(self._handler, name)


def as_display(progress) -> RunProgress:
    """``progress`` as a display: a RunProgress as it is; True/False: a new one (False: quiet)."""
    return progress if isinstance(progress, RunProgress) else RunProgress(quiet=not progress)
