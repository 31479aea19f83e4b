"""Encrypted inference through a `hetrain serve` service: the query owner's side over HTTP.

Consistent with ``submit`` / ``decrypt --server`` (steps.py): each upload answers an id and a
bearer token, kept in ``QJOB/remote.json`` (mode 0600, transport.save_remote) for the fetch.

(a) the data owner's encrypted model stays on the service (``hetrain submit`` trained it there;
    JOB/remote.json holds the training job's id and token):
        training_stats(JOB, URL)                   wait until trained; JOB/server_stats.json (the
                                                   client's plaintext twin needs the server's step count)
        encrypt_queries_for_job(KEYS, X, JOB, QJOB)  (inference.py)
        submit_queries(QJOB, URL, jobdir=JOB)      POST /v1/jobs/{id}/queries with the job's token
        decrypt_scores(KEYS, QJOB, server=URL)     fetch QJOB/outputs.bin, then decrypt and check
(b) a model owner's service (`hetrain serve --model MODEL.json`):
        fetch_spec(URL) -> spec                    GET /v1/models (the published specs, no weights)
        encrypt_queries(KEYS, X, spec, QJOB)       (inference.py)
        submit_queries(QJOB, URL)                  POST /v1/models/{spec_id}/queries (API key if asked)
        decrypt_scores(KEYS, QJOB, server=URL)
"""
from __future__ import annotations

import json
import pathlib

from hetrain.errors import HetrainUserError

from . import files
from .model_spec import InferenceError, check_spec
from .transport import HttpTransport, RemoteJob, load_remote, make_transport, save_remote


def _http(server, **options) -> HttpTransport:
    if not (isinstance(server, str) and server.startswith(("http://", "https://"))):
        raise HetrainUserError(f"--server must be the URL of a `hetrain serve` service, got {server!r}")
    transport = make_transport(server, **options)
    assert isinstance(transport, HttpTransport)
    return transport


def training_stats(jobdir, server: str, *, remote_job: str | None = None, server_ca=None,
                   progress: bool = True) -> dict:
    """Wait for the training job of ``jobdir`` on the service (JOB/remote.json, or ``remote_job``
    with $HETRAIN_JOB_TOKEN) to be done; write its statistics to JOB/server_stats.json and return
    them. Its encrypted model stays on the service (nothing is downloaded or deleted)."""
    remote = load_remote(jobdir, server, remote_job)
    stats = _http(server, token=remote.token, ca=server_ca).wait(remote.id, progress)
    files.atomic_write(pathlib.Path(jobdir) / files.SERVER_STATS, json.dumps(stats, indent=1))
    return stats


def fetch_spec(server: str, spec_id: str | None = None, *, server_ca=None) -> dict:
    """The spec of a model that the service scores with (GET /v1/models): ``spec_id``'s, or the only
    one. InferenceError when it has none, or several and no ``spec_id``."""
    specs = _http(server, ca=server_ca).models()
    ids = [s.get("spec_id") for s in specs if isinstance(s, dict)]
    if spec_id is None and len(ids) == 1:
        spec_id = ids[0]
    if spec_id not in ids:
        raise InferenceError(f"the service at {server} scores with model spec(s) {ids or 'none'}"
                             + ("" if spec_id is None else f", not {spec_id}") + ": give --spec-id one of them")
    return check_spec(specs[ids.index(spec_id)], f"the spec served by {server}")


def submit_queries(qdir, server: str, *, jobdir=None, remote_job: str | None = None, api_key: str | None = None,
                   server_ca=None, progress: bool = True) -> RemoteJob:
    """Upload the query bundle in ``qdir`` to the service: for the encrypted model of the training
    job ``jobdir`` ran there (case a: the bundle was made by encrypt_queries_for_job; the training
    job's token from JOB/remote.json authorises it), or for the model of its spec (case b). Writes
    QDIR/remote.json (the inference job's id and token, 0600) and returns it.
    Raises InferenceError for a directory that is not a query bundle, or queries for an encrypted model
    without ``jobdir``.
    """
    qdir = pathlib.Path(qdir)
    qjob = files.read_job_files(qdir)[3]
    mode = qjob.get("mode")
    if mode == "encrypted-model":
        if jobdir is None:
            raise InferenceError(f"{qdir} holds queries for a training job's encrypted model: give the job "
                                 "(--job JOB, with JOB/remote.json from `hetrain submit`)")
        train = load_remote(jobdir, server, remote_job)
        transport = _http(server, ca=server_ca)
        remote = transport.submit_queries(qdir, f"/v1/jobs/{train.id}/queries", progress, token=train.token)
    elif mode == "plain-model":
        spec_id = check_spec(qjob.get("spec"), f"{qdir}'s model spec")["spec_id"]
        transport = _http(server, api_key=api_key, ca=server_ca)
        remote = transport.submit_queries(qdir, f"/v1/models/{spec_id}/queries", progress)
    else:
        raise InferenceError(f"{qdir} is not a query bundle (hetrain encrypt-queries makes one)")
    save_remote(qdir, remote)
    return remote


def fetch_scores(qdir, server: str, *, remote_job: str | None = None, server_ca=None, progress: bool = True) -> dict:
    """Wait for the inference job of ``qdir`` on the service (QDIR/remote.json), download its
    encrypted scores into QDIR/outputs.bin and remove it from the service; returns its stats."""
    remote = load_remote(qdir, server, remote_job)
    return _http(server, token=remote.token, ca=server_ca).fetch(remote.id, qdir, progress)
