"""Human-readable summary of a fit (shared by `hetrain fit`, `decrypt`, `demo` and benchmarks)."""
from __future__ import annotations

import numpy as np

from hetrain._format import plain
from hetrain.ckks.registry import is_insecure

MB = 1024 * 1024


def _s(v) -> str:
    return "?" if v is None else f"{v:.2f} s"


def _mb(v) -> str:
    return "?" if v is None else f"{v / MB:.0f} MB"


def format_summary(stats: dict) -> list[str]:
    """Lines describing times, memory, operations and bytes; the caller prints the final key=value lines.
    Figures a path does not have (e.g. `hetrain decrypt` never saw the client's peak memory) show as ?."""
    ops = stats.get("server_operations") or {}
    heavy = ("bootstrap", "rotate", "multiply", "relinearize", "multiply_plain", "multiply_scalar", "square", "rescale")
    op_text = " ".join(f"{k}={ops[k]['count']}" + (f" ({ops[k]['seconds']:.2f} s)" if ops[k].get("seconds") else "")
                       for k in heavy if k in ops) or "none"
    parts = stats.get("upload_key_parts") or {}
    part_text = (" (" + ", ".join(f"{k.replace('_', ' ')} {v / MB:.1f} MB" for k, v in parts.items()) + ")") if parts else ""
    lines = [f"backend={stats['backend']} params={stats['params']} model={stats['model']}"]
    if stats.get("levels_needed") is not None:
        lines.append(depth_words(stats))
    wall = (f" (the server process took {stats['server_wall_s']:.2f} s in all, including starting and loading the "
            "keys and ciphertexts)") if stats.get("server_wall_s") is not None else ""
    lines += [
        f"times: keygen {_s(stats.get('keygen_s'))}, encrypt {_s(stats.get('encrypt_s'))}, server train "
        f"{_s(stats.get('server_train_s'))}{wall}, decrypt {_s(stats.get('decrypt_s'))}",
        f"peak memory (RSS): client {_mb(stats.get('client_peak_rss_bytes'))}, server "
        f"{_mb(stats.get('server_peak_rss_bytes'))}",
        f"server operations: {op_text} (count and time of each homomorphic operation on the server; rotations "
        "and relinearisations switch keys and cost the most)",
        f"upload: keys {_mb(stats.get('upload_key_bytes'))}{part_text}, data {_mb(stats.get('upload_data_bytes'))}; "
        f"download {_mb(stats.get('download_bytes'))}",
    ]
    if is_insecure(stats["backend"]):
        lines.insert(0, "WARNING: INSECURE simulation backend: nothing was encrypted")
    return lines


def depth_words(stats: dict) -> str:
    """The depth of a run in plain words: levels used against those one modulus chain offers, and the
    refreshes that reset the count (a run may use many more levels than a chain holds)."""
    needed, avail = stats["levels_needed"], stats["levels_available"]
    per = stats.get("levels_per_iteration") or {}
    if "iteration 1" in per:  # a traced plan (models/trace.py): the first iteration, then each later one
        first, later = per["iteration 1"], per.get("each later iteration", per["iteration 1"])
        per_text = (f" ({first} per iteration)" if later == first
                    else f" ({first} in the first iteration, {later} in each later one)")
    else:  # a plan by parts of one iteration (e.g. {"forward": 2, "backward": 3})
        per_text = f" ({sum(per.values())} per iteration: {plain(per)})" if per else ""
    keys = f"; rotation keys for {len(stats['rotation_steps'])} step(s)" if stats.get("rotation_steps") is not None else ""
    inside = int((stats.get("run") or {}).get("bootstraps_in_iterations") or 0)
    if inside:  # models/inner_boot.py: an iteration deeper than a bootstrap restores
        keys = (f"; {inside} intermediate ciphertext(s) were bootstrapped inside iterations, where an iteration "
                f"needs more levels than a bootstrap restores{keys}")
    if needed > avail:
        return (f"depth: the run used {needed} multiplicative levels in all{per_text}; one modulus chain of "
                f"{stats['params']} offers {avail}, so the state was refreshed in between (each refresh resets the "
                f"count to {avail}){keys}")
    return (f"depth: the run used {needed} of the {avail} multiplicative levels one modulus chain of {stats['params']} "
            f"offers{per_text}: no refresh was needed{keys}")


def twin_words(stats: dict) -> str | None:
    """The twin check in plain words (None when the run has no twin figure)."""
    diff = stats.get("twin_max_abs_diff")
    if diff is None or diff != diff:
        return None
    bound = stats.get("twin_bound")
    within = f" (the check allows {bound:.1e})" if bound is not None else ""
    verdict = "NOT verified" if stats.get("verified") is False else "verified"
    return (f"twin: the decrypted weights differ from the same computation done in plaintext (NumPy) by at most "
            f"{diff:.1e}{within}: {verdict}; a difference of this size is CKKS's approximation noise")


