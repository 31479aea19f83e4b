"""What a job will cost, from its plan, before any key is made: key and upload bytes, peak memory of
the client and of the server, and time.

    est = estimate_job(job)                 # a prepared client_jobs.ClientJob (plan, params, rotations)
    print(est.line())                       # "estimate: keys 31 MB (1 rotation key), upload 33 MB, ..."
    check_memory(est, limit_gb=8, yes=False, interactive=sys.stdin.isatty(), ask=input)

Sizes follow SEAL's structure (CKKS, RNS form; SEAL 4.x serialises with zstd):

* a ciphertext at level l is 2 polynomials of N coefficients modulo each of the first l+1 primes of
  the chain; in memory 8 bytes per coefficient per prime, 2·N·(l+1)·8 bytes; serialised (zstd)
  about ``ZSTD_FACTOR``·2·N·(q_0 + … + q_l)/8 bytes, q_i the primes' bit sizes;
* a key-switching key (one Galois key per rotation step, and the relinearisation key) holds, for
  each of the L+1 data primes, a ciphertext over ALL primes (the special prime included):
  (L+1)·2·N·(L+2)·8 bytes in memory, ``ZSTD_FACTOR``·(L+1)·2·N·Σq/8 serialised;
* the public key is one ciphertext over all primes.

``ZSTD_FACTOR`` = 1.17 was measured on SEAL 4.3 (TenSEAL 0.3.18): uniformly random residues of a
40-bit prime in 64-bit words compress to ≈ 1.17 × 40 bits (tests/test_estimate.py checks every
formula against SEAL's real serialised sizes at n8192, and the upload of a real n8192 run).

Times scale the per-operation medians of ``python bench/ops.py`` at n16384 on this project's
2-core machine (rotate 16 ms, encrypt 13 ms, one key-switching key ≈ 0.1 s to generate) with
N·(L+1)^1.5 for key switching and N·(L+2) for encryption; training time comes from the
mini-batch planner's step model (mlr_minibatch_plan.estimate_step_seconds) for ``mlr`` with refresh,
and is not estimated for other trainers. These are rough figures (a factor of 2), to decide
whether a run fits a machine, not benchmarks. The sim backend is estimated as SEAL would be
(the plan is the same; the simulation itself is much cheaper).
"""
from __future__ import annotations

import dataclasses

from hetrain.errors import HetrainUserError

MB = 1024 * 1024
GB = 1024 ** 3
ZSTD_FACTOR = 1.17          # SEAL's zstd-compressed residues vs their bit size (measured, see above)
PROCESS_BASE_BYTES = 200 * MB  # an idle Python + NumPy + TenSEAL process
DEFAULT_MAX_MEMORY_GB = 8.0
# bench/ops.py medians at n16384 (N = 16384, 8 primes below the special one), 2 cores
_REF_N, _REF_PRIMES = 16384, 8
_ROTATE_S, _ENCRYPT_S, _KSK_KEYGEN_S = 0.0163, 0.013, 0.11


def ciphertext_bytes(params, level: int | None = None, *, serialised: bool = True, seeded: bool = False) -> int:
    """Bytes of one ciphertext at ``level`` (default the top, ``params.levels``): serialised by SEAL
    (zstd) or in memory (``serialised=False``). ``seeded``: a fresh symmetric encryption by the data
    owner, serialised with the seed of its second polynomial instead of the polynomial (about half)."""
    level = params.levels if level is None else level
    N = params.poly_modulus_degree
    if not serialised:
        return 2 * N * (level + 1) * 8
    return int(ZSTD_FACTOR * (1 if seeded else 2) * N * sum(params.coeff_bits[:level + 1]) / 8)


def key_switching_key_bytes(params, *, serialised: bool = True, seeded: bool = False) -> int:
    """Bytes of one key-switching key: a Galois (rotation) key for one step, or the relinearisation key.
    ``seeded``: serialised by the engine that made it (SEAL: each uniform polynomial as its seed, half)."""
    N, data_primes = params.poly_modulus_degree, params.levels + 1
    if not serialised:
        return data_primes * 2 * N * len(params.coeff_bits) * 8
    return int(ZSTD_FACTOR * data_primes * (1 if seeded else 2) * N * sum(params.coeff_bits) / 8)


def public_key_bytes(params, *, serialised: bool = True) -> int:
    """Bytes of the public key (one ciphertext over every prime, the special one included; always in
    full: TenSEAL does not bind SEAL's seeded Serializable<PublicKey>)."""
    N = params.poly_modulus_degree
    if not serialised:
        return 2 * N * len(params.coeff_bits) * 8
    return int(ZSTD_FACTOR * 2 * N * sum(params.coeff_bits) / 8)


