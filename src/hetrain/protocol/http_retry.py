"""Retries of idempotent requests to the training service, with tenacity.

Only requests that may be sent twice without effect are retried: GET (status, result download,
the refresh channel's long poll), HEAD, DELETE, and the channel's answer POST, which carries its
request's sequence number (the service takes one answer per number and says 409 to a second:
service/app.py). Connection errors and 5xx answers are retried with exponential backoff and full
jitter (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015: clients that lost the
service together do not come back together); any other answer is returned to the caller.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from .errors import RequestFailed

log = logging.getLogger("hetrain.transport")

FIRST_PAUSE_S, LONGEST_PAUSE_S = 0.2, 5.0  # the backoff's scale and cap (each pause: uniform in [0, cap_n])


def retry_idempotent(send: Callable, *, url: str, give_up_s: float | None, what: str, after: str = "",
                     stop: threading.Event | None = None):
    """``send()`` (an idempotent request, see the module docstring) until it returns an answer
    below 500; returns that answer (an httpx.Response).

    Connection errors (httpx.TransportError, raised by ``send``) and 5xx answers are retried;
    after ``give_up_s`` seconds of them in a row (None: never give up) RequestFailed names the
    last one, ending with ``after``. ``stop`` (an Event): pauses end when it is set, and the call
    returns None instead of retrying. ``what``: the subject of the INFO log line of each retry.
    """
    import httpx
    import tenacity

    def failed(r) -> bool:
        return r is not None and r.status_code >= 500

    def stopped(_state) -> bool:
        return stop is not None and stop.is_set()

    give_up = tenacity.stop_never if give_up_s is None else tenacity.stop_after_delay(give_up_s)
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(httpx.TransportError) | tenacity.retry_if_result(failed),
        wait=tenacity.wait_random_exponential(multiplier=FIRST_PAUSE_S, max=LONGEST_PAUSE_S),
        stop=give_up | stopped,
        sleep=(lambda s: stop.wait(s)) if stop is not None else tenacity.nap.sleep,
        before_sleep=lambda state: log.info("%s: %s; retrying in %.1f s", what, _why(state.outcome),
                                            state.next_action.sleep),
        reraise=False)
    try:
        return retrying(send)
    except tenacity.RetryError as exc:
        if stop is not None and stop.is_set():
            return None
        raise RequestFailed(f"cannot reach the training service at {url} for {give_up_s:g} s "
                            f"({_why(exc.last_attempt)}){after}") from None


def _why(outcome) -> str:
    """One line for a failed attempt: the exception, or the 5xx status and the service's message."""
    if outcome.failed:
        exc = outcome.exception()
        return f"{type(exc).__name__}: {exc}"
    r = outcome.result()
    try:
        message = r.json().get("error", r.text)
    except Exception:  # not JSON (a proxy's error page)
        message = r.text
    return f"HTTP {r.status_code}: {message}"
