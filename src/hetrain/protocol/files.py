"""File formats of the protocol: the job bundle (client -> server), outputs, and the model file.

A job bundle is a directory holding only public material:
    public_context.bin   engine.public_bytes(): parameters, public, relinearisation, Galois keys
    inputs.bin           named lists of ciphertexts (container of engine.serialize blobs)
    job.json             the trainer's job dict (shapes, layout, schedule; nothing secret)
    manifest.json        format version, backend, key id, parameter fingerprint
The server adds outputs.bin (same format as inputs.bin), server_stats.json, or server_error.json.
Every file is written to a temporary name and renamed, so a failure never leaves half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib

import numpy as np

from hetrain._atomic import atomic_write, atomic_writer  # noqa: F401  (re-exported: protocol code imports them from here)
from hetrain.ckks import CKKSError, Ciphertext, Engine
from hetrain.ckks.container import (file_sha256, iter_container_file, pack, read_header_file, unpack,
                                     write_container_file)
from hetrain.outputs import write_output

from .errors import BundleError, ModelFileError

PUBLIC_CONTEXT = "public_context.bin"
INPUTS = "inputs.bin"
JOB = "job.json"
MANIFEST = "manifest.json"
OUTPUTS = "outputs.bin"
SERVER_STATS = "server_stats.json"
SERVER_ERROR = "server_error.json"
CHECKPOINT = "state.ckpt"           # the server's training state (protocol/checkpoint.py)
SERVER_FILES = (OUTPUTS, SERVER_STATS, SERVER_ERROR, CHECKPOINT)  # what a run of the server leaves in JOBDIR
BUNDLE_VERSION = 1
MODEL_FORMAT = "hetrain-model"
MODEL_VERSION = 1


def read_bytes(path: pathlib.Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{what} not found: {path}") from None


def _read_json(path: pathlib.Path, what: str) -> dict:
    try:
        return json.loads(read_bytes(path, what))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{what} {path} is corrupted: {exc}") from None


# ---------------------------------------------------------------------- ciphertext maps
def _map_meta(engine: Engine, named: dict[str, list[Ciphertext]]) -> dict:
    return {"kind": "ciphertext_map", "key_id": engine.key_id, "counts": {n: len(cts) for n, cts in named.items()}}


def _map_parts(engine: Engine, named: dict[str, list[Ciphertext]]):
    for name, cts in named.items():
        for i, ct in enumerate(cts):
            yield f"{name}/{i}", engine.serialize(ct)


def pack_ciphertexts(engine: Engine, named: dict[str, list[Ciphertext]]) -> bytes:
    return pack(_map_meta(engine, named), dict(_map_parts(engine, named)))


def write_ciphertext_map(path: str | os.PathLike, engine: Engine, named: dict[str, list[Ciphertext]]) -> tuple[int, str]:
    """pack_ciphertexts straight to a file, one serialised ciphertext in memory at a time
    (inputs of thousands of rows weigh gigabytes). Returns (bytes, SHA-256 of the file)."""
    return write_container_file(path, _map_meta(engine, named), _map_parts(engine, named))


def _ciphertext_map(engine: Engine, meta: dict, parts, what: str, verify: bool = True) -> dict[str, list[Ciphertext]]:
    """Deserialise (name/i, bytes) parts in order; KeyMismatch/SerializationError become a BundleError.
    ``verify=False``: the caller checks a digest over the whole file (the parts' own checksums are skipped)."""
    try:
        if meta.get("key_id") != engine.key_id:
            raise BundleError(f"{what} were encrypted under key {meta.get('key_id')}, not this engine's key "
                              f"{engine.key_id}: they belong to another job")
        counts = meta["counts"]
        out: dict[str, list[Ciphertext]] = {name: [] for name in counts}
        for part_name, blob in parts:
            name, _, _ = part_name.rpartition("/")
            out[name].append(engine.deserialize(blob, verify=verify))
        if any(len(out[n]) != k for n, k in counts.items()):
            raise KeyError("ciphertext counts differ from the header")
        return out
    except CKKSError as exc:
        raise BundleError(f"{what}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{what}: malformed ciphertext map ({exc})") from None


def unpack_ciphertexts(engine: Engine, data: bytes, what: str) -> dict[str, list[Ciphertext]]:
    """Inverse of pack_ciphertexts."""
    try:
        meta, parts = unpack(data, expect_kind="ciphertext_map")
    except CKKSError as exc:
        raise BundleError(f"{what}: {exc}") from None
    return _ciphertext_map(engine, meta, parts.items(), what)


def read_ciphertext_map(path: str | os.PathLike, engine: Engine, what: str, *,
                        sha256: str | None = None) -> dict[str, list[Ciphertext]]:
    """Inverse of write_ciphertext_map, reading one ciphertext at a time.

    ``sha256``: the file's known digest (the manifest's). The file is then hashed once, as it is read
    (no per-ciphertext checksums), and a mismatch raises BundleError after the last ciphertext,
    before any of them is returned; without it every part's own checksum is checked."""
    digest = hashlib.sha256() if sha256 is not None else None
    try:
        meta, parts = iter_container_file(path, expect_kind="ciphertext_map", digest=digest)
    except FileNotFoundError:
        raise BundleError(f"{what} not found: {path}") from None
    except CKKSError as exc:
        raise BundleError(f"{what}: {exc}") from None
    if digest is None:
        return _ciphertext_map(engine, meta, parts, what)
    try:
        out = _ciphertext_map(engine, meta, parts, what, verify=False)
    finally:
        parts.close()  # releases the file if the map stopped early (an error)
    if digest.hexdigest() != sha256:
        raise BundleError(f"{path} does not match the manifest (corrupted or from another job)")
    return out


# ---------------------------------------------------------------------- job bundle
def write_job(jobdir: str | os.PathLike, engine: Engine, inputs: dict[str, list[Ciphertext]], job: dict) -> dict[str, int]:
    """Write the bundle; returns the bytes of each file and of each key kind (upload accounting).

    Never writes a secret key: only ``engine.public_bytes()`` and ciphertexts go to disk.
    """
    d = pathlib.Path(jobdir)
    d.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST,) + SERVER_FILES:  # a new bundle is a new job: nothing of an earlier one may be read as its
        (d / name).unlink(missing_ok=True)
    job_text = json.dumps(job, sort_keys=True)  # fails early (before big writes) if the job is not JSON
    # the public context can weigh gigabytes: write it and let it go before packing the data
    writer = getattr(engine, "write_public", None)
    if writer is not None:  # OpenFHE: keys of gigabytes streamed to the file, never held twice in memory
        size, digest = writer(d / PUBLIC_CONTEXT)
        header = read_header_file(d / PUBLIC_CONTEXT, "public_context")
    else:
        public = engine.public_bytes()
        header, _ = unpack(public, expect_kind="public_context")
        size, digest = len(public), _sha(public)
        atomic_write(d / PUBLIC_CONTEXT, public)
        del public
    sizes = {PUBLIC_CONTEXT: size, "key_parts": {_KEY_PART_NAMES.get(p["name"], p["name"]): p["size"]
                                                 for p in header.get("parts", [])}}
    sha = {PUBLIC_CONTEXT: digest}
    sizes[INPUTS], sha[INPUTS] = write_ciphertext_map(d / INPUTS, engine, inputs)
    sizes[JOB], sha[JOB] = len(job_text), _sha(job_text.encode())
    atomic_write(d / JOB, job_text)
    manifest = {"format": "hetrain-job", "version": BUNDLE_VERSION, "backend": engine.backend_name,
                "key_id": engine.key_id, "params": engine.params.fingerprint(), "model": job.get("model"),
                "job_id": job.get("job_id"),
                "sha256": sha}
    atomic_write(d / MANIFEST, json.dumps(manifest, sort_keys=True, indent=1))  # last: marks the bundle complete
    return sizes


