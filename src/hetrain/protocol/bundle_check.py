"""A job bundle's claims checked against what it holds, before memory is spent on any claim.

    facts = check_bundle(JOBDIR)             # BundleError (a clear message) if anything disagrees

What a bundle declares: the manifest (backend, key id, parameter fingerprint, model), the public
context's header (CKKS parameters, rotation steps, its key parts and their sizes), the inputs'
header (names, counts, every ciphertext part's size and level) and job.json (``data_shape`` [n, d, c]
and the trainer's own fields: n_samples/n_features/n_classes, n/d/c, sizes, n_batches, layout,
iterations). Checked here, in this order, each from files read in bounded pieces:

1. the JSON files are small (``MAX_JSON_BYTES``), of the expected types, and agree with each other;
   job.json's trainer config passes the trainer's typed schema (models/configs.py; JobConfigError
   with a ``code``: config-unknown-key, config-wrong-type, config-out-of-range) before anything else
   of the bundle is read;
2. the parameters are a ring SEAL supports with a sane chain; the rotation steps are in range;
   every container's parts add up to its file's size exactly (no trailing bytes), and each part
   of the public context is no larger than a key of those parameters can be;
3. every ciphertext part is a ciphertext container of this backend, parameters and key, at a
   level of the chain, of the size a ciphertext at that level has (exact for sim, bounded for SEAL);
4. ``data_shape`` is positive integers whose values the ciphertexts can hold (n·d and n·c at most
   the slots of all input ciphertexts: every trainer encrypts X and Y in full), BEFORE the
   trainer sees them; the trainer's fields agree with it; then the trainer's plan for that shape
   must fit the chain's levels, need no rotation the public context lacks, and count exactly the
   ciphertexts that inputs.bin holds (``Plan.n_input_ciphertexts``).

The service runs this in a child process under a memory limit (``main``: the secret-key scan of
secret_scan.py, then ``check_bundle``; started by service/upload.py), so that no
claim, however it reaches a trainer's code, can make the service allocate; the server process
runs it again (run_job) before it loads anything.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import struct
import sys
from typing import BinaryIO

from hetrain.ckks import registry
from hetrain.ckks import collection
from hetrain.ckks.container import MAGIC
from hetrain.ckks.errors import SerializationError
from hetrain.ckks.params import MAX_BITS_128, CKKSParams
from hetrain.errors import HetrainUserError

from . import files
from .errors import BundleError

MAX_JSON_BYTES = 1 << 20          # job.json and manifest.json: a few KB for every built-in trainer
MAX_HEADER_BYTES = collection.MAX_HEADER_BYTES  # inputs.bin's header lists every part (~150 bytes each)
MAX_PART_HEADER = 4096            # one ciphertext's own header
MAX_CHAIN = 64                    # primes in a modulus chain (SEAL allows at most 64 at N=32768)
# ring degrees a bundle may claim: SEAL's (the HE standard's table) and OpenFHE's bootstrapping ring 2^16
# (whose 128-bit check is OpenFHE's own, HEStd_128_classic, done when the context is built)
RING_DEGREES = frozenset(MAX_BITS_128) | {65536}
SEAL_SLACK = 1.02                 # compressed SEAL data can exceed its raw size by a little
SHAPE_FIELDS = {"n_samples": 0, "n": 0, "n_features": 1, "d": 1, "n_classes": 2, "c": 2}


class ClaimError(BundleError):
    """A declared shape or size disagrees with the bundle's content or the trainer's plan."""


class JobConfigError(ClaimError):
    """job.json's trainer config does not pass the trainer's schema (models/configs.py); ``code``:
    config-unknown-key, config-wrong-type or config-out-of-range."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class BundleFacts:
    """What the checks learned about a job bundle, for the server to act on: the manifest and job.json (dicts),
    the CKKS parameters and rotation steps of public_context.bin, ``counts`` (input name -> number of
    ciphertexts), ``n_ciphertexts`` (their total) and the trainer's ``plan`` (None before it is made).
    """
    manifest: dict
    job: dict
    params: CKKSParams
    steps: set[int]
    counts: dict[str, int]
    n_ciphertexts: int
    plan: object = None


