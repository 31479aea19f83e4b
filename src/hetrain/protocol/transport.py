"""How a job bundle reaches a server and its outputs come back.

    LocalTransport()                        the server process here (steps.train), the channel answered here
    HttpTransport("http://127.0.0.1:8750")  the `hetrain serve` service (needs hetrain[service]: httpx)

Both take a job directory written by ``files.write_job`` (public material only), leave the
encrypted outputs in ``JOBDIR/outputs.bin`` and return the server's stats (server_stats.json).
The secret key never takes part: decryption stays with the caller.

A job with ``"refresh": "client"`` asks the data owner to refresh its state while it trains. Over
HTTP the data owner answers with ``serve_http`` (long polls on ``/v1/jobs/{id}/channel``, one
answer per request, computed by refresh_channel.ChannelAnswerer): it may stop and start again
while the job waits, and survives dropped connections. ``HttpTransport.run(...,
refresh_handler=...)`` runs it in a thread while it follows the job.

Authentication: the service answers a submission with the job's id and bearer token
(``RemoteJob``); every later request on the job carries ``Authorization: Bearer <token>``.
``hetrain submit`` keeps them in ``JOB/remote.json`` (mode 0600: url, id, token; ``save_remote``)
for ``refresh``/``decrypt --server`` (``load_remote``; or --remote-job with HETRAIN_JOB_TOKEN);
``fit --server`` keeps them in memory. A service with API keys needs one to submit (``api_key``,
or HETRAIN_API_KEY). Certificates are verified (httpx's default CAs, or ``ca``: a PEM file of a
private CA, or HETRAIN_SERVER_CA).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import pathlib
import tarfile
import threading
import time
from typing import Iterator, Protocol
from urllib.parse import urlsplit

from tqdm import tqdm

from hetrain._atomic import atomic_writer
from hetrain.errors import HetrainUserError

from . import files
from .errors import RequestFailed, ServerError
from .http_retry import retry_idempotent
from .monitor import PeakRSS
from .refresh_channel import ChannelError, ChannelStats, decode_frame, encode_frame  # the frame format's one definition

log = logging.getLogger("hetrain.transport")

BUNDLE_ORDER = (files.MANIFEST, files.JOB, files.PUBLIC_CONTEXT, files.INPUTS)  # small files first
_CHUNK = 1 << 20
SEQ_HEADER = "X-Hetrain-Seq"      # the relay's number of the pending request (service/app.py)
DEFAULT_POLL_WAIT_S = 25.0        # long-poll wait (the service caps it at 30 s)
DEFAULT_GIVE_UP_S = 600.0         # serve_http: consecutive seconds without reaching the service
DEFAULT_STATUS_RETRY_S = 120.0    # HttpTransport: consecutive seconds of failed status (or download) requests
_DELETE_RETRY_S = 10.0            # a DELETE is best effort: retried this long at most
REMOTE = "remote.json"            # JOB/remote.json: the service's url, the job's id and token (0600)
TOKEN_ENV, API_KEY_ENV, CA_ENV = "HETRAIN_JOB_TOKEN", "HETRAIN_API_KEY", "HETRAIN_SERVER_CA"


@dataclasses.dataclass(frozen=True)
class RemoteJob:
    """A job on a service: where, its id, and the bearer token that reads, follows and deletes it."""

    url: str
    id: str
    token: str = dataclasses.field(repr=False)

    def __str__(self) -> str:
        return self.id


class Transport(Protocol):
    """Where the server half runs: LocalTransport (a child process here) or HttpTransport (a service)."""
    def preflight(self) -> None:
        """Fail fast (before keys are made) if the server cannot take the job."""

    def run(self, jobdir: pathlib.Path, progress: bool = True, mem: PeakRSS | None = None, *,
            refresh_handler=None, client_engine=None, job_id: str | None = None, on_progress=None,
            trainer_modules=(), on_submitted=None) -> dict:
        """Train; with ``refresh_handler`` (and ``client_engine``) this process answers the job's
        refresh requests, and the stats carry its view of the channel under "client_channel".
        ``on_progress(done, total, message)`` follows the server's iterations; ``trainer_modules``:
        modules a local server imports (trainers outside hetrain.models; a service has its own);
        ``on_submitted(remote_id)``: called when a service has accepted the job."""


class LocalTransport:
    """The server as a child process on this machine (what `hetrain fit` does without --server):
    ``steps.train`` with this process attached to the job's refresh channel (``serve_socket``).
    ``channel_timeout``: how long the server waits for this process's answers (``steps.train``'s;
    None: refresh_channel.DEFAULT_TIMEOUT_S). ``workers``: the server's worker processes (``steps.train``'s;
    None: every core)."""

    def __init__(self, channel_timeout: float | None = None, workers: int | None = None) -> None:
        self.channel_timeout = channel_timeout
        self.workers = workers

    def preflight(self) -> None:
        """Nothing to check before keys are made: the server runs on this machine."""
        pass

    def run(self, jobdir: pathlib.Path, progress: bool = True, mem: PeakRSS | None = None, *,
            refresh_handler=None, client_engine=None, job_id: str | None = None, on_progress=None,
            trainer_modules=(), on_submitted=None) -> dict:
        """Train ``jobdir`` in a server child process (``steps.train``); with ``refresh_handler`` this process
        answers the job's refresh channel meanwhile. Returns the server's stats (seconds, bytes, operations),
        with this end's ChannelStats under "client_channel". Raises ServerError when the server fails, and
        ChannelError when the channel breaks while the server is still running.
        """
        from .refresh_channel import channel_location, job_id_of, serve_socket
        from .steps import train  # the server side's one entry; imported late (steps imports this module)

        answered: list[ChannelStats] = []

        def during(proc) -> None:
            try:
                answered.append(serve_socket(channel_location(jobdir), client_engine, refresh_handler,
                                             job_id or job_id_of(jobdir), alive=proc.alive))
            except ChannelError:
                if proc.alive():
                    raise
                # the server ended first (e.g. it never needed us): its exit status and error decide

        stats = train(jobdir, progress=progress, mem=mem, on_progress=on_progress, trainer_modules=trainer_modules,
                      during=during if refresh_handler is not None else None, channel_timeout=self.channel_timeout,
                      workers=self.workers)
        if answered:
            stats["client_channel"] = answered[0].as_dict()
        return stats


def make_transport(server: "str | Transport | None", **http_options) -> Transport:
    """None -> LocalTransport; an http(s) URL -> HttpTransport; a transport object as it is.
    Raises ServerError for a string that is not an http(s) URL.
    """
    if server is None:
        return LocalTransport()
    if isinstance(server, str):
        if not server.startswith(("http://", "https://")):
            raise ServerError(f"--server must be an http:// or https:// URL, got {server!r}")
        return HttpTransport(server, **http_options)
    return server


class HttpTransport:
    """Upload the bundle to the service, follow the job, download the outputs, then delete the job.

    Status, download, DELETE and the refresh channel's requests are retried (http_retry: tenacity,
    idempotent requests only); when they keep failing, ``run`` raises RequestFailed and leaves the
    job on the service (never deleted because a request failed), its id and token in JOB/remote.json.

    ``poll_s``: the longest wait between status requests; ``timeout_s``: give up (and delete the
    job) after this long in all (None: wait as long as training takes); ``keep_remote``: leave
    the job on the service after downloading.
    """

    def __init__(self, url: str, *, poll_s: float = 2.0, timeout_s: float | None = None,
                 keep_remote: bool = False, poll_wait: float = DEFAULT_POLL_WAIT_S,
                 retry_s: float = DEFAULT_STATUS_RETRY_S, token: str | None = None, api_key: str | None = None,
                 ca: str | os.PathLike | None = None) -> None:
        """``token``: the job's bearer token for ``attach``/``fetch`` (``run`` and ``submit`` get
        theirs from the service); ``api_key``: to submit to a service with API keys (default
        $HETRAIN_API_KEY); ``ca``: a PEM file of the CA that signed the service's certificate
        (default $HETRAIN_SERVER_CA; else the system's CAs)."""
        self.url = url.rstrip("/")
        self.token = token
        self.api_key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
        self.ca = ca if ca is not None else (os.environ.get(CA_ENV) or None)
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.keep_remote = keep_remote
        self.poll_wait = poll_wait  # the refresh channel's long-poll wait
        self.retry_s = retry_s      # how long status requests may keep failing (service restarting, network)
        quiet = logging.getLogger("httpx")
        if quiet.level == logging.NOTSET:  # httpx logs every request at INFO: polling would flood the CLI
            quiet.setLevel(logging.WARNING)

    def preflight(self) -> None:
        """The service answers /v1/health (keygen and encryption can take minutes: check first)."""
        self._health()

    def _client(self, timeout=None, token: str | None = None):
        """An httpx client on the service: certificates verified (``ca``), ``token`` in every request."""
        httpx = _httpx()
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return httpx.Client(base_url=self.url, timeout=timeout if timeout is not None else
                            httpx.Timeout(30.0, read=600.0), verify=tls_verify(self.ca), headers=headers)

    def _job_token(self, remote_id: str) -> str:
        if not self.token:
            raise HetrainUserError(f"no token for the service's job {remote_id}: HttpTransport(token=...), "
                                   f"JOB/{REMOTE} (written by hetrain submit) or ${TOKEN_ENV}")
        _warn_if_clear(self.url)
        return self.token

    def submit(self, jobdir, progress: bool = True) -> RemoteJob:
        """Upload the bundle in ``jobdir``; returns the service's job (url, id, token), which then
        trains on its own (``hetrain submit``). Follow it with ``attach`` and ``fetch`` on a
        transport that holds its token."""
        with self._client() as http:
            remote_id, token = self._upload(http, pathlib.Path(jobdir), progress)
        self.token = token
        return RemoteJob(self.url, remote_id, token)

    def submit_queries(self, qdir, path: str, progress: bool = True, token: str | None = None) -> RemoteJob:
        """Upload the query bundle in ``qdir`` to ``path`` of the service (service/inference.py):
        ``/v1/jobs/{id}/queries`` with the training job's ``token`` (case a), or
        ``/v1/models/{spec_id}/queries`` with the API key, if any (case b). Returns the new
        inference job (its own id and token), followed and fetched like any job."""
        if token:
            _warn_if_clear(self.url)
        with self._client() as http:
            remote_id, new_token = self._upload(http, pathlib.Path(qdir), progress, path=path, token=token)
        return RemoteJob(self.url, remote_id, new_token)

    def wait(self, remote_id: str, progress: bool = True) -> dict:
        """Wait for the service's job ``remote_id`` to be done and return its stats; the job and its
        outputs stay on the service (case a: its encrypted model scores queries there).
        ServerError with the service's message if it failed."""
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        with self._client(token=self._job_token(remote_id)) as http:
            return self._wait(http, remote_id, progress, deadline, None)

    def models(self) -> list[dict]:
        """The specs of the plaintext models the service scores with (GET /v1/models; no token).
        Raises ServerError when the answer is not a list of models.
        """
        with self._client(timeout=30.0) as http:
            got = self._json(http, "GET", "/v1/models").get("models")
        if not isinstance(got, list):
            raise ServerError(f"the service at {self.url} did not list its models: is it a hetrain service of this "
                              "version?")
        return got

    def attach(self, remote_id: str, engine, handler, job_id: str, progress: bool = False) -> ChannelStats:
        """Answer the refresh requests of the service's job ``remote_id`` until it ends (serve_http);
        ``job_id``: the job's own id (its manifest's), which the server's hello must carry."""
        return serve_http(self.url, remote_id, engine, handler, progress=progress, poll_wait=self.poll_wait,
                          answerer_job_id=job_id, token=self._job_token(remote_id), ca=self.ca)

    def fetch(self, remote_id: str, jobdir, progress: bool = True) -> dict:
        """Wait for the service's job ``remote_id`` to end, download its encrypted outputs and its stats
        into ``jobdir`` and remove the job from the service (unless ``keep_remote``); ServerError with
        the service's message if it failed."""
        jobdir = pathlib.Path(jobdir)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        with self._client(token=self._job_token(remote_id)) as http:
            stats = self._wait(http, remote_id, progress, deadline, None)
            self._download(http, remote_id, jobdir / files.OUTPUTS, stats.get("download_bytes"), progress)
            if not self.keep_remote:
                self._delete(http, remote_id)
        files.atomic_write(jobdir / files.SERVER_STATS, json.dumps(stats, indent=1))
        return stats

    def run(self, jobdir: pathlib.Path, progress: bool = True, mem: PeakRSS | None = None, *,
            refresh_handler=None, client_engine=None, job_id: str | None = None, on_progress=None,
            trainer_modules=(), on_submitted=None) -> dict:
        """Upload, follow, download (``on_progress(done, total, message)``: the server's steps as the
        service reports them; ``trainer_modules``: not used over HTTP, the service's operator chooses
        its trainer modules; ``on_submitted(remote_id)``: called once the
        service has accepted the job). ``refresh_handler`` (with ``client_engine``, the engine with
        the secret key): answer the job's refresh requests over HTTP while it trains (serve_http
        in a thread); the stats then carry this side's view of the channel under
        "client_channel". ``job_id``: the job id the answerer expects in the server's hello
        (default refresh_channel.job_id_of(jobdir)).
        Raises ServerError for a job refreshed by the client without ``refresh_handler``, a bundle larger than
        the service accepts, a failed upload, a failed job or one past ``timeout_s``; RequestFailed (a
        ServerError) when the service stops answering (the job stays there, JOB/remote.json names it).
        """
        jobdir = pathlib.Path(jobdir)
        if refresh_handler is None and _job_refresh_mode(jobdir) == "client":
            raise ServerError("this job's state is refreshed by the client (--refresh client): "
                              "HttpTransport.run needs refresh_handler and client_engine to answer it")
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        answering = None
        with self._client() as http:  # read timeout 600 s: the service checks a big upload before it answers
            remote_id, token = self._upload(http, jobdir, progress)
            http.headers["Authorization"] = f"Bearer {token}"  # the job's token: kept in memory only
            _warn_if_clear(self.url)
            if on_submitted is not None:
                on_submitted(remote_id)
            try:  # a failed request (RequestFailed) keeps the job; any other end of the run frees the service
                if refresh_handler is not None:
                    from .refresh_channel import job_id_of

                    answering = _Answering(self.url, remote_id, client_engine, refresh_handler,
                                           answerer_job_id=job_id or job_id_of(jobdir), poll_wait=self.poll_wait,
                                           token=token, ca=self.ca)
                stats = self._wait(http, remote_id, progress, deadline, answering, on_progress)
                if answering is not None:
                    stats = {**stats, "client_channel": answering.finish().as_dict()}
                self._download(http, remote_id, jobdir / files.OUTPUTS, stats.get("download_bytes"), progress)
            except RequestFailed as exc:
                # the service could not be reached, not a decision about the job: it may still be running or
                # done there, so it is never deleted for this; its id and token stay in JOB/remote.json
                if answering is not None:
                    answering.stop()
                saved = save_remote(jobdir, RemoteJob(self.url, remote_id, token))
                raise RequestFailed(f"{exc}. The job was left on the service ({saved} holds its id and token): "
                                    f"`hetrain decrypt --keys KEYS --job {jobdir} --server {self.url} --out MODEL` "
                                    "fetches it once the service answers") from None
            except BaseException:
                if answering is not None:
                    answering.stop()
                self._delete(http, remote_id)  # it failed there, timed out, or was interrupted: free the service
                raise
            if not self.keep_remote:
                self._delete(http, remote_id)
        files.atomic_write(jobdir / files.SERVER_STATS, json.dumps(stats, indent=1))
        return stats

    # ------------------------------------------------------------------ steps
    def _health(self) -> dict:
        with self._client(timeout=30.0) as http:
            return self._json(http, "GET", "/v1/health")

    def _upload(self, http, jobdir: pathlib.Path, progress: bool, *, path: str = "/v1/jobs",
                token: str | None = None) -> tuple[str, str]:
        """(the service's id of the job, its token). ``path``: where to POST the bundle; ``token``:
        the credential to send instead of the API key (a training job's, for its queries)."""
        import httpx

        health = self._json(http, "GET", "/v1/health")
        total = tar_size(jobdir)
        limit = health.get("max_upload_bytes")
        if limit is not None and total > limit:
            raise ServerError(f"the job bundle is {total / 2**20:.1f} MiB; the service at {self.url} accepts at most "
                              f"{limit / 2**20:.1f} MiB (its --max-upload-mb)")
        headers = {"content-type": "application/x-tar", "content-length": str(total)}
        credential = token or self.api_key
        if credential:
            _warn_if_clear(self.url)
            headers["Authorization"] = f"Bearer {credential}"
        with tqdm(total=total, desc="upload", unit="B", unit_scale=True, disable=not progress) as bar:
            try:
                r = http.post(path, content=tar_stream(jobdir, bar.update), headers=headers)
            except httpx.HTTPError as exc:
                raise ServerError(f"upload to {self.url} failed: {exc}") from None
        body = _body(r)
        if r.status_code != 201:
            hint = (f" (give an API key: --api-key or ${API_KEY_ENV})" if r.status_code == 401 and not credential
                    else "")
            raise ServerError(f"the service refused the job (HTTP {r.status_code}): {body.get('error', r.text)}{hint}")
        if not isinstance(body.get("id"), str) or not isinstance(body.get("token"), str):
            raise ServerError(f"the service at {self.url} accepted the job but returned no id and token: is it a "
                              "hetrain service of this version?")
        return body["id"], body["token"]

    def _wait(self, http, job_id: str, progress: bool, deadline: float | None, answering=None,
              on_progress=None) -> dict:
        delay = 0.1  # short first waits (small jobs finish in seconds), growing to poll_s
        last = None
        with tqdm(desc="server train", unit="it", disable=not progress) as bar:
            while True:
                if answering is not None:
                    answering.check()  # our answers failed (e.g. a client check refused the state): stop
                st = self._status(http, job_id)
                p = st.get("progress") or {}
                if p.get("total"):
                    bar.total, bar.n = p["total"], p["done"]
                    if on_progress is not None and (p["done"], p["total"]) != last:
                        last = (p["done"], p["total"])
                        on_progress(p["done"], p["total"], p.get("message") or "")
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

    def _status(self, http, job_id: str) -> dict:
        """The job's status; connection errors and 5xx are retried for up to ``retry_s`` seconds
        (the job goes on without us meanwhile)."""
        path = f"/v1/jobs/{job_id}"
        r = retry_idempotent(lambda: http.get(path), url=self.url, give_up_s=self.retry_s,
                             what=f"status of job {job_id}", after=f"; job {job_id} may still be running there")
        body = _body(r)
        if r.status_code != 200:
            raise ServerError(f"GET {path} failed (HTTP {r.status_code}): {body.get('error', r.text)}")
        return body

    def _download(self, http, job_id: str, path: pathlib.Path, size: int | None, progress: bool) -> None:
        """GET the result into ``path`` (atomically); a broken connection starts the GET again
        (retry_idempotent, up to ``retry_s``), so ``path`` only ever holds a whole download."""
        def get():
            with http.stream("GET", f"/v1/jobs/{job_id}/result") as r:
                if r.status_code != 200:
                    r.read()
                    return r
                with atomic_writer(path) as f, tqdm(total=size, desc="download", unit="B", unit_scale=True,
                                                          disable=not progress) as bar:
                    for chunk in r.iter_bytes(_CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
                return r

        r = retry_idempotent(get, url=self.url, give_up_s=self.retry_s, what=f"result of job {job_id}",
                             after=f"; job {job_id} and its result stay on the service")
        if r.status_code != 200:
            raise ServerError(f"downloading the result failed (HTTP {r.status_code}): {_body(r).get('error', r.text)}")

    def _delete(self, http, job_id: str) -> None:
        """DELETE the job: best effort (a few retries), once its fate is decided."""
        try:
            retry_idempotent(lambda: http.delete(f"/v1/jobs/{job_id}"), url=self.url, give_up_s=_DELETE_RETRY_S,
                             what=f"delete job {job_id}")
        except Exception:  # the job's outcome is already known: a service that cannot be reached keeps it
            log.info("could not delete job %s on %s", job_id, self.url)

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


# ---------------------------------------------------------------------- the refresh channel over HTTP
def make_answerer(engine, handler, job_id):
    """The data owner's answers, one frame in, one out (refresh_channel.ChannelAnswerer).
    Raises ServerError when this hetrain has no ChannelAnswerer.
    """
    from . import refresh_channel

    answerer = getattr(refresh_channel, "ChannelAnswerer", None)
    if answerer is None:
        raise ServerError("this hetrain has no refresh_channel.ChannelAnswerer: it cannot answer a remote "
                          "job's refresh requests")
    return answerer(engine, handler, job_id)


def serve_http(url: str, job_id: str, engine, handler, *, progress: bool = False,
               poll_wait: float = DEFAULT_POLL_WAIT_S, answerer=None, answerer_job_id: str | None = None,
               stop: threading.Event | None = None, give_up_s: float | None = DEFAULT_GIVE_UP_S,
               token: str | None = None, ca: str | os.PathLike | None = None) -> ChannelStats:
    """Answer the refresh requests of job ``job_id`` on the service at ``url`` until it is done or
    failed (the service answers 410); returns this side's counts (round trips, bytes both ways,
    the time spent answering).

    Long-polls ``GET /v1/jobs/{id}/channel?wait=poll_wait`` and posts each answer to
    ``/v1/jobs/{id}/channel/{seq}``. ``answerer`` (default ``ChannelAnswerer(engine, handler,
    answerer_job_id)``; ``answerer_job_id``: the bundle's job id, refresh_channel.job_id_of(JOBDIR),
    by default the key id as there) computes the answer frame of each request frame; pass the
    same answerer to a later session so that a request resent after a drop is not computed twice. Connection
    errors and 5xx are retried with backoff (the job waits on the service meanwhile); after
    ``give_up_s`` consecutive seconds of them, ServerError. A 409 on an answer means the service
    sends that request again (its connection to the server was re-established): it is answered
    again. ``stop`` (an Event): return at the next chance, leaving the job to another session.
    When the answerer refuses (an "error" frame with a fixed code, its reason in ``failure``), the
    frame is delivered and the reason raised. ``token``: the job's bearer token (sent with every
    request); ``ca``: the service's CA (as HttpTransport's).
    """
    httpx = _httpx()
    if answerer is None:
        answerer = make_answerer(engine, handler, answerer_job_id or engine.key_id)
    stats, ops = ChannelStats(), ChannelStats()
    path = f"/v1/jobs/{job_id}/channel"
    stopped = (lambda: stop.is_set()) if stop is not None else (lambda: False)  # noqa: E731
    timeout = httpx.Timeout(30.0, read=poll_wait + 30.0)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers, verify=tls_verify(ca)) as http, \
            tqdm(desc="refresh", unit="rt", disable=not progress) as bar:
        while not stopped():
            r = retry_idempotent(lambda: http.get(path, params={"wait": poll_wait}), url=url, give_up_s=give_up_s,
                                 what="refresh channel", stop=stop)
            if r is None:  # stopped
                continue
            if r.status_code == 410:  # done or failed: nothing more to answer
                break
            if r.status_code == 204:
                continue
            if r.status_code != 200 or SEQ_HEADER.lower() not in r.headers:
                raise ServerError(f"GET {path} failed (HTTP {r.status_code}): {_body(r).get('error', r.text)}")
            seq, request = int(r.headers[SEQ_HEADER]), r.content
            try:
                header, blobs = decode_frame(request)
            except ChannelError as exc:
                raise ChannelError(f"malformed request frame from the service ({exc})") from None
            t0 = time.perf_counter()
            try:
                reply, out = answerer.answer(header, blobs)
            except BaseException:  # an answerer that raises instead of answering "error"
                # a fixed code only (refresh_channel.ERROR_CODES): our reason may hold decrypted-derived numbers
                try:  # once, no retries
                    http.post(f"{path}/{seq}", content=encode_frame({"op": "error", "code": "client_refused"}))
                except Exception:  # the service may be unreachable: our own error is the one to raise
                    pass
                raise
            stats.client_seconds += time.perf_counter() - t0
            stats.bytes_to_client += len(request)
            body = encode_frame(reply, out)
            status = _post_answer(http, url, path, seq, body, give_up_s, stop)
            if status == 200:
                stats.round_trips += 1
                stats.bytes_to_server += len(body)
                ops.refreshes += reply.get("op") == "refreshed" or (reply.get("op") == "verdict"
                                                                     and reply.get("state") is not None)
                ops.evaluations += reply.get("op") == "verdict"
                bar.update(1)
            elif status == 410:
                break
            # 409: the relay lost its connection to the server, which sends the request again
            failure = getattr(answerer, "failure", None)
            if failure is not None:  # we refused (the server was told a fixed code): our own reason
                raise failure
    counted = getattr(answerer, "stats", None)
    stats.refreshes = getattr(counted, "refreshes", ops.refreshes)
    stats.evaluations = getattr(counted, "evaluations", ops.evaluations)
    return stats


def _post_answer(http, url: str, path: str, seq: int, body: bytes, give_up_s: float | None,
                 stop: threading.Event | None) -> int | None:
    """POST the answer to request ``seq`` (idempotent: the service takes one answer per number),
    retrying connection errors and 5xx (http_retry); its final status (None: ``stop`` was set
    before it was delivered)."""
    r = retry_idempotent(lambda: http.post(f"{path}/{seq}", content=body,
                                           headers={"content-type": "application/octet-stream"}),
                         url=url, give_up_s=give_up_s, what=f"answer to request {seq}", stop=stop)
    if r is None:
        return None
    if r.status_code in (200, 409, 410):
        if r.status_code == 409:
            log.info("answer to request %d not taken (%s): asking again", seq, _body(r).get("error"))
        return r.status_code
    raise ServerError(f"the service refused the answer to request {seq} (HTTP {r.status_code}): "
                      f"{_body(r).get('error', r.text)}")


class _Answering:
    """serve_http in a daemon thread for HttpTransport.run: ``check`` raises its error while the
    job runs, ``finish`` waits for it after the job ended, ``stop`` abandons it."""

    def __init__(self, url, job_id, engine, handler, *, answerer_job_id, poll_wait, token=None, ca=None) -> None:
        self._stop = threading.Event()
        self._auth = {"token": token, "ca": ca}
        self.stats: ChannelStats | None = None
        self.error: BaseException | None = None
        answerer = make_answerer(engine, handler, answerer_job_id)  # fails here, before any wait
        self._thread = threading.Thread(target=self._run, daemon=True, name="hetrain-answer",
                                        args=(url, job_id, engine, handler, answerer, poll_wait))
        self._thread.start()

    def _run(self, url, job_id, engine, handler, answerer, poll_wait) -> None:
        try:
            self.stats = serve_http(url, job_id, engine, handler, answerer=answerer, poll_wait=poll_wait,
                                    stop=self._stop, **self._auth)
        except BaseException as exc:  # raised in the caller's thread by check/finish
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self, timeout: float = DEFAULT_POLL_WAIT_S + 60.0) -> ChannelStats:
        """After the job is done: the answering thread sees 410 on its next poll and returns."""
        self._thread.join(timeout)
        self.check()
        if self._thread.is_alive():
            self._stop.set()
            raise ServerError("the job finished but answering its refresh channel did not stop")
        return self.stats

    def stop(self) -> None:
        self._stop.set()


