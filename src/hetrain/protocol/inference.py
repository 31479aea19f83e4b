"""Encrypted inference: queries encrypted by their owner, scored by a server that cannot decrypt.

Two cases, both with the same bundle (a job bundle, protocol/files.py, whose job.json has
``"task": "inference"``) and the same three steps as training (encrypt → server → decrypt):

(b) plain model, encrypted queries — the MODEL OWNER keeps a plaintext model and publishes its spec
    (model_spec.py); the QUERY OWNER:
        keygen(KEYS) ; encrypt_queries(KEYS, X, spec, QJOB)      column packing, no Galois key
    model owner: infer(QJOB, model=MODEL.json)                   QJOB/outputs.bin, encrypted scores
    query owner: decrypt_scores(KEYS, QJOB) -> Scores            nobody else can decrypt them
    The preprocessing is folded into the plaintext weights (model_spec.folded_layers). The query
    owner has no model, so there is no plaintext twin on its side (the model owner's secret); the
    tests and bench/inference.py compare with it. Release hygiene: the decrypted scores are the
    model's linear outputs; over many chosen queries they reveal the model (d + 1 queries pin an
    mlr class exactly). ``noise_std`` (server side) adds a fresh encryption of N(0, σ²) to every
    score — choose σ well below the gap between the top two scores (it can flip close calls).

(a) encrypted model, encrypted queries — the DATA OWNER trained under KEYS; the server still holds
    JOB/outputs.bin, the encrypted weights (never decrypted there):
        encrypt_queries_for_job(KEYS, X, JOB, QJOB)    same key (same key id), the job's preprocessing,
                                                        fresh evaluation keys for the forward's rotations
        server: infer(QJOB, job=JOB)                     ct × ct in the trainer's own blocked layout
        decrypt_scores(KEYS, QJOB)                       checked against the plaintext twin's scores
    Supported: mlr (full batch, blocked layout): the queries are packed exactly as the training
    rows were (BlockedPacking with the job's I·L·C block), one ct × ct ``mul_sum`` per group +
    log2 L rotations (blocked_matmul.forward); the mini-batch mlr: the same, with the server's
    FINAL encrypted state, not the best validated epoch that ``decrypt`` releases (the server
    learns only the stop bit during training; keeping the best epoch's state there would need it
    to learn which epoch is best, which tells it the validation curve's shape: not done);
    mlp-diagonal and mlp-dvr: each trainer's own forward (``encrypted_scores``) on queries packed
    as its training rows (SampleLayout / GridLayout of the training's geometry), weights as the
    training left them (no repacking). The weights must have the forward's levels left (mlr 1,
    mlp-diagonal W1 depth(σ_h) + 2, mlp-dvr its layers'); otherwise refused with what to do.
    Over the service (inference_remote.py): the same bundles, POST /v1/jobs/{id}/queries.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import secrets
import time

import numpy as np

from hetrain.ckks.pow2 import log2_pow2
from hetrain.circuits import blocked_matmul
from hetrain.circuits.inference import column_pack, column_unpack, n_groups, plain_scores, score_columns
from hetrain.circuits.packing import BlockedPacking
from hetrain.data.validate import check_features

from . import files
from .errors import BundleError, TwinMismatch
from .model_spec import InferenceError, check_spec, folded_layers, model_spec

TASK = "inference"
QUERIES_RECORD = "queries.npz"   # the data owner's private copy of its preprocessed queries (case a)
SCORES_TOLERANCE = 1e-2          # relative, like the training twin's check (client.TWIN_TOLERANCE)
MAX_QUERIES = 1 << 22
FINAL_STATE_NOTE = ("note: these scores are the mini-batch model's final encrypted state, not the best validated "
                    "epoch that `hetrain decrypt` releases")


@dataclasses.dataclass
class Scores:
    """Decrypted scores (n × c, linear: argmax = prediction), the classes, and what was checked."""

    scores: np.ndarray
    classes: list
    twin_max_abs_diff: float | None = None   # case (a): against the plaintext twin's scores
    twin_scores: np.ndarray | None = None
    stats: dict = dataclasses.field(default_factory=dict)

    def predict(self) -> np.ndarray:
        """The predicted label of each row (n,): the class of the highest score."""
        return np.asarray(self.classes)[np.argmax(self.scores, axis=1)]

    def proba(self) -> np.ndarray:
        """Row-wise softmax of the scores (n × c, rows sum to 1; not calibrated: one-vs-rest sigmoids)."""
        from .model import softmax

        return softmax(self.scores)


# ------------------------------------------------------------------------------ case (b): query owner
def encrypt_queries(keys, X, spec: dict, out) -> dict:
    """Encrypt raw feature rows ``X`` (n × d) for a model owner's plaintext model described by
    ``spec``: column packing, at the spec's level, public + relinearisation keys only (no Galois
    key). Writes the bundle to ``out``; returns its job.json. InferenceError when the keys have
    fewer levels than the spec needs (naming the preset that has enough), DataError for rows that
    do not match the spec's feature count."""
    from hetrain import ckks

    spec = check_spec(spec)
    X = _queries(X, spec["n_features"])
    need = spec["levels"]
    if keys.params.levels < need:
        better = ckks.smallest_preset_with_levels(need)
        raise InferenceError(f"the model needs {need} levels; the keys in {keys.path} are {keys.params.name} with "
                             f"{keys.params.levels}: make keys with `hetrain keygen --out NEWKEYS --preset {better}`")
    engine = keys.job_engine(())
    cts = [engine.encrypt(v, level=need) for group in column_pack(X, engine.slots) for v in group]
    job = {"model": TASK, "task": TASK, "mode": "plain-model", "spec": spec, "n_queries": int(X.shape[0]),
           "packing": "column", "job_id": secrets.token_hex(8)}
    files.write_job(out, engine, {"X": cts}, job)
    return job