def read_json(path: pathlib.Path, what: str, limit: int = MAX_JSON_BYTES):
    """The parsed JSON of ``path`` (``what`` names it in messages), at most ``limit`` bytes read.

    Raises BundleError when the file is missing, not valid JSON or nested too deeply, ClaimError when it is
    larger than ``limit`` bytes (checked on its size before it is read).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BundleError(f"{what} not found") from None
    if size > limit:
        raise ClaimError(f"{what} has {size} bytes, more than the {limit} a job description can need")
    try:
        return json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{what} is corrupted (not valid JSON: {exc})") from None
    except RecursionError:
        raise BundleError(f"{what} is nested too deeply") from None


def _header_at(f: BinaryIO, at: int, room: int, what: str, limit: int) -> tuple[dict, int]:
    """(header, bytes of magic + length + header) of the container starting at ``at``."""
    f.seek(at)
    head = f.read(len(MAGIC) + 4)
    if len(head) < len(MAGIC) + 4 or head[:len(MAGIC)] != MAGIC:
        raise ClaimError(f"{what} is not a hetrain container")
    (hlen,) = struct.unpack("<I", head[len(MAGIC):])
    if hlen > min(limit, room - len(head)):
        raise ClaimError(f"{what}: its header claims {hlen} bytes, more than it can have")
    try:
        header = json.loads(f.read(hlen).decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ClaimError(f"{what}: corrupted container header") from None
    if not isinstance(header, dict):
        raise ClaimError(f"{what}: corrupted container header")
    return header, len(head) + hlen


def _parts(header: dict, what: str) -> list[tuple[str, int]]:
    parts = header.get("parts")
    if not isinstance(parts, list):
        raise ClaimError(f"{what}: its header lists no parts")
    out = []
    for p in parts:
        if not (isinstance(p, dict) and isinstance(p.get("name"), str) and _is_int(p.get("size"))
                and p["size"] >= 0 and isinstance(p.get("sha256"), str)):
            raise ClaimError(f"{what}: malformed part entry in its header")
        out.append((p["name"], p["size"]))
    return out


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _exact_size(what: str, header_bytes: int, parts: list[tuple[str, int]], actual: int) -> None:
    declared = header_bytes + sum(size for _, size in parts)
    if declared != actual:
        raise ClaimError(f"{what}: its header accounts for {declared} bytes, the file has {actual}")


# ---------------------------------------------------------------------- the pieces
def check_manifest(manifest) -> dict:
    """``manifest`` itself once it is a hetrain-job manifest of this BUNDLE_VERSION with string ``backend``,
    ``key_id``, ``params`` (fingerprint) and ``model`` and a ``sha256`` dict. Raises BundleError for another
    format or version, ClaimError for a missing or mistyped field.
    """
    if not isinstance(manifest, dict) or manifest.get("format") != "hetrain-job" \
            or manifest.get("version") != files.BUNDLE_VERSION:
        raise BundleError(f"manifest.json is not a hetrain job manifest of version {files.BUNDLE_VERSION}")
    for key in ("backend", "key_id", "params", "model"):
        if not isinstance(manifest.get(key), str):
            raise ClaimError(f"manifest.json: {key!r} must be a string")
    if not isinstance(manifest.get("sha256"), dict):
        raise ClaimError("manifest.json: 'sha256' must map file names to checksums")
    return manifest


def check_params(meta: dict, manifest: dict) -> tuple[CKKSParams, set[int]]:
    """The public context header's parameters and rotation steps, checked.
    Raises ClaimError for another container kind, backend or key than the manifest's, malformed parameters,
    a ring degree outside RING_DEGREES, an implausible modulus chain, parameters other than the manifest's
    fingerprint, or rotation steps that are not at most ``slots`` integers in (-slots, slots).
    """
    if meta.get("kind") != "public_context":
        raise ClaimError(f"public_context.bin is a {meta.get('kind')!r} container, expected 'public_context'")
    if meta.get("backend") != manifest["backend"] or meta.get("key_id") != manifest["key_id"]:
        raise ClaimError("public_context.bin and the manifest name different backends or keys")
    raw = meta.get("params")
    try:
        if not isinstance(raw, dict) or not isinstance(raw.get("coeff_bits"), list) \
                or len(raw["coeff_bits"]) > MAX_CHAIN:
            raise ValueError("malformed")
        params = CKKSParams.from_dict(raw)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ClaimError("public_context.bin: malformed CKKS parameters") from None
    if params.poly_modulus_degree not in RING_DEGREES:
        raise ClaimError(f"public_context.bin: ring degree {params.poly_modulus_degree} is not one of "
                         f"{sorted(RING_DEGREES)}")
    if not (len(params.coeff_bits) >= 3 and all(17 <= b <= 60 for b in params.coeff_bits)
            and 1 <= params.scale_bits <= 60):
        raise ClaimError(f"public_context.bin: implausible modulus chain {params.describe()}")
    if params.fingerprint() != manifest["params"]:
        raise ClaimError("public_context.bin's parameters are not the manifest's")
    steps = meta.get("steps", [])
    if not isinstance(steps, list) or len(steps) > params.slots \
            or not all(_is_int(s) and -params.slots < s < params.slots for s in steps):
        raise ClaimError(f"public_context.bin: rotation steps must be at most {params.slots} integers "
                         f"in ({-params.slots}, {params.slots})")
    return params, set(steps)


def _key_switch_bytes(params: CKKSParams) -> int:
    """Most bytes of one serialised key-switching key (relinearisation, or one Galois key)."""
    n, k = params.poly_modulus_degree, len(params.coeff_bits)
    return int((k - 1) * 2 * k * n * 8 * SEAL_SLACK) + 4096


def check_public_parts(path: pathlib.Path, meta: dict, header_bytes: int, params: CKKSParams, steps: set[int]) -> None:
    """Check public_context.bin's parts before SEAL loads them: the header accounts for the file's exact size
    (bytes), the part names are the backend's, and (seal) no key part is larger than a key of ``params`` can
    be (public key, relinearisation key, one Galois key per step of ``steps``). ``header_bytes``: bytes of
    magic, length and header. Raises ClaimError on any disagreement, including steps without Galois keys.
    """
    parts = _parts(meta, "public_context.bin")
    _exact_size("public_context.bin", header_bytes, parts, path.stat().st_size)
    backend = meta["backend"]
    info = registry.by_container_name(backend)  # the parts a public context of each backend may hold
    allowed = set(info.key_parts) if info is not None and info.closed_key_parts else None
    names = {n for n, _ in parts}
    if allowed is not None and not names <= allowed:
        raise ClaimError(f"public_context.bin: unexpected parts {sorted(names - allowed)} for backend {backend}")
    if backend != "seal":
        return
    n, k = params.poly_modulus_degree, len(params.coeff_bits)
    most = {"pk": int(2 * n * k * 8 * SEAL_SLACK) + 4096, "rlk": _key_switch_bytes(params),
            "gk": len(steps) * _key_switch_bytes(params) + 4096}
    for name, size in parts:
        if size > most[name]:
            raise ClaimError(f"public_context.bin: part {name!r} has {size} bytes, more than "
                             f"{'its ' + str(len(steps)) + ' Galois keys' if name == 'gk' else 'such a key'} can "
                             f"have at {params.name} ({most[name]})")
    if "gk" not in names and steps:
        raise ClaimError(f"public_context.bin declares {len(steps)} rotation steps but holds no Galois keys")


def check_inputs(path: pathlib.Path, manifest: dict, params: CKKSParams) -> dict[str, int]:
    """The inputs' counts, after checking every part against its header (sizes, kinds, levels).
    Raises ClaimError for another container kind or key, malformed counts, parts that do not match the counts,
    and any part whose size, kind or level a ciphertext of these parameters cannot have.
    """
    actual = path.stat().st_size
    with open(path, "rb") as f:
        meta, header_bytes = _header_at(f, 0, actual, "inputs.bin", MAX_HEADER_BYTES)
        try:  # the collection format's own checks (ckks/collection.py): kind, version, counts, parts in order
            counts = collection.check_manifest(meta, "inputs.bin")
        except collection.OldFormat as exc:
            raise ClaimError(f"inputs.bin is in the format of an earlier hetrain ({exc.kind!r}): write the job "
                             "bundle again with this hetrain") from None
        except SerializationError as exc:
            raise ClaimError(str(exc)) from None
        if meta.get("key_id") != manifest["key_id"]:
            raise ClaimError("inputs.bin was encrypted under another key than the manifest's")
        parts = _parts(meta, "inputs.bin")
        _exact_size("inputs.bin", header_bytes, parts, actual)
        offset = header_bytes
        for name, size in parts:
            _check_ciphertext(f, offset, size, f"inputs.bin part {name!r}", manifest, params)
            offset += size
    return counts


def _check_ciphertext(f: BinaryIO, at: int, size: int, what: str, manifest: dict, params: CKKSParams) -> None:
    meta, hb = _header_at(f, at, size, what, MAX_PART_HEADER)
    if meta.get("kind") != "ciphertext":
        raise ClaimError(f"{what} is a {meta.get('kind')!r} container, expected 'ciphertext'")
    if meta.get("backend") != manifest["backend"] or meta.get("params") != manifest["params"] \
            or meta.get("key_id") != manifest["key_id"]:
        raise ClaimError(f"{what} is of another backend, parameters or key than the manifest's")
    level = meta.get("level")
    if not _is_int(level) or not 0 <= level <= params.levels:
        raise ClaimError(f"{what} claims level {level!r}; the chain has levels 0..{params.levels}")
    parts = _parts(meta, what)
    if [n for n, _ in parts] != ["ct"]:
        raise ClaimError(f"{what} must hold exactly one part 'ct'")
    _exact_size(what, hb, parts, size)
    payload = parts[0][1]
    if manifest["backend"] == "sim-INSECURE":
        if payload != 8 * params.slots:
            raise ClaimError(f"{what} has {payload} bytes of data, a simulated ciphertext has {8 * params.slots}")
    elif manifest["backend"] == "seal":
        most = int(2 * params.poly_modulus_degree * (level + 1) * 8 * SEAL_SLACK) + 4096
        if payload > most:
            raise ClaimError(f"{what} has {payload} bytes, more than a ciphertext at level {level} can have ({most})")


def _shape(job: dict) -> tuple[int, int, int]:
    shape = job.get("data_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) and v >= 1 for v in shape)):
        raise ClaimError("job.json: data_shape must be [n_samples, n_features, n_classes], positive integers")
    return shape[0], shape[1], shape[2]


def check_job(job, manifest: dict, params: CKKSParams, steps: set[int], counts: dict[str, int]):
    """job.json's claims against the ciphertexts and the trainer's plan; returns the plan.
    Raises ClaimError for every claim of job.json that disagrees with the manifest, the ciphertexts (more
    values claimed than they hold), the trainer's config and plan (layout, sizes, batches, iterations), or
    Galois keys the plan needs and the public context lacks.
    """
    from hetrain.models.base import get_trainer

    if not isinstance(job, dict) or job.get("model") != manifest["model"]:
        raise ClaimError("job.json and the manifest name different models")
    n, d, c = _shape(job)
    total = sum(counts.values())
    room = total * params.slots
    # before anything is sized from the claim: the ciphertexts must be able to hold X (n x d) and Y (n x c)
    if n * d > room or n * c > room:
        raise ClaimError(f"job.json claims data of shape {n} x {d} with {c} classes, but inputs.bin holds "
                         f"{total} ciphertexts of {params.slots} slots ({room} values): the claim is false")
    for key, idx in SHAPE_FIELDS.items():
        if key in job and job[key] != (n, d, c)[idx]:
            raise ClaimError(f"job.json: {key} = {job[key]!r} disagrees with data_shape {[n, d, c]}")
    sizes = job.get("sizes")
    if sizes is not None and not (isinstance(sizes, list) and len(sizes) >= 2 and all(_is_int(v) and v >= 1 for v in sizes)
                                  and sizes[0] == d and sizes[-1] == c):
        raise ClaimError(f"job.json: layer sizes {sizes!r} disagree with data_shape {[n, d, c]}")
    mode = job.get("refresh", "none")
    if not isinstance(mode, str):
        raise ClaimError("job.json: refresh must be a string")
    if not isinstance(job.get("config", {}), dict):
        raise ClaimError("job.json: config must be an object")
    try:
        trainer = get_trainer(manifest["model"]).from_job(job)
        if sizes is not None and hasattr(trainer, "sizes") and list(trainer.sizes(d, c)) != sizes:
            raise ClaimError(f"job.json: layer sizes {sizes} are not those of its config {list(trainer.sizes(d, c))}")
        if "n_batches" in job and hasattr(trainer, "batches_of") and job["n_batches"] != len(trainer.batches_of(n)):
            raise ClaimError(f"job.json: n_batches = {job['n_batches']!r}, but {n} rows in batches of its "
                             f"config make {len(trainer.batches_of(n))}")
        if isinstance(job.get("layout"), dict) and hasattr(trainer, "layout") and "P" in job["layout"]:
            lay = trainer.layout(n, d, c, params.slots)
            mine = {"P": lay.P, "S": lay.S, "groups": lay.groups, "feature_blocks": lay.feature_blocks}
            if {k: job["layout"].get(k) for k in mine} != mine:
                raise ClaimError(f"job.json: layout {job['layout']} is not the one its shape gives {mine}")
        plan = trainer.plan(n, d, c, params)
        if "iterations" in job and job["iterations"] != plan.iterations:
            raise ClaimError(f"job.json: iterations = {job['iterations']!r}, its plan has {plan.iterations}")
        plan.check(params, refresh=mode)
    except HetrainUserError as exc:
        if isinstance(exc, BundleError):
            raise
        raise ClaimError(f"job.json: {exc}") from None
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:  # a config the trainer cannot read
        raise ClaimError(f"job.json: the {manifest['model']} trainer cannot read this job ({type(exc).__name__}: "
                         f"{exc})") from None
    slots = params.slots
    missing = {s % slots for s in plan.rotation_steps} - {s % slots for s in steps} - {0}
    if missing:
        raise ClaimError(f"the public context lacks Galois keys for {len(missing)} rotation step(s) that the plan needs "
                         f"(e.g. {sorted(missing)[:5]})")
    if plan.n_input_ciphertexts and plan.n_input_ciphertexts != total:
        raise ClaimError(f"inputs.bin holds {total} ciphertexts; a {manifest['model']} job of shape {[n, d, c]} has "
                         f"{plan.n_input_ciphertexts}")
    return plan


def check_job_config(job, manifest: dict) -> None:
    """job.json's trainer config through the trainer's schema (models/configs.check_job_config):
    JobConfigError with the schema's code for an unknown key, a value of the wrong type or out of
    range. A trainer without a schema (a registered test trainer) is left to its own checks."""
    from hetrain.models import configs

    if not isinstance(job, dict) or not isinstance(job.get("config", {}), dict):
        return  # check_job refuses these, naming what is wrong
    try:
        configs.check_job_config(manifest["model"], job.get("config", {}))
    except configs.TrainerConfigError as exc:
        raise JobConfigError(f"job.json: the {manifest['model']} config is refused ({exc.code}): {exc.option} "
                             f"{exc.detail}", exc.code) from None


# ---------------------------------------------------------------------- all of it
def check_bundle(jobdir: str | os.PathLike) -> BundleFacts:
    """Every check above on the bundle in ``jobdir`` (checksums are the caller's: files.read_job_files).
    Raises BundleError when a file is missing, ClaimError (a BundleError) when any claim is false.
    """
    d = pathlib.Path(jobdir)
    manifest = check_manifest(read_json(d / files.MANIFEST, "manifest.json"))
    job = read_json(d / files.JOB, "job.json")
    check_job_config(job, manifest)  # before any ciphertext (or even the public context) is read
    public = d / files.PUBLIC_CONTEXT
    try:
        size = public.stat().st_size
    except FileNotFoundError:
        raise BundleError("public_context.bin not found") from None
    with open(public, "rb") as f:
        meta, hb = _header_at(f, 0, size, "public_context.bin", MAX_JSON_BYTES)
    params, steps = check_params(meta, manifest)
    check_public_parts(public, meta, hb, params, steps)
    if not (d / files.INPUTS).is_file():
        raise BundleError("inputs.bin not found")
    counts = check_inputs(d / files.INPUTS, manifest, params)
    plan = check_job(job, manifest, params, steps, counts)
    return BundleFacts(manifest, job, params, steps, counts, sum(counts.values()), plan)


def public_params(jobdir: str | os.PathLike) -> CKKSParams | None:
    """The CKKS parameters the public context claims, if it parses (for the secret-key scan)."""
    p = pathlib.Path(jobdir) / files.PUBLIC_CONTEXT
    try:
        with open(p, "rb") as f:
            meta, _ = _header_at(f, 0, p.stat().st_size, "public_context.bin", MAX_JSON_BYTES)
        params = CKKSParams.from_dict(meta["params"])
        return params if params.poly_modulus_degree in RING_DEGREES and len(params.coeff_bits) <= MAX_CHAIN else None
    except Exception:
        return None


# ---------------------------------------------------------------------- the service's child process
def main(argv: list[str] | None = None) -> int:
    """``main([JOBDIR, --trainer-module=M..., --scan=NAME..., --scan-only, --query])`` (the service runs it as
    ``python -c``): the secret-key scan of the files JOBDIR/NAME (the JSON files' strings too), then
    ``check_bundle`` (``--query``: query_check.check_query_bundle) unless ``--scan-only``. Prints
    one JSON line: {"ok": true, "backend", "model", "n_ciphertexts"} or {"ok": false, "secret":
    bool, "error": message}. Exit 0 either way; anything else (killed at its memory limit) is the
    caller's to report."""
    import argparse
    import importlib

    from .secret_scan import SecretFound, scan_upload

    p = argparse.ArgumentParser(prog="python -m hetrain.protocol.bundle_check")
    p.add_argument("jobdir")
    p.add_argument("--trainer-module", action="append", default=[])
    p.add_argument("--scan", action="append", default=[], metavar="NAME", help="a file of JOBDIR to scan for secret keys")
    p.add_argument("--scan-only", action="store_true", help="only the secret-key scan")
    p.add_argument("--query", action="store_true", help="JOBDIR is a query bundle (query_check.check_query_bundle)")
    args = p.parse_args(argv)
    d = pathlib.Path(args.jobdir)
    try:
        for mod in args.trainer_module:
            importlib.import_module(mod)
        paths = {name: d / name for name in args.scan}
        json_values = {}
        for name in (files.MANIFEST, files.JOB):
            if name in paths:
                try:
                    json_values[name] = read_json(pathlib.Path(paths[name]), name)
                except BundleError:
                    pass  # not JSON: scanned as bytes below, and refused by check_bundle
        scan_upload(paths, json_values, public_params(d))
        if args.scan_only:
            out = {"ok": True}
        else:
            if args.query:
                from .query_check import check_query_bundle

                facts = check_query_bundle(d)
            else:
                facts = check_bundle(d)
            out = {"ok": True, "backend": facts.manifest["backend"], "model": facts.manifest["model"],
                   "n_ciphertexts": facts.n_ciphertexts}
    except SecretFound as exc:
        out = {"ok": False, "secret": True, "error": str(exc)}
    except HetrainUserError as exc:
        out = {"ok": False, "secret": False, "error": str(exc), **({"code": exc.code} if hasattr(exc, "code") else {})}
    except MemoryError:
        out = {"ok": False, "secret": False, "error": "checking the upload's claims exceeded the memory allowed for it"}
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
