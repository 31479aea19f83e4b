"""How far an honest decryption may lie from its plaintext twin: the bound the client checks.

The client refuses to release a model (and stops a run at the first refreshed state) that differs
from its plaintext twin by more than ``bound`` (protocol/client.check_twin). The bound is derived
for each job from its CKKS parameters and its own circuit, before any key is made:

1. **Noise of one operation, from the parameters.** A fresh public-key encryption carries the error
   e = v·e₀ + e₁ + e₂·s (v, s ternary with variance 2/3 per coefficient, e₀, e₁, e₂ discrete
   Gaussian of standard deviation σ = 3.2, SEAL's and OpenFHE's default). Its coefficients have
   variance ≈ (4N/3)·σ², and decoding a slot sums N of them (the canonical embedding), so one slot
   carries an error of standard deviation

       σ_slot = σ · N · √(4/3) / Δ          (Δ = 2^scale_bits)

   (the average-case analysis of Costache, Curtis, Hales, Murphy, Ogilvie and Player, "On the
   precision loss in approximate homomorphic encryption", SAC 2023). Rescaling adds rounding noise of
   standard deviation √(N/18)·√N/Δ, two orders of magnitude smaller; key switching (relinearisation,
   rotations) with SEAL's special prime adds less than a fresh encryption. N = 16384, Δ = 2^40 gives
   σ_slot = 5.5e-8, the order the SEAL backend is measured at (ckks/sim_backend.CKKS_NOISE_STD).

2. **Its growth through this job's circuit, by rehearsal.** The trainer's own server half runs in
   the client's process on the simulation backend, which adds Gaussian noise of σ_slot after every
   encryption, rescale, plaintext or scalar multiplication and rotation (and bootstrapping noise
   where the job bootstraps: the real engine's ``bootstrap_noise_std`` where it exceeds the sim's 1e-5,
   e.g. the error measured for the low-precision 128-bit OpenFHE preset, 1.35e-4 max; never less than
   1e-5: honest runs on the precise test rings (2.9e-7 per bootstrap measured on x ~ U(-1, 1), also at
   |x| <= 8) drifted up to 100x further than a rehearsal with that figure alone, iris mini-batch mlr on
   openfhe-boot-test: 7.1e-5 vs 6.7e-7), with the job's refreshes answered in-process as the data owner would
   answer them. A trainer that bootstraps inside its iterations (models/inner_boot.py) does so in the
   rehearsal too, at the same points: the rehearsal runs its server half with the same refresh hook on an
   engine that bootstraps to the real engine's level, so each of those bootstraps adds its noise.
   (Bootstrapping error grows with the magnitude of the values: on openfhe-boot-test 1.0e-6 max at
   |x| <= 1, 6.8e-6 at 16, 4.9e-4 at 64; pre-activations are bootstrapped at up to their sigmoid's
   interval, so the rehearsal's per-bootstrap figure can be below the real one there. Honest runs stay
   far inside the bound: 4-8-4-3 on openfhe-boot-test, 5.4e-6 against a bound of 1.7e-2.) The rehearsal's distance from the twin, ``rehearsed``, is what this job's
   arithmetic makes of CKKS noise of that size: the polynomial's coefficients, the learning rate,
   momentum and the number of iterations all act on it exactly as in the encrypted run.

3. **The bound**: ``bound = SLACK · max(rehearsed, levels · σ_slot)`` with SLACK = 100. Honest SEAL
   runs measured here stay between 1.4× and 9.7× their rehearsal (iris mlp at n32768: 1.35e-4 vs
   9.7e-5; wine mini-batch mlr at n16384, four runs: 1.3e-4 to 8.5e-4 vs 8.8e-5): the simulation
   draws one sample of the noise, and leaves out what SEAL adds beyond the model (its key-switching
   noise on rotations measured 8× a fresh encryption's at n16384). 100 keeps an order of magnitude
   beyond the largest ratio seen; the second term keeps a floor of one fresh error per level used.
   A server that returns encryptions of other values (e.g. +0.5 added to every weight)
   is orders of magnitude past it, and so is a tampering of 3× the bound that the fixed rule of
   earlier versions (1% of the weights' scale) let through (tests/test_twin_bound.py).

Nothing here is derived from a decryption: the rehearsal runs on the client's plaintext, and the
bound stays with the client (it is not in the job bundle).
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np

SEAL_ERROR_STD = 3.2   # σ of the error distribution (SEAL: seal_he_std_parms_error_std_dev; OpenFHE: 3.19)
SLACK = 100.0         # module docstring, point 3
REHEARSAL_SEED = 0


def ckks_noise_std(params) -> float:
    """σ_slot: standard deviation of the error one CKKS operation leaves in a slot, in the slots' units
    (module docstring, point 1). ``params``: a CKKSParams (ring degree N, scale_bits)."""
    n = int(params.poly_modulus_degree)
    fresh = SEAL_ERROR_STD * n * math.sqrt(4.0 / 3.0)
    rescale = math.sqrt(n / 18.0) * math.sqrt(n)
    return (fresh + rescale) / 2.0 ** int(params.scale_bits)


def twin_bound(job, engine=None) -> dict:
    """The twin-check bound of a prepared client job (client_jobs.ClientJob), derived as the module
    docstring says. ``engine``: the job's real engine, only read for its ``bootstrap_level`` when the
    job bootstraps, and for its ``bootstrap_noise_std`` (None or absent: the sim's default).
    Returns {"bound", "rehearsed", "noise_std", "bootstrap_noise_std", "levels", "seconds"} (absolute values
    in the weights' units; seconds of client time). Runs the whole server half on the simulation
    backend in this process: about as long as a fit on the sim backend."""
    from hetrain.ckks.sim_backend import BOOTSTRAP_NOISE_STD, SimEngine

    t0 = time.perf_counter()
    params = job.params
    sigma = ckks_noise_std(params)
    boot = engine.bootstrap_level if (job.refresh == "bootstrap" and engine is not None) else None
    boot_noise = getattr(engine, "bootstrap_noise_std", None) if boot is not None else None
    if boot_noise is not None:  # a floor: the measured error is of one bootstrap of U(-1, 1) (docstring, point 2)
        boot_noise = max(float(boot_noise), BOOTSTRAP_NOISE_STD)
    ckks_log = logging.getLogger("hetrain.ckks")
    level = ckks_log.level
    ckks_log.setLevel(logging.WARNING)  # the rehearsal's "data is NOT encrypted" is not the user's run
    try:
        sim = SimEngine(params, job.rotations, noise=sigma, seed=REHEARSAL_SEED, force_insecure=True,
                        bootstrap_level=boot, bootstrap_noise=boot_noise)
        rehearsed = job.rehearse(sim)
    finally:
        ckks_log.setLevel(level)
    levels = max(1, int(getattr(job, "levels_used", 0) or params.levels))
    bound = SLACK * max(rehearsed if np.isfinite(rehearsed) else 0.0, levels * sigma)
    return {"bound": float(bound), "rehearsed": float(rehearsed), "noise_std": float(sigma),
            "bootstrap_noise_std": None if boot is None else float(sim.bootstrap_noise), "levels": levels,
            "seconds": time.perf_counter() - t0}


def describe(b: dict) -> str:
    """One plain line for the plan printed before keys are made."""
    return (f"twin check: the decrypted model must match its plaintext twin to {b['bound']:.2g} (100 × the "
            f"{b['rehearsed']:.2g} a simulated run of this job with this preset's CKKS noise, {b['noise_std']:.2g} "
            "per operation, drifted from it); a larger gap means the server computed something else")