# ------------------------------------------------------------------------------ case (a): data owner
def encrypt_queries_for_job(keys, X, jobdir, out) -> dict:
    """Encrypt raw feature rows ``X`` for the encrypted model that the server kept from the job in
    ``jobdir`` (trained under ``keys``): the job's preprocessing, the training rows' own packing,
    fresh evaluation keys (the forward's rotations) under the same secret key. The preprocessed
    queries and the plaintext twin's scores stay in KEYS/jobs/<query id>/ (private). Returns the
    bundle's job.json. InferenceError for a model kind without an encrypted forward."""
    from .refresh import twin_long
    from .steps import _client_half

    jobdir = pathlib.Path(jobdir)
    tjob, _, _ = _client_half(keys, jobdir, engine=False)
    kind = getattr(tjob, "kind", None)
    model = tjob.trainer.name
    slots = keys.params.slots
    layout = (getattr(tjob, "bundle", None) or {}).get("layout")
    Xq = tjob.pre.transform(_queries(X, tjob.pre.n_features))
    final_state = False
    if kind == "minibatch" or (model == "mlr" and isinstance(layout, dict) and layout.get("layout") == "blocked"):
        if kind == "minibatch":
            pk = tjob.trainer.packing(tjob.Xp.shape[1], tjob.Y.shape[1], slots)
            steps = int((_server_stats(jobdir).get("trainer") or {}).get("steps", 0))
            W = twin_long(tjob.trainer, tjob.Xp, tjob.Y, steps, tjob.steps_per_refresh)
            out_scale, final_state = 1.0, True
            Xq = Xq @ tjob.P if tjob.P is not None else Xq
        else:
            d, c = tjob.Xp.shape[1], tjob.Y.shape[1]
            pk = BlockedPacking(tjob.Xp.shape[0], d + 1, c, slots, int(layout["I"]), int(layout["L"]), int(layout["C"]))
            _server_stats(jobdir)
            W = tjob.trainer.twin(tjob.Xp, tjob.Y)["W"]
            out_scale = tjob.trainer.schedule(tjob.Xp.shape[0]).out_scale
        Xb = np.concatenate([np.ones((Xq.shape[0], 1)), Xq], axis=1)
        qp = dataclasses.replace(pk, n=Xb.shape[0])
        rotations = qp.rotation_steps()[: log2_pow2(qp.L)]  # the forward's sum over l only
        twin, vectors = Xb @ W.T, qp.pack_forward_data(Xb)
        packing = {"layout": "blocked", "I": qp.I, "L": qp.L, "C": qp.C, "d": qp.d, "c": qp.c}
    elif model in ("mlp-diagonal", "mlp-dvr") and hasattr(tjob, "bundle"):
        _server_stats(jobdir)
        trainer, job = tjob.trainer, tjob.bundle
        rows = trainer.query_rows(Xq) if hasattr(trainer, "query_rows") else Xq
        twin = trainer.linear_scores(trainer.twin(tjob.Xp, tjob.Y), rows)
        packing = trainer.query_packing(job, slots)
        rotations, vectors, out_scale = packing["steps"], trainer.pack_queries(job, rows, slots), 1.0
    else:
        raise InferenceError(f"job {tjob.job_id} trained {model}: its encrypted model cannot score encrypted "
                             "queries (supported: mlr, mini-batch mlr, mlp-dvr, mlp-diagonal); decrypt it and use "
                             "`hetrain encrypt-queries --model-spec` (case b)")
    engine = keys.job_engine(rotations)
    qid = secrets.token_hex(8)
    record = keys.job_dir(qid, create=True)
    files.atomic_write(record / QUERIES_RECORD, _npz(Xq=Xq, twin_scores=twin), mode=0o600)
    files.atomic_write(record / "query.json", json.dumps({"train_job_id": tjob.job_id, "out_scale": out_scale,
                                                          "model": model, "final_state": final_state}), mode=0o600)
    cts = [engine.encrypt(v) for v in vectors]
    job = {"model": TASK, "task": TASK, "mode": "encrypted-model", "train_job_id": tjob.job_id,
           "n_queries": int(Xq.shape[0]), "classes": [int(k) for k in tjob.pre.classes], "packing": packing,
           "job_id": qid}
    files.write_job(out, engine, {"X": cts}, job)
    return {**job, "scores_final_state": final_state}