def _scale_keyswitch(params) -> float:
    return (params.poly_modulus_degree / _REF_N) * ((params.levels + 1) / _REF_PRIMES) ** 1.5


def rotate_seconds(params) -> float:
    """Rough seconds of one rotation (or relinearisation) at the top level under SEAL on 2 cores."""
    return _ROTATE_S * _scale_keyswitch(params)


@dataclasses.dataclass
class Estimate:
    """A job's estimated cost. Bytes are bytes; seconds are wall seconds on 2 cores under SEAL
    (``train_s`` None: not estimated for this trainer)."""
    params: str
    rotation_keys: int
    ciphertexts: int
    key_bytes: int
    data_bytes: int
    client_peak_bytes: int
    server_peak_bytes: int
    keygen_s: float
    encrypt_s: float
    train_s: float | None
    rotation_key_bytes: int
    # refresh "bootstrap": ciphertexts the planned run bootstraps (the state's and those inside iterations,
    # models/inner_boot.py), and of those inside iterations; None: not planned (Plan.bootstraps)
    bootstraps: int | None = None
    bootstraps_in_iterations: int | None = None

    @property
    def upload_bytes(self) -> int:
        """Bytes uploaded to the server: public keys plus encrypted inputs."""
        return self.key_bytes + self.data_bytes

    def machine_peak_bytes(self, local_server: bool = True) -> int:
        """Peak memory of this machine: client and server together when the server runs here."""
        return self.client_peak_bytes + (self.server_peak_bytes if local_server else 0)

    @property
    def total_s(self) -> float:
        """Estimated seconds in all: key generation, encryption and training (0 for training when not estimated)."""
        return self.keygen_s + self.encrypt_s + (self.train_s or 0.0)

    def line(self) -> str:
        """One line, printed before keys are made."""
        train = "" if self.train_s is not None else " + training (not estimated for this trainer)"
        if self.bootstraps is not None:
            train += (f"; {self.bootstraps} bootstrap(s) planned, {self.bootstraps_in_iterations} of them inside "
                      "iterations")
        return (f"estimate ({self.params}): keys {self.key_bytes / MB:.0f} MB ({self.rotation_keys} rotation key(s) of "
                f"{self.rotation_key_bytes / MB:.1f} MB each), upload {self.upload_bytes / MB:.0f} MB "
                f"({self.ciphertexts} ciphertexts), client peak ~{self.client_peak_bytes / GB:.2f} GB, server peak "
                f"~{self.server_peak_bytes / GB:.2f} GB, time ~{_duration(self.total_s)}{train} "
                f"(rough: from the plan and SEAL's sizes, see protocol/estimate.py)")

    def as_dict(self) -> dict:
        """The fields (bytes, seconds) and ``upload_bytes`` as a JSON-ready dict."""
        return {**dataclasses.asdict(self), "upload_bytes": self.upload_bytes}


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def estimate(params, rotation_steps, n_ciphertexts: int, *, train_s: float | None = None,
             seeded: bool = False) -> Estimate:
    """The cost of a job on ``params`` with Galois keys for ``rotation_steps`` and ``n_ciphertexts``
    input ciphertexts (encrypted at the top level; ``seeded``: keys and inputs uploaded in seeded form,
    SEAL)."""
    n_rot = len(list(rotation_steps))
    ksk, ksk_mem = key_switching_key_bytes(params, seeded=seeded), key_switching_key_bytes(params, serialised=False)
    pk, pk_mem = public_key_bytes(params), public_key_bytes(params, serialised=False)
    ct, ct_mem = ciphertext_bytes(params), ciphertext_bytes(params, serialised=False)
    key_bytes = pk + (1 + n_rot) * ksk
    keys_in_memory = pk_mem + (1 + n_rot) * ksk_mem + pk_mem // 2  # + the secret key (client)
    data_bytes = n_ciphertexts * (ciphertext_bytes(params, seeded=True) if seeded else ct)
    # client: its keys, two serialised copies while the bundle is written (the parts, then the packed
    # container), the inputs (objects and bytes)
    client = PROCESS_BASE_BYTES + keys_in_memory + 2 * key_bytes + n_ciphertexts * (ct_mem + ct)
    # server: the bundle read and unpacked (two copies of the bytes), its keys loaded, the inputs loaded,
    # a working set of temporaries. Checked on wine at n16384 (mini-batch mlr, 11 rotation keys): estimated
    # 792 / 824 MiB for client / server, measured 789 / 854 MiB (peak RSS)
    server = PROCESS_BASE_BYTES + 2 * key_bytes + keys_in_memory + data_bytes + n_ciphertexts * ct_mem + 16 * ct_mem
    keygen_s = (1 + n_rot) * _KSK_KEYGEN_S * params.poly_modulus_degree * (params.levels + 1) * len(params.coeff_bits) \
        / (_REF_N * _REF_PRIMES * (_REF_PRIMES + 1))
    encrypt_s = n_ciphertexts * _ENCRYPT_S * params.poly_modulus_degree * len(params.coeff_bits) / (_REF_N * (_REF_PRIMES + 1))
    return Estimate(params.name, n_rot, int(n_ciphertexts), int(key_bytes), int(data_bytes), int(client), int(server),
                    float(keygen_s), float(encrypt_s), train_s, int(ksk))


