"""How a job bundle reaches a server and its outputs come back.

    LocalTransport()                        python -m hetrain.protocol.server_main JOBDIR, a subprocess here
    HttpTransport("http://127.0.0.1:8750")  the `hetrain serve` service (needs hetrain[service]: httpx)

Both take a job directory written by ``files.write_job`` (public material only), leave the
encrypted outputs in ``JOBDIR/outputs.bin`` and return the server's stats (server_stats.json).
The secret key never takes part: decryption stays with the caller.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import tarfile
import time
from typing import Iterator, Protocol

from tqdm import tqdm

from . import files
from .errors import ServerError
from .monitor import PeakRSS

BUNDLE_ORDER = (files.MANIFEST, files.JOB, files.PUBLIC_CONTEXT, files.INPUTS)  # small files first
_CHUNK = 1 << 20


class Transport(Protocol):
    def preflight(self) -> None:
        """Fail fast (before keys are made) if the server cannot take the job."""

    def run(self, jobdir: pathlib.Path, trainer, progress: bool, mem: PeakRSS | None = None) -> dict: ...


class LocalTransport:
    """The server as a child process on this machine (what `hetrain fit` does without --server)."""

    def preflight(self) -> None:
        pass

    def run(self, jobdir: pathlib.Path, trainer, progress: bool, mem: PeakRSS | None = None) -> dict:
        from .pipeline import run_server  # it lives (and is tested) there; imported late to avoid a cycle

        return run_server(jobdir, trainer, progress, mem)


def make_transport(server: "str | Transport | None", **http_options) -> Transport:
    """None -> LocalTransport; an http(s) URL -> HttpTransport; a transport object as it is."""
    if server is None:
        return LocalTransport()
    if isinstance(server, str):
        if not server.startswith(("http://", "https://")):
            raise ServerError(f"--server must be an http:// or https:// URL, got {server!r}")
        return HttpTransport(server, **http_options)
    return server


class HttpTransport:
    """Upload the bundle to the service, follow the job, download the outputs, then delete the job.

    ``poll_s``: the longest wait between status requests; ``timeout_s``: give up (and delete the
    job) after this long in all (None: wait as long as training takes); ``keep_remote``: leave
    the job on the service after downloading.
    """

    def __init__(self, url: str, *, poll_s: float = 2.0, timeout_s: float | None = None,
                 keep_remote: bool = False) -> None:
        self.url = url.rstrip("/")
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.keep_remote = keep_remote
        quiet = logging.getLogger("httpx")
        if quiet.level == logging.NOTSET:  # httpx logs every request at INFO: polling would flood the CLI
            quiet.setLevel(logging.WARNING)

    def preflight(self) -> None:
        """The service answers /v1/health (keygen and encryption can take minutes: check first)."""
        self._health()

    def run(self, jobdir: pathlib.Path, trainer, progress: bool, mem: PeakRSS | None = None) -> dict:
        httpx = _httpx()
        jobdir = pathlib.Path(jobdir)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        timeout = httpx.Timeout(30.0, read=600.0)  # the service checks a big upload before it answers
        with httpx.Client(base_url=self.url, timeout=timeout) as http:
            job_id = self._upload(http, jobdir, progress)
            try:
                stats = self._wait(http, job_id, progress, deadline)
                self._download(http, job_id, jobdir / files.OUTPUTS, stats.get("download_bytes"), progress)
            except BaseException:
                self._delete(http, job_id)  # interrupted or failed: free the service
                raise
            if not self.keep_remote:
                self._delete(http, job_id)
        files.atomic_write(jobdir / files.SERVER_STATS, json.dumps(stats, indent=1))
        return stats

    # ------------------------------------------------------------------ steps
    def _health(self) -> dict:
        httpx = _httpx()
        with httpx.Client(base_url=self.url, timeout=30.0) as http:
            return self._json(http, "GET", "/v1/health")

    def _upload(self, http, jobdir: pathlib.Path, progress: bool) -> str:
        import httpx

        health = self._json(http, "GET", "/v1/health")
        total = tar_size(jobdir)
        limit = health.get("max_upload_bytes")
        if limit is not None and total > limit:
            raise ServerError(f"the job bundle is {total / 2**20:.1f} MiB; the service at {self.url} accepts at most "
                              f"{limit / 2**20:.1f} MiB (its --max-upload-mb)")
        with tqdm(total=total, desc="upload", unit="B", unit_scale=True, disable=not progress) as bar:
            try:
                r = http.post("/v1/jobs", content=tar_stream(jobdir, bar.update),
                              headers={"content-type": "application/x-tar", "content-length": str(total)})
            except httpx.HTTPError as exc:
                raise ServerError(f"upload to {self.url} failed: {exc}") from None
        body = _body(r)
        if r.status_code != 201:
            raise ServerError(f"the service refused the job (HTTP {r.status_code}): {body.get('error', r.text)}")
        return body["id"]

    def _wait(self, http, job_id: str, progress: bool, deadline: float | None) -> dict:
        delay = 0.1  # short first waits (small jobs finish in seconds), growing to poll_s
        with tqdm(desc="server train", unit="it", disable=not progress) as bar:
            while True:
                st = self._json(http, "GET", f"/v1/jobs/{job_id}")
                p = st.get("progress") or {}
                if p.get("total"):
                    bar.total, bar.n = p["total"], p["done"]
                running = st["status"] == "running" and p.get("message")
                bar.set_postfix_str(p["message"] if running else st["status"], refresh=False)
                bar.refresh()
                if st["status"] == "done":
                    return st["stats"]
                if st["status"] == "failed":
                    raise ServerError(f"server failed: {st.get('error')}")
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise ServerError(f"job {job_id} did not finish within {self.timeout_s} s (status {st['status']})")
                time.sleep(delay)
                delay = min(self.poll_s, delay * 1.5)

    def _download(self, http, job_id: str, path: pathlib.Path, size: int | None, progress: bool) -> None:
        tmp = path.with_name(path.name + ".part")
        try:
            with http.stream("GET", f"/v1/jobs/{job_id}/result") as r:
                if r.status_code != 200:
                    r.read()
                    raise ServerError(f"downloading the result failed (HTTP {r.status_code}): "
                                      f"{_body(r).get('error', r.text)}")
                with open(tmp, "wb") as f, tqdm(total=size, desc="download", unit="B", unit_scale=True,
                                                 disable=not progress) as bar:
                    for chunk in r.iter_bytes(_CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _delete(self, http, job_id: str) -> None:
        try:
            http.delete(f"/v1/jobs/{job_id}")
        except Exception:  # best effort: the job's fate is already decided
            pass

    def _json(self, http, method: str, path: str) -> dict:
        import httpx

        try:
            r = http.request(method, path)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the training service at {self.url}: {exc}") from None
        body = _body(r)
        if r.status_code != 200:
            raise ServerError(f"{method} {path} failed (HTTP {r.status_code}): {body.get('error', r.text)}")
        return body


def _httpx():
    try:
        import httpx
    except ImportError:
        raise ServerError("--server needs httpx: pip install 'hetrain[service]'") from None
    return httpx


def _body(r) -> dict:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# ---------------------------------------------------------------------- the bundle as a tar stream
def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
    return info.tobuf(format=tarfile.GNU_FORMAT)  # GNU: sizes over 8 GiB (base-256) are fine


def tar_size(jobdir: pathlib.Path) -> int:
    """Bytes of ``tar_stream(jobdir)``: headers, contents padded to 512, and the end marker."""
    block = tarfile.BLOCKSIZE
    return sum(block + -(-(jobdir / n).stat().st_size // block) * block for n in BUNDLE_ORDER) + 2 * block


def tar_stream(jobdir: pathlib.Path, on_bytes=lambda n: None) -> Iterator[bytes]:
    """The bundle's four files as an uncompressed tar, read from disk in 1 MiB chunks (never whole)."""
    for name in BUNDLE_ORDER:
        path = pathlib.Path(jobdir) / name
        size = path.stat().st_size
        yield _tar_header(name, size)
        on_bytes(tarfile.BLOCKSIZE)
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
                on_bytes(len(chunk))
        pad = (-size) % tarfile.BLOCKSIZE
        if pad:
            yield b"\0" * pad
            on_bytes(pad)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)
    on_bytes(2 * tarfile.BLOCKSIZE)
