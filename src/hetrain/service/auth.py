"""Who may do what on the service, and how a job is named where others might look.

* Each job gets a bearer token when it is submitted (``new_token``): the capability to read its
  status and result, talk on its refresh channel and delete it. The service keeps only its
  SHA-256 (``digest``, in the job's state.json) and compares in constant time (``matches``).
* Optional service-wide API keys (``ApiKeys``) say who may submit; they too are held hashed.
* A job appears on disk under a hash of its id (``dir_name``) and in log lines under a short
  tag (``tag``: the first 8 hex digits of SHA-256(id)), never under its id; ``RedactJobPaths``
  rewrites the ids in uvicorn's access log lines the same way.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from typing import Iterable, Mapping
from urllib.parse import unquote

TOKEN_BYTES = 32  # 256 bits, url-safe base64: 43 characters
_NOBODY = hashlib.sha256(b"no job has this digest").hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(secret: str) -> str:
    """SHA-256 of a token or key, as hex (what the service stores)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def matches(secret: str, stored: str | None) -> bool:
    """Whether ``secret`` hashes to ``stored`` (constant time; a job without a stored digest, e.g.
    one submitted before tokens existed, matches nothing)."""
    real = isinstance(stored, str) and bool(stored)
    ok = hmac.compare_digest(digest(secret).encode(), (stored if real else _NOBODY).encode("utf-8", "replace"))
    return ok and real


def bearer(headers: Mapping[str, str]) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header; None without one."""
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, credential = value.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential


class ApiKeys:
    """The service's API keys, hashed as they arrive; empty: anyone who reaches the service may submit."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._digests = tuple(sorted({digest(k) for k in keys if k}))

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def allows(self, key: str) -> bool:
        d = digest(key)
        found = False
        for stored in self._digests:  # no early exit: the time does not say which key came close
            found |= hmac.compare_digest(d, stored)
        return found


def tag(job_id: str) -> str:
    """A job's name in log lines: 8 hex digits of SHA-256(id); says which job, reveals nothing of the id."""
    return hashlib.sha256(job_id.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def dir_name(job_id: str) -> str:
    """A job's directory name: 32 hex digits of SHA-256(id) (its first 8 are the job's log tag)."""
    return hashlib.sha256(job_id.encode("utf-8", "surrogateescape")).hexdigest()[:32]


_JOB_PATH = re.compile(r"(/v1/jobs/)([^/?#\s\"]+)")


def redact(text: str) -> str:
    """``text`` with every /v1/jobs/<id> replaced by /v1/jobs/job-<tag>."""
    return _JOB_PATH.sub(lambda m: f"{m.group(1)}job-{tag(unquote(m.group(2)))}", text)


class RedactJobPaths(logging.Filter):
    """For uvicorn's access logger: request lines name jobs by tag, never by id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


ACCESS_FILTER = RedactJobPaths()


def install_log_redaction() -> None:
    """Add the filter to uvicorn's access logger (once per process; harmless if uvicorn is not used)."""
    logging.getLogger("uvicorn.access").addFilter(ACCESS_FILTER)