def run_record(result) -> dict:
    """The figures of a run kept in the model file under ``info["run"]`` (JSON values only), read by
    `hetrain report`. ``result``: a client_jobs.FitResult. Keys (absent ones were not measured):

    * ``backend``, ``params`` (name), ``model``; ``security``: ``total_bits``, ``max_bits_128`` (the HE
      standard's limit for N) and ``secure_128`` (bool);
    * ``times_s``: seconds per phase, ``keygen``, ``encrypt``, ``write_job``, ``server_load``,
      ``server_train``, ``server_process`` (the whole server process: start, load, train, write),
      ``client_refresh`` (the client's share of refreshes), ``decrypt``, ``twin``;
    * ``operations``: kind -> {"count", "seconds"} (the server's engine, ckks/counters.py);
    * ``bytes``: ``upload_keys``, ``upload_data``, ``download``, ``refresh_to_client``,
      ``refresh_to_server``; ``key_parts``: public_key / relin_keys / galois_keys bytes;
    * ``memory``: ``client_peak_rss``, ``server_peak_rss`` (bytes);
    * ``levels``: ``needed``, ``available`` (one chain), ``per_iteration`` (phase -> levels),
      ``per_step`` (mini-batch mlr), ``iterations``, ``rotation_keys``;
    * ``steps``: ``count``, ``seconds`` (each server step), ``refresh_seconds`` (each refresh);
      ``refresh``: mode, round_trips, refreshes, evaluations, bootstraps (every one: the state's and those
      inside iterations), bootstraps_in_iterations (models/inner_boot.py; None: not reported);
    * ``twin``: ``max_abs_diff`` (final state vs the plaintext twin), ``bound`` (what the check allows: the job's own, twin_bound.py;
      client.check_twin), ``released_max_abs_diff``, ``verified``;
    * ``estimate``: the estimate printed before keygen (estimate.Estimate.as_dict);
    * ``partial``, ``stop_reason``.
    """
    from hetrain import ckks
    from hetrain.ckks.params import MAX_BITS_128

    from .client import TWIN_TOLERANCE

    s = result.stats
    rec = s.get("params_record") or {}
    sec = {}
    if rec:
        p = ckks.CKKSParams.from_dict(rec)
        sec = {"total_bits": p.total_bits, "max_bits_128": MAX_BITS_128.get(p.poly_modulus_degree),
               "secure_128": p.is_128_bit_secure(), "poly_modulus_degree": p.poly_modulus_degree,
               "levels": p.levels, "scale_bits": p.scale_bits, "coeff_bits": list(p.coeff_bits)}
    r = s.get("refresh") or {}
    run = s.get("run") or {}
    available = s.get("levels_available", sec.get("levels"))
    needed = s.get("levels_needed")
    if needed is None and run.get("levels_per_step") and run.get("steps") is not None:
        needed = int(run["levels_per_step"]) * int(run["steps"])  # mini-batch mlr: every step uses the same
    bound = s.get("twin_bound")  # the job's own (twin_bound.py); a job recorded without one: the old rule
    if bound is None:
        arrays = [np.asarray(a) for a in (result.twin or {}).values() if np.size(a)]
        bound = TWIN_TOLERANCE * max([1.0] + [float(np.max(np.abs(a))) for a in arrays]) if arrays else None
        s["twin_bound"] = bound
    out = {
        "backend": s.get("backend"), "params": s.get("params"), "model": s.get("model"), "security": sec,
        "times_s": {k: s.get(v) for k, v in (("keygen", "keygen_s"), ("encrypt", "encrypt_s"),
                                             ("write_job", "write_job_s"), ("server_load", "server_load_s"),
                                             ("server_train", "server_train_s"), ("server_process", "server_wall_s"),
                                             ("client_refresh", "client_refresh_s"), ("decrypt", "decrypt_s"),
                                             ("twin", "twin_s"))},
        "operations": s.get("server_operations") or {},
        "bytes": {"upload_keys": s.get("upload_key_bytes"), "upload_data": s.get("upload_data_bytes"),
                  "download": s.get("download_bytes"), "refresh_to_client": r.get("bytes_to_client"),
                  "refresh_to_server": r.get("bytes_to_server")},
        "key_parts": s.get("upload_key_parts") or {},
        "memory": {"client_peak_rss": s.get("client_peak_rss_bytes"), "server_peak_rss": s.get("server_peak_rss_bytes")},
        "levels": {"needed": needed, "available": available,
                   "per_iteration": s.get("levels_per_iteration"), "per_step": run.get("levels_per_step"),
                   "iterations": s.get("iterations"),
                   "rotation_keys": len(s["rotation_steps"]) if s.get("rotation_steps") is not None else None},
        "steps": {"count": s.get("steps", run.get("steps")), "seconds": run.get("step_s"),
                  "refresh_seconds": run.get("refresh_s")},
        "refresh": {**{k: r.get(k) for k in ("mode", "round_trips", "refreshes", "evaluations", "bootstraps")},
                    "bootstraps_in_iterations": run.get("bootstraps_in_iterations")},
        "twin": {"max_abs_diff": s.get("twin_max_abs_diff"), "bound": bound,
                 "released_max_abs_diff": s.get("released_max_abs_diff"), "verified": s.get("verified")},
        "estimate": s.get("estimate"),
        "partial": bool(s.get("partial")), "stop_reason": s.get("stop_reason"),
    }
    return _json_safe(out)


def _json_safe(obj):
    """Plain JSON values: NumPy made plain, NaN/inf as None."""
    obj = plain(obj)
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def record_run(result) -> None:
    """Put ``run_record(result)`` into the model's info (``info["run"]``), where `hetrain report` reads it."""
    result.model.info["run"] = run_record(result)