def _job_refresh_mode(jobdir: pathlib.Path) -> str:
    try:
        return str(json.loads((jobdir / files.JOB).read_text()).get("refresh", "none"))
    except (OSError, ValueError, AttributeError):
        return "none"


def tls_verify(ca: str | os.PathLike | None):
    """httpx's ``verify``: True (the system's CAs, httpx's default) or an SSL context trusting ``ca`` only.
    Raises HetrainUserError when the CA certificate ``ca`` cannot be loaded.
    """
    if ca is None:
        return True
    import ssl

    try:
        return ssl.create_default_context(cafile=os.fspath(ca))
    except (OSError, ssl.SSLError) as exc:
        raise HetrainUserError(f"cannot load the CA certificate {ca} (--server-ca, ${CA_ENV}): {exc}") from None


_warned: set[str] = set()


def _warn_if_clear(url: str) -> None:
    """Once per service: a token or API key about to cross the network in clear."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" or url in _warned or host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    _warned.add(url)
    log.warning("%s is plain http beyond loopback: the job's token and any API key cross the network "
                "unencrypted (use https)", url)


# ---------------------------------------------------------------------- JOB/remote.json
def save_remote(jobdir, remote: RemoteJob) -> pathlib.Path:
    """Write JOB/remote.json (mode 0600 from its creation: it holds the job's token)."""
    path = pathlib.Path(jobdir) / REMOTE
    files.atomic_write(path, json.dumps({"url": remote.url, "id": remote.id, "token": remote.token}, indent=1),
                       mode=0o600)
    return path


def load_remote(jobdir, url: str, remote_id: str | None = None) -> RemoteJob:
    """The service's job for ``refresh``/``decrypt --server URL``: its id (``remote_id``, else
    JOB/remote.json's) and token (JOB/remote.json's when it is for that service and job, else
    $HETRAIN_JOB_TOKEN). HetrainUserError naming what is missing."""
    url = url.rstrip("/")
    path = pathlib.Path(jobdir) / REMOTE
    saved, other = None, None
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise HetrainUserError(f"{path} is unreadable ({exc}): give --remote-job ID and ${TOKEN_ENV}") from None
        if not isinstance(saved, dict) or not all(isinstance(saved.get(k), str) for k in ("url", "id", "token")):
            raise HetrainUserError(f"{path} is not what hetrain submit writes: give --remote-job ID and ${TOKEN_ENV}")
        if saved["url"].rstrip("/") != url:  # never send a token to another service than the one that made it
            saved, other = None, saved["url"]
    elsewhere = f" ({path} is for the service at {other})" if other else ""
    remote_id = remote_id or (saved["id"] if saved else None)
    if not remote_id:
        raise HetrainUserError(f"--server needs the service's job id: --remote-job ID, or {path} (hetrain submit "
                               f"writes it){elsewhere}")
    token = saved["token"] if saved and saved["id"] == remote_id else (os.environ.get(TOKEN_ENV) or None)
    if not token:
        raise HetrainUserError(f"no token for the service's job {remote_id}: hetrain submit wrote it to {path}; "
                               f"else set ${TOKEN_ENV}{elsewhere}")
    return RemoteJob(url, remote_id, token)


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