def estimate_job(job) -> Estimate:
    """``estimate`` for a prepared job (client_jobs.ClientJob: its parameters, rotations, input
    ciphertexts and, for mini-batch mlr, the planner's step time scaled to its parameters)."""
    params = job.params
    n_ct = getattr(job, "n_input_ciphertexts", None) or 0
    train_s = None
    if getattr(job, "kind", None) == "minibatch":
        from hetrain.models.mlr_minibatch_plan import estimate_step_seconds

        t = job.trainer
        step = estimate_step_seconds(t, job.Xp.shape[1], job.Y.shape[1], params.slots)
        steps = t.config["epochs"] * len(t.batches_of(job.Xp.shape[0]))
        train_s = step * steps * _scale_keyswitch(params)
    backend = _backend(getattr(job, "backend", None))
    est = estimate(params, job.rotations, n_ct, train_s=train_s, seeded=backend is not None and backend.seeded_uploads)
    boots = getattr(getattr(job, "plan", None), "bootstraps", None)
    if getattr(job, "refresh", None) == "bootstrap" and isinstance(boots, dict):
        inside = int(sum(boots["in_iteration"]))
        est = dataclasses.replace(est, bootstraps=inside + int(sum(boots["state"])), bootstraps_in_iterations=inside)
    return with_measured(est, getattr(job, "backend", None), params)


def _backend(name):
    """The registered backend named ``name`` (hetrain.ckks.registry), or None."""
    from hetrain.ckks import registry

    try:
        return registry.get(name) if name else None
    except registry.BackendUnavailable:
        return None


def with_measured(est: Estimate, backend: str | None, params) -> Estimate:
    """``est`` with the key bytes and peak memories raised to what a run at these parameters measured,
    where the backend's preset records them (OpenFHE's bootstrapping presets: the formulas above count
    no bootstrapping keys; the registry's ``measured``). Figures are never lowered."""
    info = _backend(backend)
    measured = info.measured_bytes(getattr(params, "name", "")) if info is not None else None
    if not measured:
        return est
    keys, client, server = measured
    return dataclasses.replace(est, key_bytes=max(est.key_bytes, keys),
                               client_peak_bytes=max(est.client_peak_bytes, client),
                               server_peak_bytes=max(est.server_peak_bytes, server))


class MemoryRefused(HetrainUserError):
    """The estimated peak memory is above the limit and nobody confirmed the run."""


def check_memory(est: Estimate, *, limit_gb: float = DEFAULT_MAX_MEMORY_GB, yes: bool = False,
                 interactive: bool = False, ask=input, local_server: bool = True) -> None:
    """Refuse (MemoryRefused) a run whose estimated peak memory on this machine is above ``limit_gb``
    unless ``yes``, or a person at a terminal (``interactive``) answers y to ``ask(prompt)``.
    Raises HetrainUserError for a non-positive ``limit_gb``.
    """
    if limit_gb is not None and not limit_gb > 0:
        raise HetrainUserError(f"--max-memory-gb must be a positive number of GB, got {limit_gb:g}")
    peak = est.machine_peak_bytes(local_server)
    if yes or limit_gb is None or peak <= limit_gb * GB:
        return
    what = (f"this run needs about {peak / GB:.1f} GB of memory on this machine (client and server), above "
            f"--max-memory-gb {limit_gb:g}")
    if interactive:
        try:
            answer = ask(f"{what}. Make the keys and run? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() in ("y", "yes"):
            return
        raise MemoryRefused(f"{what}; not confirmed (run again with --yes, or a smaller --preset)")
    raise MemoryRefused(f"{what}: pass --yes to run it anyway, raise --max-memory-gb, or choose a smaller --preset")
