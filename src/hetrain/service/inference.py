"""Encrypted inference on the service: which models it scores with, and what a query bundle must match.

Two cases (protocol/inference.py), each a job of the service's queue (``task: "inference"``) that
runs ``python -m hetrain.protocol.infer_main`` in its own process under the service's limits:

(a) ``POST /v1/jobs/{id}/queries`` with the TRAINING job's token: queries of the data owner that
    trained job ``id``, encrypted under the same key for its encrypted model (JOB/outputs.bin,
    never decrypted here). ``check_for_job`` refuses a bundle under another key, of other CKKS
    parameters, or made for another job, before anything runs.
(b) ``hetrain serve --model MODEL.json`` (repeatable): the model owner's plaintext models, each
    named by its spec id (``ModelRegistry``). ``GET /v1/models`` publishes their specs (no
    weights); ``POST /v1/models/{spec_id}/queries`` takes another party's encrypted queries;
    ``check_for_model`` refuses a bundle made for another spec.

Both answer a new job id and ITS OWN token (``GET /v1/jobs/{qid}``, ``/result``: the encrypted
scores, ``DELETE``): the holder of a training job's token can read the scores of the queries it
submitted, and a query job's token reads nothing else. Every claim of a query bundle is checked
(protocol/query_check.py, in the upload checker's child process) before the service spends memory
on it.
"""
from __future__ import annotations

import os
import pathlib

from hetrain.errors import HetrainUserError
from hetrain.protocol import files
from hetrain.protocol.bundle_check import read_json

from .upload import UploadError


class ModelRegistry:
    """The model owner's plaintext models that the service scores with, by spec id."""

    def __init__(self, paths=()) -> None:
        from hetrain.protocol.model import TrainedModel
        from hetrain.protocol.model_spec import model_spec

        self.paths: dict[str, pathlib.Path] = {}
        self.specs: dict[str, dict] = {}
        for path in paths:
            path = pathlib.Path(path).resolve()
            try:
                spec = model_spec(TrainedModel.load(path))
            except HetrainUserError as exc:
                raise HetrainUserError(f"--model {path}: {exc}") from None
            self.paths[spec["spec_id"]] = path
            self.specs[spec["spec_id"]] = spec

    def __bool__(self) -> bool:
        return bool(self.specs)

    def path(self, spec_id: str) -> pathlib.Path | None:
        return self.paths.get(spec_id)


def _query_job(upload_dir: pathlib.Path) -> dict:
    job = read_json(upload_dir / files.JOB, "job.json")  # bounded read; checked already by query_check
    if not isinstance(job, dict):
        raise UploadError("job.json of the query bundle is not an object")
    return job


def check_for_job(upload_dir: pathlib.Path, train_dir: pathlib.Path) -> dict:
    """Case (a): UploadError unless the query bundle in ``upload_dir`` was made for the encrypted
    model of the training job in ``train_dir``: mode "encrypted-model", the same key id, CKKS
    parameters and job id. Returns its job.json."""
    job = _query_job(upload_dir)
    if job.get("mode") != "encrypted-model":
        raise UploadError("these queries were encrypted for a model spec (case b): send them to "
                          "/v1/models/{spec_id}/queries, or encrypt them with --job for this job's encrypted model")
    mine = files.read_manifest(upload_dir)
    theirs = files.read_manifest(train_dir)
    if mine.get("key_id") != theirs.get("key_id"):
        raise UploadError(f"the queries are encrypted under key {mine.get('key_id')}; this job's model was trained "
                          f"under key {theirs.get('key_id')}: encrypt them with the key directory that trained it")
    if mine.get("params") != theirs.get("params"):
        raise UploadError("the queries and this job use different CKKS parameters: encrypt them with the key "
                          "directory that trained it")
    if job.get("train_job_id") != theirs.get("job_id"):
        raise UploadError(f"the queries were encrypted for job {job.get('train_job_id')}; this service job trained "
                          f"job {theirs.get('job_id')}")
    return job


def check_for_model(upload_dir: pathlib.Path, spec: dict) -> dict:
    """Case (b): UploadError unless the query bundle in ``upload_dir`` was encrypted for ``spec``."""
    job = _query_job(upload_dir)
    if job.get("mode") != "plain-model":
        raise UploadError("these queries were encrypted for a training job's encrypted model (case a): send them "
                          "to /v1/jobs/{id}/queries with that job's token")
    theirs = job.get("spec") if isinstance(job.get("spec"), dict) else {}
    if theirs.get("spec_id") != spec["spec_id"]:
        raise UploadError(f"the queries were encrypted for model spec {theirs.get('spec_id')}; this endpoint's model "
                          f"is {spec['spec_id']}: fetch its spec (GET /v1/models) and encrypt the queries for it")
    return job


def has_model(train_dir: os.PathLike) -> bool:
    """Whether a finished training job still holds its encrypted model."""
    return (pathlib.Path(train_dir) / files.OUTPUTS).is_file()
