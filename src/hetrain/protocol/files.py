"""File formats of the protocol: the job bundle (client -> server), outputs, and the model file.

A job bundle is a directory holding only public material:
    public_context.bin   engine.public_bytes(): parameters, public, relinearisation, Galois keys
    inputs.bin           named lists of ciphertexts (a collection: ckks/collection.py)
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

from hetrain._atomic import atomic_write  # noqa: F401  (re-exported: protocol code imports it from here)
from hetrain.ckks import CKKSError, Ciphertext, Engine, KeyMismatch, collection
from hetrain.ckks.container import file_sha256, read_header_file, unpack
from hetrain.ckks.registry import key_part_sizes
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
    """The bytes of ``path``. Raises BundleError naming ``what`` when it does not exist."""
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
# inputs.bin and outputs.bin are collections (ckks/collection.py: the one format for ciphertexts)
def _bundle_error(exc: CKKSError, what: str) -> BundleError:
    if isinstance(exc, collection.OldFormat):
        return BundleError(f"{what}: written by an earlier hetrain (format {exc.kind!r}): write the job bundle "
                           "again with this hetrain (hetrain encrypt, or hetrain fit)")
    if isinstance(exc, KeyMismatch):
        return BundleError(f"{what}: {exc}: they belong to another job")
    return BundleError(f"{what}: {exc}")


def pack_ciphertexts(engine: Engine, named: dict[str, list[Ciphertext]]) -> bytes:
    """``named`` (name -> list of ciphertexts) as the bytes of a collection."""
    return collection.pack(engine, named)


def write_ciphertext_map(path: str | os.PathLike, engine: Engine, named: dict[str, list[Ciphertext]]) -> tuple[int, str]:
    """A collection straight to a file, one serialised ciphertext in memory at a time
    (inputs of thousands of rows weigh gigabytes). Returns (bytes, SHA-256 of the file)."""
    return collection.write(path, engine, named)


def unpack_ciphertexts(engine: Engine, data: bytes, what: str) -> dict[str, list[Ciphertext]]:
    """Inverse of pack_ciphertexts; BundleError naming ``what`` if the bytes are not one (corrupted, or
    ciphertexts of other keys or parameters)."""
    try:
        return collection.unpack(engine, data, what)[0]
    except CKKSError as exc:
        raise _bundle_error(exc, what) from None


def read_ciphertext_map(path: str | os.PathLike, engine: Engine, what: str, *,
                        sha256: str | None = None) -> dict[str, list[Ciphertext]]:
    """Inverse of write_ciphertext_map, reading one ciphertext at a time.

    ``sha256``: the file's known digest (the manifest's). The file is then hashed once, as it is read
    (no per-ciphertext checksums), and a mismatch raises BundleError after the last ciphertext,
    before any of them is returned; without it every part's own checksum is checked."""
    digest = hashlib.sha256() if sha256 is not None else None
    try:
        named, _ = collection.read(path, engine, digest=digest, what=what)
    except FileNotFoundError:
        raise BundleError(f"{what} not found: {path}") from None
    except CKKSError as exc:
        raise _bundle_error(exc, what) from None
    if digest is not None and digest.hexdigest() != sha256:
        raise BundleError(f"{path} does not match the manifest (corrupted or from another job)")
    return named


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
    sizes = {PUBLIC_CONTEXT: size, "key_parts": key_part_sizes(header["backend"], header.get("parts", []))}
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


def read_manifest(jobdir: str | os.PathLike) -> dict:
    """The manifest.json of the bundle in ``jobdir``. Raises BundleError when it is missing, corrupted, or not a
    hetrain-job manifest of this BUNDLE_VERSION.
    """
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
    in chunks, instead of its bytes (keys of gigabytes: load it with ``ckks.load_engine_file``).
    Raises BundleError when a file is missing, the manifest names no checksum for the inputs, or a file does
    not match its checksum.
    """
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
    what each executor worker process loads once (ckks.executor ``loader``). Never a secret key.
    Raises BundleError for a missing or corrupted file, and refuses (BundleError) an engine with a secret key.
    """
    manifest, public, inputs_path, _ = read_job_files(jobdir, defer_inputs=True)
    engine = _public_engine(public)
    return engine, read_ciphertext_map(inputs_path, engine, "encrypted inputs", sha256=manifest["sha256"][INPUTS])


def job_public_bytes(jobdir: str | os.PathLike) -> tuple[bytes, bytes, dict]:
    """(public_context.bin, inputs.bin, the manifest's SHA-256 digests): a job's public files as bytes,
    for workers on machines without JOBDIR (ckks.ray_executor ships them through Ray's object store;
    ``load_job_public_bytes`` checks and loads them there)."""
    d = pathlib.Path(jobdir)
    manifest = read_manifest(d)
    return read_bytes(d / PUBLIC_CONTEXT, "public context"), read_bytes(d / INPUTS, "encrypted inputs"), manifest["sha256"]


def load_job_public_bytes(public: bytes, inputs: bytes, sha256: dict) -> tuple[Engine, dict[str, list[Ciphertext]]]:
    """``load_job_public`` from the files' bytes (``job_public_bytes``): each checked against the
    manifest's digest (BundleError on a mismatch), then loaded with the same checks (a public engine
    only; each ciphertext's own checksum too). Never a secret key."""
    for name, blob in ((PUBLIC_CONTEXT, public), (INPUTS, inputs)):
        if sha256.get(name) != _sha(blob):
            raise BundleError(f"{name} does not match the manifest (corrupted or from another job)")
    engine = _public_engine(public)
    return engine, unpack_ciphertexts(engine, inputs, "encrypted inputs")


def _public_engine(public: bytes) -> Engine:
    """The engine of a public context whose digest was checked; BundleError if it holds a secret key."""
    from hetrain.ckks import load_engine, owner_forced_insecure

    engine = load_engine(public, verify=False, force_insecure=owner_forced_insecure(public))
    if engine.has_secret_key:
        raise BundleError("refusing to run: the engine holds a secret key")
    return engine


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
