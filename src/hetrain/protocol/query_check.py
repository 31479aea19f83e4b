"""A query bundle's claims checked against what it holds, before memory is spent on any claim.

The same checks as a training bundle's (bundle_check.py: manifest, parameters, public key parts,
every ciphertext's header, size and level, all from bounded reads), then the query's own job.json:
the task, a query count the ciphertexts can hold, and exactly the ciphertexts its packing makes:
    column (case b):  n_groups(n, slots) × n_features, no rotation needed
    blocked (case a): n_groups × feature blocks of the job's I·L·C block, with the Galois keys of
                      the forward's sum over l
    diagonal / grid (case a, mlp-diagonal / mlp-dvr): ⌈n / rows per ciphertext⌉ groups of
                      ``per_group`` ciphertexts (W1's diagonals / feature blocks), with the Galois
                      keys of the steps the packing names (the server compares the packing with
                      the training job's own before it scores)
"""
from __future__ import annotations

import os
import pathlib

from hetrain.ckks.pow2 import is_pow2, log2_pow2

from . import files
from .bundle_check import (ClaimError, BundleFacts, MAX_JSON_BYTES, _header_at, _is_int, check_inputs,
                           check_manifest, check_params, check_public_parts, read_json)
from .errors import BundleError
from .model_spec import check_spec


def check_query_bundle(qdir: str | os.PathLike) -> BundleFacts:
    """BundleError (ClaimError) if anything in the query bundle ``qdir`` disagrees with its content."""
    d = pathlib.Path(qdir)
    if not (d / files.MANIFEST).is_file():
        raise BundleError(f"{d} is not a query bundle (no {files.MANIFEST}): make one with `hetrain encrypt-queries`")
    manifest = check_manifest(read_json(d / files.MANIFEST, "manifest.json"))
    job = read_json(d / files.JOB, "job.json")
    if not isinstance(job, dict) or job.get("task") != "inference" or manifest["model"] != "inference":
        raise ClaimError(f"{d} is not a query bundle (it is a training job bundle?): make one with "
                         "`hetrain encrypt-queries`")
    public = d / files.PUBLIC_CONTEXT
    if not public.is_file():
        raise BundleError("public_context.bin not found")
    with open(public, "rb") as f:
        meta, hb = _header_at(f, 0, public.stat().st_size, "public_context.bin", MAX_JSON_BYTES)
    params, steps = check_params(meta, manifest)
    check_public_parts(public, meta, hb, params, steps)
    if not (d / files.INPUTS).is_file():
        raise BundleError("inputs.bin not found")
    counts = check_inputs(d / files.INPUTS, manifest, params)
    total = sum(counts.values())
    if set(counts) != {"X"}:
        raise ClaimError(f"inputs.bin of a query bundle holds ciphertexts named X only, not {sorted(counts)}")
    n = job.get("n_queries")
    if not (_is_int(n) and n >= 1):
        raise ClaimError("job.json: n_queries must be a positive integer")
    groups = -(-n // params.slots)
    if job.get("mode") == "plain-model":
        spec = check_spec(job.get("spec"), "job.json's model spec")
        want = groups * spec["n_features"]
        need_steps: set[int] = set()
    elif job.get("mode") == "encrypted-model" and isinstance(job.get("packing"), dict) \
            and job["packing"].get("layout") in ("diagonal", "grid"):
        want, need_steps = _mlp_packing(job["packing"], n, params.slots)
    elif job.get("mode") == "encrypted-model":
        p = job.get("packing")
        keys = ("I", "L", "C", "d", "c")
        if not (isinstance(p, dict) and all(_is_int(p.get(k)) and p[k] >= 1 for k in keys)):
            raise ClaimError("job.json: packing must give positive integers I, L, C, d, c")
        I, L, C = p["I"], p["L"], p["C"]
        if I * L * C != params.slots or not all(is_pow2(v) for v in (I, L, C)) or p["c"] > C:
            raise ClaimError(f"job.json: block {I} x {L} x {C} is not a blocked packing of {params.slots} slots "
                             f"for {p['c']} classes")
        want = -(-n // I) * -(-p["d"] // L)
        need_steps = {(C << k) % params.slots for k in range(log2_pow2(L))}
    else:
        raise ClaimError(f"job.json: mode must be 'plain-model' or 'encrypted-model', got {job.get('mode')!r}")
    if total != want:
        raise ClaimError(f"inputs.bin holds {total} ciphertexts; {n} queries in this packing make {want}")
    missing = need_steps - {s % params.slots for s in steps}
    if missing:
        raise ClaimError(f"the public context lacks Galois keys for rotation step(s) {sorted(missing)[:5]}")
    return BundleFacts(manifest, job, params, steps, counts, total)


def _mlp_packing(p: dict, n: int, slots: int) -> tuple[int, set[int]]:
    """(ciphertexts the queries make, rotation steps needed) of an mlp packing, or ClaimError."""
    rows_key = "batch" if p["layout"] == "diagonal" else "S"
    keys = (rows_key, "d", "c", "per_group")
    if not all(_is_int(p.get(k)) and 1 <= p[k] <= slots for k in keys):
        raise ClaimError(f"job.json: a {p['layout']} packing gives integers {', '.join(keys)} between 1 and {slots}")
    rows = p[rows_key]
    if not is_pow2(rows):
        raise ClaimError(f"job.json: {rows_key} = {rows} is not a power of two")
    steps = p.get("steps")
    if not (isinstance(steps, list) and len(steps) <= 64 and all(_is_int(s) for s in steps)):
        raise ClaimError("job.json: the packing's steps must be a list of at most 64 integers")
    return -(-n // rows) * p["per_group"], {s % slots for s in steps}