# names of the public context's parts (seal backend) in upload accounting
_KEY_PART_NAMES = {"pk": "public_key", "rlk": "relin_keys", "gk": "galois_keys"}


def read_manifest(jobdir: str | os.PathLike) -> dict:
    m = _read_json(pathlib.Path(jobdir) / MANIFEST, "job manifest")
    if m.get("format") != "hetrain-job" or m.get("version") != BUNDLE_VERSION:
        raise BundleError(f"{jobdir} is not a hetrain job bundle of version {BUNDLE_VERSION}")
    return m


def read_job_files(jobdir: str | os.PathLike, *, defer_inputs: bool = False,
                   public_path: bool = False) -> tuple[dict, bytes | pathlib.Path, pathlib.Path, dict]:
    """(manifest, public context bytes, path of the inputs, job) with every checksum verified.

    The inputs stay on disk (they can weigh gigabytes): read them with ``read_ciphertext_map``.
    ``defer_inputs``: do not hash inputs.bin here; the caller reads it with
    ``read_ciphertext_map(..., sha256=manifest["sha256"][INPUTS])``, which hashes it as it loads
    (the server: one pass over the file instead of two). ``public_path``: the public context's path, hashed
    in chunks, instead of its bytes (keys of gigabytes: load it with ``ckks.load_engine_file``)."""
    d = pathlib.Path(jobdir)
    manifest = read_manifest(d)
    if public_path:
        if not (d / PUBLIC_CONTEXT).is_file():
            raise BundleError(f"public context not found: {d / PUBLIC_CONTEXT}")
        public, public_sha = d / PUBLIC_CONTEXT, file_sha256(d / PUBLIC_CONTEXT)
    else:
        public = read_bytes(d / PUBLIC_CONTEXT, "public context")
        public_sha = _sha(public)
    job_bytes = read_bytes(d / JOB, "job description")
    if not (d / INPUTS).is_file():
        raise BundleError(f"encrypted inputs not found: {d / INPUTS}")
    checks = [(PUBLIC_CONTEXT, public_sha), (JOB, _sha(job_bytes))]
    if not defer_inputs:
        checks.append((INPUTS, file_sha256(d / INPUTS)))
    elif not isinstance(manifest["sha256"].get(INPUTS), str):
        raise BundleError(f"{d / MANIFEST} names no checksum for {INPUTS}")
    for name, digest in checks:
        if manifest["sha256"].get(name) != digest:
            raise BundleError(f"{d / name} does not match the manifest (corrupted or from another job)")
    return manifest, public, d / INPUTS, json.loads(job_bytes)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def load_job_public(jobdir: str | os.PathLike) -> tuple[Engine, dict[str, list[Ciphertext]]]:
    """(public engine, inputs) of a job bundle, checksums verified with one hashing pass per file:
    what each executor worker process loads once (ckks.executor ``loader``). Never a secret key."""
    from hetrain.ckks import load_engine, owner_forced_insecure

    manifest, public, inputs_path, _ = read_job_files(jobdir, defer_inputs=True)
    engine = load_engine(public, verify=False, force_insecure=owner_forced_insecure(public))
    if engine.has_secret_key:
        raise BundleError("refusing to run: the engine holds a secret key")
    return engine, read_ciphertext_map(inputs_path, engine, "encrypted inputs", sha256=manifest["sha256"][INPUTS])