def _server_stats(jobdir: pathlib.Path) -> dict:
    if not (jobdir / files.OUTPUTS).is_file() and not (jobdir / files.SERVER_STATS).is_file():
        raise InferenceError(f"{jobdir} has not been trained (no {files.OUTPUTS}): train it first")
    try:
        return json.loads(files.read_bytes(jobdir / files.SERVER_STATS, "server statistics"))
    except BundleError:
        return {}


def _npz(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _queries(X, d: int) -> np.ndarray:
    from hetrain.errors import DataError

    X = check_features(X, what="queries")
    if X.shape[1] != d:
        raise DataError(f"the queries have {X.shape[1]} features; the model takes {d}")
    if X.shape[0] > MAX_QUERIES:
        raise DataError(f"{X.shape[0]} queries in one bundle; at most {MAX_QUERIES}: split them")
    return X


# ------------------------------------------------------------------------------ the server
def infer(qdir, *, model=None, job=None, noise_std: float = 0.0, seed: int | None = None) -> dict:
    """Score the encrypted queries in ``qdir`` (public material only) and write QDIR/outputs.bin:
    with ``model`` (a TrainedModel or its path: case b) or ``job`` (a trained job directory whose
    outputs.bin is the encrypted model: case a). Every claim of the bundle is checked before it is
    used (query_check.py). Returns the server's statistics (also in QDIR/server_stats.json).
    Raises InferenceError unless exactly one of ``model`` and ``job`` is given, or when the queries and the
    model (or job) disagree; BundleError (ClaimError) for a bundle whose claims are false.
    """
    from hetrain import ckks

    from .query_check import check_query_bundle

    if (model is None) == (job is None):
        raise InferenceError("give exactly one of --model (a plaintext model) or --job (a trained job's encrypted model)")
    qdir = pathlib.Path(qdir)
    for name in files.SERVER_FILES:
        (qdir / name).unlink(missing_ok=True)
    facts = check_query_bundle(qdir)
    manifest, public, inputs_path, qjob = files.read_job_files(qdir)
    t0 = time.perf_counter()
    engine = ckks.load_engine(public, force_insecure=ckks.owner_forced_insecure(public))
    if engine.has_secret_key:  # cannot happen through load_engine(public): keep the invariant explicit
        raise BundleError("refusing to score: the server engine holds a secret key")
    n = int(qjob["n_queries"])
    if model is not None:
        out, level_info = _score_plain_model(engine, qjob, inputs_path, model)
    else:
        out, level_info = _score_encrypted_model(engine, qjob, manifest, inputs_path, pathlib.Path(job))
    if noise_std > 0:
        rng = np.random.default_rng(seed)
        out = [engine.add(ct, engine.encrypt(rng.normal(0.0, noise_std, engine.slots), level=ct.level)) for ct in out]
    files.write_ciphertext_map(qdir / files.OUTPUTS, engine, {"S": out})
    stats = {"n_queries": n, "infer_s": time.perf_counter() - t0, "n_input_ciphertexts": facts.n_ciphertexts,
             "n_output_ciphertexts": len(out), "noise_std": float(noise_std), "mode": qjob["mode"],
             "engine_has_secret_key": engine.has_secret_key, **level_info}
    files.atomic_write(qdir / files.SERVER_STATS, json.dumps(stats, indent=1))
    return stats


def _load_model(model):
    from .model import TrainedModel

    return TrainedModel.load(model) if not isinstance(model, TrainedModel) else model


def _score_plain_model(engine, qjob, inputs_path, model):
    if qjob["mode"] != "plain-model":
        raise InferenceError("these queries were encrypted for the encrypted model of a training job (case a): "
                             "score them with --job JOB, not --model")
    model = _load_model(model)
    layers = folded_layers(model)
    mine = model_spec(model, layers)
    theirs = qjob["spec"]
    if theirs.get("spec_id") != mine["spec_id"]:
        raise InferenceError(f"the queries were encrypted for model spec {theirs.get('spec_id')} ({theirs.get('model')}, "
                             f"{theirs.get('n_features')} features, {theirs.get('n_classes')} classes); this model's "
                             f"spec is {mine['spec_id']} ({mine['model']}, {mine['n_features']} features, "
                             f"{mine['n_classes']} classes): publish this model's spec and have the queries "
                             "encrypted for it")
    cts = files.read_ciphertext_map(inputs_path, engine, "encrypted queries")["X"]
    low = min(ct.level for ct in cts)
    if low < mine["levels"]:
        raise InferenceError(f"the queries have {low} levels left; this model needs {mine['levels']}")
    d = mine["n_features"]
    out = []
    for g in range(len(cts) // d):
        out.extend(score_columns(engine, cts[g * d:(g + 1) * d], layers))
    return out, {"query_level": low, "levels_used": mine["levels"]}


def query_packing(qjob: dict, slots: int) -> BlockedPacking:
    """The BlockedPacking of ``n_queries`` rows that query job ``qjob`` records (d, c, I, L, C) in ``slots``
    slots. Raises KeyError/ValueError for a job description without those fields.
    """
    p = qjob["packing"]
    return BlockedPacking(int(qjob["n_queries"]), int(p["d"]), int(p["c"]), slots, int(p["I"]), int(p["L"]), int(p["C"]))


LEVEL_ADVICE = ("train with fewer iterations or a preset with more levels, or decrypt it and use case (b) "
                "(`hetrain model-spec`, `hetrain encrypt-queries --model-spec`)")


def _score_encrypted_model(engine, qjob, qmanifest, inputs_path, jobdir: pathlib.Path):
    if qjob["mode"] != "encrypted-model":
        raise InferenceError("these queries were encrypted for a plaintext model's spec (case b): score them with "
                             "--model MODEL.json, not --job")
    tman = files.read_manifest(jobdir)
    if tman.get("key_id") != qmanifest["key_id"]:
        raise InferenceError(f"the queries are encrypted under key {qmanifest['key_id']}; the model of {jobdir} was "
                             f"trained under key {tman.get('key_id')}: encrypt the queries with the key directory "
                             "that trained it")
    if tman.get("job_id") != qjob.get("train_job_id"):
        raise InferenceError(f"the queries were encrypted for job {qjob.get('train_job_id')}; {jobdir} is job "
                             f"{tman.get('job_id')}")
    if tman.get("params") != qmanifest["params"]:
        raise InferenceError(f"the queries and job {tman.get('job_id')} use different CKKS parameters")
    if not (jobdir / files.OUTPUTS).is_file():
        raise InferenceError(f"{jobdir} holds no encrypted model ({files.OUTPUTS}): train it first")
    weights = files.read_ciphertext_map(jobdir / files.OUTPUTS, engine, "the encrypted model")
    note = {"trained_model": tman.get("model")}
    if tman.get("model") == "mlr-minibatch":
        note["scores"] = "final encrypted state (not the best validated epoch that decrypt releases)"
    if qjob["packing"].get("layout") in ("diagonal", "grid"):
        out, info = _score_encrypted_mlp(engine, qjob, inputs_path, jobdir, weights)
        return out, {**info, **note}
    W = weights.get("W")
    pk = query_packing(qjob, engine.slots)
    if W is None or len(W) != pk.n_fblocks:
        raise InferenceError(f"the encrypted model of {jobdir} does not have the layout the queries were packed for")
    low = min(ct.level for ct in W)
    if low < 1:
        raise InferenceError(f"the encrypted model has {low} levels left; inference needs 1: {LEVEL_ADVICE}")
    X = files.read_ciphertext_map(inputs_path, engine, "encrypted queries")["X"]
    return blocked_matmul.forward(engine, pk, X, W), {"model_level": low, "levels_used": 1, **note}


def _score_encrypted_mlp(engine, qjob, inputs_path, jobdir: pathlib.Path, weights: dict):
    """Case (a) for mlp-diagonal / mlp-dvr: the trainer's own forward (its ``encrypted_scores``) on
    queries packed as its training rows, with the encrypted weights as the training left them."""
    from hetrain.ckks.errors import DepthExhausted
    from hetrain.models.base import get_trainer

    tjob = json.loads(files.read_bytes(jobdir / files.JOB, "the training job"))
    trainer = get_trainer(tjob["model"]).from_job(tjob)
    if not hasattr(trainer, "encrypted_scores"):
        raise InferenceError(f"job {tjob.get('job_id')} trained {tjob['model']}, whose encrypted model has no forward "
                             "for queries packed this way")
    want = trainer.query_packing(tjob, engine.slots)
    if qjob["packing"] != want:
        raise InferenceError(f"the queries were packed as {qjob['packing']}; the encrypted model of this job takes "
                             f"{want}: encrypt them again with `hetrain encrypt-queries --job`")
    low = {k: min(ct.level for ct in v) for k, v in weights.items()}
    if tjob["model"] == "mlp-diagonal":
        need = {"w1": trainer.forward_levels(), "w2": 1}
        short = {k: v for k, v in need.items() if low.get(k, 0) < v}
        if short:
            raise InferenceError(f"the encrypted model's weights have levels {low}; its forward needs W1 at "
                                 f"{need['w1']} and W2 at 1: {LEVEL_ADVICE}")
    X = files.read_ciphertext_map(inputs_path, engine, "encrypted queries")["X"]
    try:
        out = trainer.encrypted_scores(engine, X, weights, tjob)
    except DepthExhausted:
        raise InferenceError(f"the encrypted model's weights have too few levels left for its forward (lowest "
                             f"{min(low.values())}): {LEVEL_ADVICE}") from None
    return out, {"model_level": min(low.values())}


# ------------------------------------------------------------------------------ decrypt (both cases)
def decrypt_scores(keys, qdir, *, server: str | None = None, remote_job: str | None = None, server_ca=None,
                   progress: bool = True) -> Scores:
    """Decrypt QDIR/outputs.bin with the secret key of ``keys``: the n × c linear scores. Case (a)
    compares them with the plaintext twin's scores (TwinMismatch beyond CKKS noise: nothing is
    returned). InferenceError for scores under another key (naming both key ids). ``server``: first
    fetch them from the `hetrain serve` service (QDIR/remote.json, or ``remote_job``:
    inference_remote.fetch_scores).
    Raises InferenceError for a training job's directory or no scores yet, BundleError when outputs.bin holds
    another number of ciphertexts than the queries make.
    """
    from .client import check_twin

    qdir = pathlib.Path(qdir)
    manifest, _, _, qjob = files.read_job_files(qdir)
    if qjob.get("task") != TASK:
        raise InferenceError(f"{qdir} is a training job, not a query bundle: use `hetrain decrypt`")
    if manifest.get("key_id") != keys.key_id:
        raise InferenceError(f"the queries in {qdir} were encrypted under key {manifest.get('key_id')}; {keys.path} "
                             f"holds key {keys.key_id}: use the key directory that encrypted them")
    if server is not None:
        from .inference_remote import fetch_scores

        fetch_scores(qdir, server, remote_job=remote_job, server_ca=server_ca, progress=progress)
    if not (qdir / files.OUTPUTS).is_file():
        raise InferenceError(f"{qdir} holds no scores yet ({files.OUTPUTS}): the model owner runs "
                             f"`hetrain infer --queries {qdir}` first")
    engine = keys.job_engine(())
    out = files.read_ciphertext_map(qdir / files.OUTPUTS, engine, "encrypted scores")["S"]
    vecs = [engine.decrypt(ct) for ct in out]
    n = int(qjob["n_queries"])
    stats = {"n_queries": n, "mode": qjob["mode"]}
    if qjob["mode"] == "plain-model":
        c = int(qjob["spec"]["n_classes"])
        if len(vecs) != c * n_groups(n, engine.slots):
            raise BundleError(f"{qdir / files.OUTPUTS} holds {len(vecs)} ciphertexts; {n} queries of {c} classes "
                              f"make {c * n_groups(n, engine.slots)}")
        S = column_unpack([vecs[i:i + c] for i in range(0, len(vecs), c)], n)
        return Scores(S, list(qjob["spec"]["classes"]), stats=stats)
    record = keys.job_dir(qjob["job_id"])
    meta = json.loads((record / "query.json").read_bytes())
    with np.load(record / QUERIES_RECORD) as f:
        twin = f["twin_scores"]
    if qjob["packing"].get("layout") in ("diagonal", "grid"):
        from .client_jobs import ClientJob

        p = qjob["packing"]
        groups = -(-n // int(p["batch"] if p["layout"] == "diagonal" else p["S"]))
        if len(vecs) != groups:
            raise BundleError(f"{qdir / files.OUTPUTS} holds {len(vecs)} ciphertexts; the queries make {groups}")
        tjob = ClientJob.load(keys.job_dir(meta["train_job_id"]))  # the training job's private record
        tjob.after_load()
        S = tjob.trainer.read_scores(vecs, tjob.bundle, n)
    else:
        pk = query_packing(qjob, engine.slots)
        if len(vecs) != pk.n_groups:
            raise BundleError(f"{qdir / files.OUTPUTS} holds {len(vecs)} ciphertexts; the queries make {pk.n_groups}")
        S = float(meta["out_scale"]) * pk.unpack_forward(vecs)
    diff = float(np.max(np.abs(S - twin)))
    check_twin(diff, twin, SCORES_TOLERANCE, what="the decrypted scores")
    if meta.get("final_state"):
        stats["final_state_note"] = FINAL_STATE_NOTE
    return Scores(S, list(qjob["classes"]), diff, twin, stats={**stats, "twin_max_abs_diff": diff})


def plain_model_scores(model, X) -> np.ndarray:
    """The plaintext twin of case (b): the folded layers on raw rows (n × c linear scores)."""
    model = _load_model(model)
    return plain_scores(check_features(X, what="queries"), folded_layers(model))


# ------------------------------------------------------------------------------ the server process
INFER_ENTRY = "hetrain.protocol.infer_main"  # what ``python -m`` runs (never imported by the package)


def infer_argv(qdir, *, job=None, model=None, noise_std: float = 0.0) -> list[str]:
    """The inference server process's command line (the service runs it under its limits with
    runner.ServerProcess.start(argv=...)): ``infer`` on ``qdir`` with ``job`` (case a) or ``model`` (b).
    Raises InferenceError unless exactly one of ``model`` and ``job`` is given.
    """
    import os
    import sys

    if (model is None) == (job is None):
        raise InferenceError("give exactly one of model= or job=")
    cmd = [sys.executable, "-m", INFER_ENTRY, os.fspath(qdir)]
    cmd += ["--job", os.fspath(job)] if job is not None else ["--model", os.fspath(model)]
    if noise_std:
        cmd += ["--noise-std", repr(float(noise_std))]
    return cmd


def main(argv: list[str] | None = None) -> int:
    """``python -m hetrain.protocol.infer_main QDIR (--job JOB | --model MODEL) [--noise-std S]``:
    ``infer`` in a process of its own. Exit 0 with QDIR/server_stats.json; 2 for a user error and 5
    out of memory (QDIR/server_error.json says which, as the training server's: runner.py reads
    it); 3 for a bug (with its traceback there)."""
    import argparse
    import logging
    import sys
    import traceback

    from hetrain.errors import HetrainUserError

    from .server import _say, _write_error

    p = argparse.ArgumentParser(prog=f"python -m {INFER_ENTRY}", description="score a query bundle")
    p.add_argument("qdir")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--job")
    which.add_argument("--model")
    p.add_argument("--noise-std", type=float, default=0.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="infer %(levelname)s: %(message)s")
    qdir = pathlib.Path(args.qdir)
    try:
        stats = infer(qdir, model=args.model, job=args.job, noise_std=args.noise_std)
        logging.getLogger("hetrain.infer").info("%d queries scored in %.2f s", stats["n_queries"], stats["infer_s"])
        return 0
    except HetrainUserError as exc:
        _write_error(qdir, exc)
        _say(f"server error: {exc}")
        return 2
    except MemoryError:
        exc = MemoryError("the inference exceeded the memory allowed for it")
        _write_error(qdir, exc)
        _say(f"server error: {exc}")
        return 5
    except Exception as exc:
        _write_error(qdir, exc, traceback.format_exc())
        traceback.print_exc()
        return 3


__all__ = ["Scores", "TwinMismatch", "decrypt_scores", "encrypt_queries", "encrypt_queries_for_job", "infer",
           "plain_model_scores"]