# ---------------------------------------------------------------------- model file
def save_model(path: str | os.PathLike, record: dict) -> None:
    """JSON model file with a checksum over its content (weights as flat lists with their shapes),
    readable by its owner only (0600)."""
    body = dict(record, format=MODEL_FORMAT, version=MODEL_VERSION)
    body["weights"] = {k: {"shape": list(np.shape(v)), "values": np.asarray(v, dtype=np.float64).ravel().tolist()}
                       for k, v in record["weights"].items()}
    body["checksum"] = _model_checksum(body)
    # the user's output after the whole training: kept elsewhere (and said where) if `path` refuses it.
    # 0600: the weights, and the per-feature means and deviations of the training data, are the owner's
    write_output(path, json.dumps(body, indent=1), "model file", durable=True, mode=0o600)


def load_model(path: str | os.PathLike) -> dict:
    """Inverse of save_model: the record with weights as arrays; ModelFileError if anything is off."""
    p = pathlib.Path(path)
    try:
        # bytes, not read_text(): json detects UTF-8 (with or without a BOM, as editors save it) and
        # UTF-16/32 itself, whatever the locale's encoding
        body = json.loads(p.read_bytes())
    except FileNotFoundError:
        raise ModelFileError(f"model file {str(p)!r} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{p} is not a hetrain model file (not valid JSON: {exc})") from None
    if not isinstance(body, dict) or body.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{p} is not a hetrain model file")
    if body.get("version") != MODEL_VERSION:
        raise ModelFileError(f"{p} has model format version {body.get('version')}, this hetrain reads {MODEL_VERSION}")
    if body.get("checksum") != _model_checksum(body):
        raise ModelFileError(f"{p} is corrupted or was edited (checksum mismatch)")
    try:
        body["weights"] = {k: np.asarray(w["values"], dtype=np.float64).reshape(w["shape"])
                           for k, w in body["weights"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{p}: malformed weights ({exc})") from None
    return body


def _model_checksum(body: dict) -> str:
    content = {k: v for k, v in body.items() if k != "checksum"}
    return _sha(json.dumps(content, sort_keys=True).encode())
