"""Optional backend on OpenFHE (BSD-2-Clause): CKKS with bootstrapping and a client/server split.

Installed on request: ``pip install 'hetrain[openfhe]'`` (the ``openfhe`` wheel 1.6.1.0.22.4 carries a
CPython 3.10 extension only). Imported only when backend "openfhe" is asked for.

Scaling: FLEXIBLEAUTO. OpenFHE then keeps one exact scale per level (s_{l+1} = s_l^2 / q_l, the same
rule the SEAL backend implements by hand) and aligns operands at different levels with a scalar
multiplication that lands exactly on the lower level's scale, so the engine's exact-scale contract
holds without any bookkeeping here (measured: 24 products by an encryption of ones at 59-bit primes,
relative error 1.6e-9). FIXEDMANUAL would give explicit rescales but treats every scale as 2^p;
FLEXIBLEAUTO is also what OpenFHE recommends for bootstrapping precision. Mapping onto the engine:

* FLEXIBLEAUTO rescales lazily and ``Rescale``/``LevelReduce`` are no-ops in that mode; ``_rescale``
  uses ``Compress(ct, towers, 1)``, which performs the pending rescale, so every ciphertext an engine
  hands out is canonical: noise-scale degree 1 at the OpenFHE level of its hetrain level.
* ``_drop`` adds an exact zero ciphertext (``e - e``) of the target level: OpenFHE's own level
  adjustment (scalar multiplication + rescale onto that level's scale) does the exact lowering.
* hetrain level h is OpenFHE level ``depth - off - h``. ``off`` is 1 on bootstrapping parameters:
  OpenFHE's bootstrap spends one more rescale on its input (a ciphertext on the last tower alone
  cannot be bootstrapped), so the last tower is kept for it and hetrain's level 0 is two towers.
* a bootstrapped ciphertext comes back at ``bootstrap_level`` = depth - 1 - GetBootstrapDepth, which is
  also ``max_level``: fresh encryptions start there too (the levels above are the bootstrap's own, as
  with desilofhe), so the planners' rule "a refresh restores max_level" holds. Inputs are first
  lowered to level 0 (OpenFHE only refreshes low ciphertexts; one rule for all).
  Bootstrapped values must stay small (|x| <= 8 measured with 1e-6 error at 59-bit scaling).
* rotation keys: ``EvalRotateKeyGen`` for the declared (normalised, left) steps only; bootstrapping
  parameters add OpenFHE's own bootstrapping keys (``EvalBootstrapKeyGen``) to the same key map.

OpenFHE keeps evaluation keys in process-wide maps keyed by the secret key's *tag*; each engine
that makes keys gets its own tag (``secret_key=``: a new tag for the same secret), and the public
context records the tag so a loaded secret key is re-tagged to match. Key material serialises in
OpenFHE's binary format inside hetrain's container (``ckks/container.py``): parts ``cc`` (context),
``pk``, ``rlk``, ``gk`` (rotation + bootstrapping keys) in the public context, ``sk`` alone in the
secret-key container.

A secret key given with ``secret_key=`` gets a fresh public key through
``MultipartyKeyGen([sk])`` (b = e - a*s with fresh a, e: the same construction as KeyGen; OpenFHE
marks the multi-share use of that call "debugging only", which does not apply to a single share).
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import pathlib
import secrets
import weakref

import numpy as np

from .container import pack, read_container_file, unpack, write_container_file
from .engine import Engine, read_secret_key, unpack_secret_key
from .errors import CKKSError, InsecureParameters, MissingRotationKey, SerializationError
from .params import CKKSParams

# OpenFHE parallelises with OpenMP, whose threads spin while they wait by default: on an oversubscribed
# machine (more runnable processes than cores) a spinning thread takes the core its partner needs.
# Measured on this shared 2-core machine (bootstrap, openfhe-boot-test-deep): at load ~5, 4.8 s with 2
# spinning threads, 1.5 s passive, 1.2 s with 1 thread; at load ~4 (bench/openfhe_threads.py,
# interleaved medians) 0.45 s spinning, 0.56 s passive, 0.79 s with 1 thread. Passive loses ~25% on
# free cores and saves 3x when they are shared: the default here. Read by libgomp when it loads, so set
# before openfhe is imported; a value the user set (OMP_WAIT_POLICY=ACTIVE) wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # optional: no wheel for Python 3.11
    import openfhe as _o
except ImportError:  # pragma: no cover - exercised where openfhe is absent
    _o = None


# engines holding rotation/bootstrapping keys in OpenFHE's process-wide map (release_evaluation_keys puts theirs back)
_LIVE: "weakref.WeakSet[OpenFHEEngine]" = weakref.WeakSet()


def available() -> bool:
    """Whether the optional package openfhe imports here (backend "openfhe"; its wheel is for Python 3.10)."""
    return _o is not None


def _require():
    if _o is None:
        raise CKKSError("backend 'openfhe' needs the optional package openfhe (BSD-2; wheel for Python 3.10): "
                        "pip install 'hetrain[openfhe]'")
    return _o


@dataclasses.dataclass(frozen=True)
class OpenFHEConfig:
    """What OpenFHE needs beyond CKKSParams. ``levels``: hetrain levels of a fresh ciphertext, which on
    bootstrapping parameters are also the levels a bootstrap restores (the levels above them are
    reserved for the bootstrap itself, as in desilofhe; see the module docstring)."""

    ring_dim: int
    levels: int
    scale_bits: int = 59
    first_mod: int = 60
    level_budget: tuple[int, int] | None = None  # None: no bootstrapping
    dnum: int = 0          # OpenFHE's number of large digits in key switching (0: its default)
    secure: bool = True    # False: a test ring below 128 bits (needs force_insecure)
    name: str = "custom"
    slots: int = 0         # sparse packing (fewer slots than N/2: cheaper bootstrapping); 0: full
    # measured max abs error of one bootstrap over the slots, x ~ U(-1, 1) (bench/openfhe_split.py,
    # bench/bootstrap.py); 0: not measured. The twin-bound rehearsal uses it (bootstrap_noise_std).
    bootstrap_error: float = 0.0
    # measured (public context bytes, data owner's peak RSS bytes, server's peak RSS bytes) of a run at
    # these parameters; () where not measured. protocol/estimate.py uses it: its SEAL-based formulas do
    # not count OpenFHE's bootstrapping keys (at openfhe-boot: 0.5 GB estimated against 7.65 GiB).
    measured_bytes: tuple[int, ...] = ()

    @property
    def bootstraps(self) -> bool:
        """Whether the set bootstraps (``level_budget`` given: OpenFHE's CoeffsToSlots/SlotsToCoeffs level budget)."""
        return self.level_budget is not None

    @property
    def off(self) -> int:
        """Towers reserved below the hetrain levels: 1 on bootstrapping parameters (the bootstrap's input
        level), else 0."""
        return 1 if self.bootstraps else 0

    def boot_depth(self) -> int:
        """Levels the bootstrap itself consumes (OpenFHE ``CryptoContext.GetBootstrapDepth`` for ``level_budget`` and a
        uniform ternary secret); 0 without bootstrapping. Raises CKKSError when openfhe is not installed.
        """
        if not self.bootstraps:
            return 0
        o = _require()
        return int(o.CryptoContext.GetBootstrapDepth(list(self.level_budget), o.SecretKeyDist.UNIFORM_TERNARY))

    def depth(self) -> int:
        """OpenFHE multiplicative depth: the hetrain levels, plus (bootstrapping) the reserved tower and
        the bootstrap's own depth."""
        return self.levels + self.off + self.boot_depth()

    def params(self) -> CKKSParams:
        """The nominal CKKSParams of this set (ring N, ``levels`` primes of ``scale_bits`` between a ``first_mod``-bit
        and a 60-bit prime; sparse ``slots``): what fingerprints and describes it. OpenFHE picks the actual primes.
        """
        # nominal chain: OpenFHE chooses its primes (first modulus, one per level, key-switching primes)
        return CKKSParams(self.ring_dim, (self.first_mod,) + (self.scale_bits,) * self.levels + (60,),
                          self.scale_bits, self.name, self.slots if self.slots != self.ring_dim // 2 else 0)

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (``level_budget`` a list or None); inverse of ``from_dict``."""
        d = dataclasses.asdict(self)
        d["level_budget"] = None if self.level_budget is None else list(self.level_budget)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "OpenFHEConfig":
        """Inverse of ``to_dict``. Raises TypeError for unknown or missing fields."""
        d = dict(d)
        if d.get("level_budget") is not None:
            d["level_budget"] = tuple(int(x) for x in d["level_budget"])
        return cls(**d)


def _boot(name: str, ring_dim: int, after: int, budget: tuple[int, int], secure: bool, *, scale_bits: int = 59,
          dnum: int = 0, slots: int = 0, first_mod: int = 60, error: float = 0.0,
          measured: tuple[int, ...] = ()) -> OpenFHEConfig:
    """A bootstrapping set with ``after`` hetrain levels after a bootstrap (uniform ternary secret).
    ``first_mod`` - ``scale_bits`` must stay within OpenFHE's bootstrapping correction factor (10 at
    N=2^13: "Degree [13] must be less than or equal to the correction factor [10]" otherwise)."""
    return OpenFHEConfig(ring_dim, after, scale_bits, first_mod, budget, dnum, secure, name, slots, error, measured)


PRESETS: dict[str, OpenFHEConfig] = {
    # INSECURE test rings (force_insecure): 7 levels without bootstrapping; small bootstrapping rings
    # (full packing, 1024 slots; sparse, 64 slots) with 6 levels after each bootstrap.
    "openfhe-test": OpenFHEConfig(8192, 7, 50, 60, None, 0, False, "openfhe-test"),
    # bootstrap errors: max abs over the slots, x ~ U(-1, 1), 3 bootstraps (bench/bootstrap.py, /tmp/ofhe128 logs)
    "openfhe-boot-test": _boot("openfhe-boot-test", 2048, 6, (3, 3), False, error=1.15e-6),
    "openfhe-boot-test-sparse": _boot("openfhe-boot-test-sparse", 4096, 6, (2, 2), False, slots=64, error=2.12e-7),
    # 10 levels after each bootstrap (one mlp iteration with Nesterov momentum, either layout), 1024 slots: INSECURE, for tests
    "openfhe-boot-test-deep": _boot("openfhe-boot-test-deep", 2048, 10, (3, 3), False, error=9.73e-7),
    # 128-bit without bootstrapping: N=2^15, 10 levels at 2^50 (OpenFHE's HEStd_128_classic check).
    "openfhe-l10": OpenFHEConfig(32768, 10, 50, 60, None, 0, True, "openfhe-l10"),
    # 128-bit with bootstrapping, N=2^16, uniform ternary secret (the HE standard's distribution),
    # sparse packing of 1024 slots, 6 levels after each bootstrap (one mini-batch MLR step).
    # OpenFHE's 128-bit bound on log QP at N=2^16 allows depth 23 at 59-bit primes (any dnum): 4 levels
    # after a [2,2] bootstrap. 55-bit primes and dnum 6 allow depth 25: 6 levels. 9 levels (one MLP
    # iteration) do not fit N=2^16 at 128 bits with a uniform ternary secret and useful precision.
    # 1024 slots, not 4096: a [2,2] bootstrap of 4096 slots needs 65 rotation keys of 186 MiB (≈12 GB;
    # counted on N=2^13), 1024 slots need ≈40: measured at N=2^16 (bench/openfhe_split.py): public context
    # 7.65 GiB, keygen peak 11.0 GiB, server peak 11.3 GiB, max error 1.35e-4 to 1.57e-4 on x ~ U(-1, 1) (5 runs).
    # measured: Iris, mini-batch mlr, --refresh bootstrap, owner and server in their own processes
    # (bench/openfhe_split.py; /usr/bin/time -v): public context 8,219,282,077 B, owner 11.1 GiB, server 13.2 GiB
    "openfhe-boot": _boot("openfhe-boot", 65536, 6, (2, 2), True, scale_bits=55, dnum=6, slots=1024, error=1.6e-4,
                          measured=(8_219_282_077, int(11.1 * 2**30), int(13.2 * 2**30))),
    # No 128-bit N=2^16 set with >= 9 levels after a bootstrap is offered: OpenFHE accepts some (its 1772-bit
    # bound includes the key-switching primes, so they need dnum >= 8 and scaling <= 55 bits), but the best one
    # that fits a few GB ([4,4], 47-bit, first modulus 55, dnum 11) measured 2.5e-2 max error per bootstrap
    # on 4096 slots and ≈12 GB of keys (N=2^13 with the same chain: 1.4 GiB; bench/openfhe_params.py).
}


def measured_bytes(preset: str) -> tuple[int, int, int] | None:
    """(public context bytes, data owner's peak RSS, server's peak RSS) measured at the preset named
    ``preset`` (``OpenFHEConfig.measured_bytes``), or None where not measured or not an OpenFHE preset.
    Plain data: openfhe itself is not imported (the registry's ``measured``)."""
    cfg = PRESETS.get(preset)
    return tuple(cfg.measured_bytes) if cfg is not None and cfg.measured_bytes else None


def resolve(preset) -> OpenFHEConfig:
    """OpenFHE config for a preset name or a CKKSParams (OpenFHE preset names pass; SEAL presets and
    custom chains map to the same ring, level count and scale, first modulus, one special prime).
    Raises ValueError for an unknown preset name.
    """
    from .params import PRESETS as SEAL_PRESETS
    if isinstance(preset, OpenFHEConfig):
        return preset
    if isinstance(preset, CKKSParams):
        if preset.name in PRESETS:
            return PRESETS[preset.name]
        p = preset
    elif preset in PRESETS:
        return PRESETS[preset]
    elif preset in SEAL_PRESETS:
        p = SEAL_PRESETS[preset]
    else:
        raise ValueError(f"unknown openfhe parameter set {preset!r}; choose one of "
                         f"{', '.join(list(PRESETS) + list(SEAL_PRESETS))}")
    # dnum = levels + 1: one key-switching prime as in SEAL, so the total bits (and the 128-bit check) match
    return OpenFHEConfig(p.poly_modulus_degree, p.levels, p.scale_bits, p.coeff_bits[0], None, p.levels + 1,
                         p.is_128_bit_secure(), p.name)


def _make_context(cfg: OpenFHEConfig, force_insecure: bool):
    """(crypto context, forced): HEStd_128_classic, which OpenFHE checks against log QP; a set below
    128 bits (a test ring, or one OpenFHE refuses) only with ``force_insecure`` (HEStd_NotSet)."""
    o = _require()
    if not cfg.secure and not force_insecure:
        raise InsecureParameters(f"openfhe parameters {cfg.name} (N={cfg.ring_dim}, depth {cfg.depth()}) are below "
                                 f"128-bit security; pass force_insecure=True (command line: --force-insecure; every "
                                 f"log line will then say INSECURE) "
                                 f"or choose one of {', '.join(n for n, c in PRESETS.items() if c.secure)}")
    if cfg.secure:
        try:
            return _gen_context(o, cfg, o.SecurityLevel.HEStd_128_classic), False
        except InsecureParameters:
            if not force_insecure:
                raise
    try:
        return _gen_context(o, cfg, o.SecurityLevel.HEStd_NotSet), True
    except InsecureParameters as exc:
        raise CKKSError(str(exc)) from None


def _gen_context(o, cfg: OpenFHEConfig, level):
    p = o.CCParamsCKKSRNS()
    p.SetSecretKeyDist(o.SecretKeyDist.UNIFORM_TERNARY)
    p.SetSecurityLevel(level)
    p.SetRingDim(cfg.ring_dim)
    p.SetScalingModSize(cfg.scale_bits)
    p.SetFirstModSize(cfg.first_mod)
    p.SetScalingTechnique(o.ScalingTechnique.FLEXIBLEAUTO)
    p.SetMultiplicativeDepth(cfg.depth())
    if cfg.slots and cfg.slots != cfg.ring_dim // 2:
        p.SetBatchSize(cfg.slots)
    if cfg.dnum:
        p.SetNumLargeDigits(cfg.dnum)
    try:
        cc = o.GenCryptoContext(p)
    except RuntimeError as exc:
        raise InsecureParameters(f"OpenFHE refuses the parameters {cfg.name} at 128-bit security "
                                 f"(HEStd_128_classic): {str(exc).split(':')[-1].strip()}") from None
    if cc.GetRingDimension() != cfg.ring_dim:
        raise InsecureParameters(f"OpenFHE needs ring dimension {cc.GetRingDimension()} for {cfg.name} at 128 bits, "
                                 f"the preset asks for {cfg.ring_dim}")
    for feature in (o.PKESchemeFeature.PKE, o.PKESchemeFeature.KEYSWITCH, o.PKESchemeFeature.LEVELEDSHE):
        cc.Enable(feature)
    if cfg.bootstraps:
        cc.Enable(o.PKESchemeFeature.ADVANCEDSHE)
        cc.Enable(o.PKESchemeFeature.FHE)
    return cc


class OpenFHEEngine(Engine):
    """CKKS on OpenFHE (real encryption; bootstrapping on parameters with a level budget)."""

    backend_name = "openfhe"
    secure = True
    # OpenFHE runs each operation on every core itself (OpenMP), and its objects do not cross processes
    # through the executor's wire format: its tasks run in the server process
    process_workers = False

    def __init__(self, preset="openfhe-test", rotation_steps=(), *, force_insecure: bool = False,
                 secret_key: bytes | None = None, bootstrap_keys: bool = True, _public: dict | None = None,
                 _secret: bytes | None = None) -> None:
        """``bootstrap_keys=False``: no bootstrapping keys (≈8 GB and a minute at openfhe-boot) for an engine
        that only holds the secret key, encrypts and decrypts (a key directory, a decrypting data owner)."""
        o = _require()
        self._o = o
        cfg = OpenFHEConfig.from_dict(_public["config"]) if _public is not None else resolve(preset)
        self.config = cfg
        params = cfg.params()
        self._cc, forced = _make_context(cfg, force_insecure) if _public is None else (None, not cfg.secure)
        if _public is None:
            cc = self._cc
            if secret_key is None:
                kp, key_id = cc.KeyGen(), secrets.token_hex(8)
            else:  # the stored secret, a fresh public key and fresh evaluation keys, under a new tag
                key_id, raw = read_secret_key(secret_key, self.backend_name, params)
                cc.Enable(o.PKESchemeFeature.MULTIPARTY)  # for MultipartyKeyGen: a public key for a given secret
                kp = cc.MultipartyKeyGen([_load(o.DeserializePrivateKeyString, raw, "secret key")])
                kp.secretKey.SetKeyTag(secrets.token_hex(16))
            super().__init__(params, rotation_steps, key_id, True, forced)
            self._sk, self._pk = kp.secretKey, kp.publicKey
            self._tag = self._sk.GetKeyTag()
            self._pk.SetKeyTag(self._tag)
            cc.EvalMultKeyGen(self._sk)
            with self.counters.time("keygen_galois", len(self.rotation_steps)):
                if self.rotation_steps:
                    cc.EvalRotateKeyGen(self._sk, sorted(self.rotation_steps))
            if cfg.bootstraps and bootstrap_keys:
                with self.counters.time("keygen_bootstrap"):
                    cc.EvalBootstrapSetup(list(cfg.level_budget), [0, 0], self._slots_of(cfg))
                    cc.EvalBootstrapKeyGen(self._sk, self._slots_of(cfg))
            self._boot_keys = bool(cfg.bootstraps and bootstrap_keys)
            self._has_gk = bool(self.rotation_steps) or self._boot_keys
        else:
            self._cc = cc = _load(o.DeserializeCryptoContextString, _public["cc"], "crypto context")
            super().__init__(params, _public["steps"], _public["key_id"], False, forced)
            self._tag = _public["tag"]
            self._pk = _load(o.DeserializePublicKeyString, _public["pk"], "public key")
            if "rlk" in _public:  # absent: a decrypting client that loaded no evaluation keys
                try:
                    _load(o.DeserializeEvalMultKeyString, _public["rlk"], "relinearisation key")
                except SerializationError as exc:  # same process as the engine that made them: already there
                    if "there is a key vector for the given keyTag" not in str(exc):
                        raise
            self._has_gk = "gk" in _public
            if self._has_gk and isinstance(_public["gk"], str):  # a file (from_public_file): OpenFHE reads it
                if not cc.DeserializeEvalAutomorphismKey(_public["gk"], o.BINARY):
                    raise SerializationError("rotation/bootstrapping keys do not load (OpenFHE refused the file)")
            elif self._has_gk:
                _load(o.DeserializeEvalAutomorphismKeyString, _public["gk"], "rotation/bootstrapping keys")
            self._boot_keys = bool(cfg.bootstraps and self._has_gk and _public.get("bootstrap_keys", True))
            if self._boot_keys:
                with self.counters.time("bootstrap_setup"):
                    cc.EvalBootstrapSetup(list(cfg.level_budget), [0, 0], self._slots_of(cfg))
            self._sk = None
            if _secret is not None:
                self._sk = _load(o.DeserializePrivateKeyString, _secret, "secret key")
                self._sk.SetKeyTag(self._tag)
                self.has_secret_key = True
        if self._has_gk:
            _LIVE.add(self)
        self._depth = cfg.depth()
        self._off = cfg.off
        self._zeros: dict[int, object] = {}
        if cfg.bootstraps:
            self._boot_level = self._depth - 1 - cfg.boot_depth()  # == max_level
            if self._boot_level < 1:
                raise CKKSError(f"openfhe parameters {cfg.name}: bootstrapping leaves {self._boot_level} levels")
        else:
            self._boot_level = None
        if forced:
            self.log.warning("parameters below 128-bit security were forced: openfhe %s N=%d depth %d",
                             cfg.name, cfg.ring_dim, self._depth)

    @staticmethod
    def _slots_of(cfg: OpenFHEConfig) -> int:
        return cfg.slots or cfg.ring_dim // 2

    # ---------------------------------------------------------------- levels
    def _olevel(self, level: int) -> int:
        """OpenFHE level (rescales done) of hetrain level ``level``."""
        return self._depth - self._off - int(level)

    def _hlevel(self, ct) -> int:
        """hetrain level of an OpenFHE ciphertext (a pending rescale counts as done)."""
        return self._depth - self._off - ct.GetLevel() - (ct.GetNoiseScaleDeg() - 1)

    def _mul_scale(self, level: int) -> float:
        return float(self._cc.GetScalingFactorReal(self._olevel(level)))

    def _canonical(self, ct):
        """Perform a pending rescale (degree 2 -> 1); towers beyond the count stay as they are."""
        if ct.GetNoiseScaleDeg() > 1:
            ct = self._cc.Compress(ct, self._depth + 2, 1)
        return ct

    def _zero_ct(self, level: int):
        """An exact zero ciphertext (e - e) at hetrain ``level``, scale of that level: adding it lowers
        a ciphertext exactly (OpenFHE's FLEXIBLEAUTO level adjustment)."""
        if level not in self._zeros:
            e = self._encrypt(np.zeros(self.slots), level)
            self._zeros[level] = self._cc.EvalSub(e, e)
        return self._zeros[level]

    # ---------------------------------------------------------------- bootstrapping
    @property
    def can_bootstrap(self) -> bool:
        return self._boot_level is not None and self._boot_keys

    @property
    def bootstrap_level(self) -> int | None:
        return self._boot_level

    @property
    def bootstrap_noise_std(self) -> float | None:
        """Standard deviation of one bootstrap's error in a slot, from the preset's measured max abs error
        e over s slots (``OpenFHEConfig.bootstrap_error``): σ = e / √(2 ln 2s), the expected maximum of s
        Gaussian magnitudes. None when the parameters do not bootstrap or the error was not measured.
        The twin-bound rehearsal (protocol/twin_bound.py) adds noise of this size per bootstrap."""
        e = self.config.bootstrap_error
        if self._boot_level is None or not e:
            return None
        return float(e) / float(np.sqrt(2.0 * np.log(2.0 * self.slots)))

    def _bootstrap(self, ct):
        data = ct.data if ct.level == 0 else self._drop(ct, 0)
        out = self._canonical(self._cc.EvalBootstrap(data))
        h = self._hlevel(out)
        if h > self._boot_level:
            out = self._cc.EvalAdd(out, self._zero_ct(self._boot_level))
        elif h < self._boot_level:
            raise CKKSError(f"OpenFHE bootstrap returned level {h}, expected {self._boot_level}")
        return out

    def release_evaluation_keys(self) -> None:
        """Free this engine's rotation and bootstrapping keys (≈8 GB at openfhe-boot) once they are written
        out: the data owner calls it after writing the job bundle, since it only encrypts and decrypts from
        then on (rotate and bootstrap raise afterwards; the relinearisation key, one key, stays). OpenFHE clears
        its key map for every key tag at once, so the keys of the other live engines of this process are
        put back; the freed memory is returned to the system (glibc ``malloc_trim``)."""
        if not self._has_gk:
            return
        keep = [(e._cc, e._tag, e._cc.GetEvalAutomorphismKeyMap(e._tag)) for e in list(_LIVE)
                if e is not self and e._has_gk]
        self._o.CryptoContext.ClearEvalAutomorphismKeys()
        for cc, tag, keys in keep:
            cc.InsertEvalAutomorphismKey(keys, tag)
        del keep
        self._has_gk = self._boot_keys = False
        _LIVE.discard(self)
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: the memory is reused by the process instead
            pass

    # ---------------------------------------------------------------- primitives
    def _plain(self, v, level: int):
        return self._cc.MakeCKKSPackedPlaintext(np.ascontiguousarray(v, dtype=np.float64), 1, self._olevel(level),
                                                None, self.slots)

    def _encrypt(self, v, level):
        return self._cc.Encrypt(self._pk, self._plain(v, level))

    def _decrypt(self, ct):
        pt = self._cc.Decrypt(self._sk, ct.data)
        pt.SetLength(self.slots)
        return np.asarray(pt.GetRealPackedValue(), dtype=np.float64)

    def _encode_add(self, v, level):
        return self._plain(v, level)

    def _encode_mul(self, v, level):
        return self._plain(v, level)

    def _add(self, a, b):
        return self._cc.EvalAdd(a.data, b.data)

    def _add_plain(self, a, pt):
        return self._cc.EvalAdd(a.data, pt)

    def _sub(self, a, b):
        return self._cc.EvalSub(a.data, b.data)

    def _neg(self, a):
        return self._cc.EvalNegate(a.data)

    def _tensor(self, a, b):
        return self._cc.EvalMultNoRelin(a.data, b.data)  # 3 polynomials, rescale pending

    def _square(self, a):
        return self._cc.EvalMultNoRelin(a.data, a.data)

    def _add_tensor(self, t1, t2):
        return self._cc.EvalAdd(t1, t2)

    def _relinearize(self, t):
        return self._cc.Relinearize(t)

    def _rescale(self, t, level):
        return self._canonical(t)

    def _mul_plain(self, a, pt):
        return self._canonical(self._cc.EvalMult(a.data, pt))

    def _mul_scalar(self, a, c):
        return self._canonical(self._cc.EvalMult(a.data, float(c)))

    def _rotate(self, a, step):
        if not self._has_gk:
            raise MissingRotationKey(f"this engine's rotation keys were released (release_evaluation_keys): "
                                     f"no rotation by {step}")
        return self._cc.EvalRotate(a.data, int(step))

    def _drop(self, a, level):
        return self._cc.EvalAdd(a.data, self._zero_ct(level))

    # ---------------------------------------------------------------- serialisation
    def _ct_to_bytes(self, ct):
        return bytes(self._o.Serialize(ct.data, self._o.BINARY))

    def _ct_from_bytes(self, b, level):
        if not 0 <= level <= self.max_level:
            raise SerializationError(f"ciphertext claims level {level}, parameters have 0..{self.max_level}")
        ct = _load(self._o.DeserializeCiphertextString, b, "ciphertext")
        if ct.GetNoiseScaleDeg() != 1 or self._hlevel(ct) != level or ct.NumberCiphertextElements() != 2:
            raise SerializationError("ciphertext header and OpenFHE payload disagree (level or size)")
        ct.SetKeyTag(self._tag)  # same key id (checked by the engine): this engine's evaluation keys
        return ct

    def _public_meta(self) -> dict:
        return {"kind": "public_context", "backend": self.backend_name, "params": self.params.to_dict(),
                "key_id": self.key_id, "steps": sorted(self.rotation_steps), "config": self.config.to_dict(),
                "tag": self._tag, "forced_insecure": self.forced_insecure, "bootstrap_keys": self._boot_keys}

    def _small_public_parts(self) -> dict[str, bytes]:
        o = self._o
        return {"cc": bytes(o.Serialize(self._cc, o.BINARY)), "pk": bytes(o.Serialize(self._pk, o.BINARY)),
                "rlk": bytes(o.SerializeEvalMultKeyString(o.BINARY, self._tag))}

    def public_bytes(self) -> bytes:
        """The public context in memory: holds the serialised keys next to the keys themselves (twice the
        key memory, ≈7 GB more at openfhe-boot); ``write_public`` writes the same bytes to a file without that."""
        o = self._o
        parts = self._small_public_parts()
        if self._has_gk:
            parts["gk"] = bytes(o.SerializeEvalAutomorphismKeyString(o.BINARY, self._tag))
        return pack(self._public_meta(), parts)

    def write_public(self, path: str | os.PathLike) -> tuple[int, str]:
        """Write ``public_bytes()``'s container (byte for byte the same format) to ``path`` without the
        rotation/bootstrapping keys ever being in memory as bytes: OpenFHE serialises them to a temporary
        file itself (``SerializeEvalAutomorphismKey``), which is copied into the container in chunks.
        Peak memory ≈ the keys + a few MiB, against ≈3x the keys for ``public_bytes``. Returns (file size,
        SHA-256); the file appears complete or not at all (atomic rename), readable by its owner only."""
        import tempfile

        o = self._o
        parts: list = list(self._small_public_parts().items())
        tmp = None
        try:
            if self._has_gk:
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.fspath(path)) or ".", prefix=".gk.", suffix=".part")
                os.close(fd)
                if not self._cc.SerializeEvalAutomorphismKey(tmp, o.BINARY, self._tag):
                    raise SerializationError("OpenFHE could not serialise the rotation/bootstrapping keys")
                parts.append(("gk", pathlib.Path(tmp)))
            size, sha = write_container_file(path, self._public_meta(), parts)
        finally:
            if tmp is not None:
                os.remove(tmp)
        os.chmod(path, 0o600)
        return size, sha

    def secret_key_bytes(self) -> bytes:
        return self._pack_secret_key(None if self._sk is None else bytes(self._o.Serialize(self._sk, self._o.BINARY)))

    @classmethod
    def from_bytes(cls, public: bytes, secret: bytes | None = None, *, force_insecure: bool = False) -> "OpenFHEEngine":
        """Rebuild an engine from ``public_bytes()`` (and optionally ``secret_key_bytes()`` of the same key set).

        Raises InsecureParameters for a context on a test ring below 128 bits that the data owner did not make
        with force_insecure (unless ``force_insecure``), SerializationError for bytes that are not a public
        context or do not load into OpenFHE, KeyMismatch when ``secret`` belongs to other keys, CKKSError when
        openfhe is not installed.
        """
        meta, parts = unpack(public, expect_kind="public_context")
        return cls._from_parts(meta, parts, secret, force_insecure)

    @classmethod
    def from_public_file(cls, path: str | os.PathLike, secret: bytes | None = None, *, force_insecure: bool = False,
                         evaluation_keys: bool = True) -> "OpenFHEEngine":
        """``from_bytes`` of a file written by ``write_public`` (or ``public_bytes``), holding at most one key
        part in memory: the rotation/bootstrapping keys go through a temporary file (0600, next to ``path``,
        checked against their SHA-256, removed after) that OpenFHE loads itself. ``evaluation_keys=False``:
        the context and public key only (a data owner that decrypts and encrypts, ≈ nothing of the
        gigabytes of keys). Raises SerializationError (corrupted or truncated file), InsecureParameters."""
        spill_dir = os.path.dirname(os.fspath(path)) or "."
        meta, parts = read_container_file(path, "public_context", ("gk",) if evaluation_keys else (), spill_dir,
                                          skip=() if evaluation_keys else ("rlk", "gk"))
        try:
            return cls._from_parts(meta, parts, secret, force_insecure)
        finally:
            if isinstance(parts.get("gk"), str):
                os.remove(parts["gk"])

    @classmethod
    def _from_parts(cls, meta: dict, parts: dict, secret: bytes | None, force_insecure: bool) -> "OpenFHEEngine":
        params = CKKSParams.from_dict(meta["params"])
        sk = None if secret is None else unpack_secret_key(meta, params, secret)
        cfg = OpenFHEConfig.from_dict(meta["config"])
        # the data owner forced these parameters when making the keys (recorded in the context): a server
        # computes on them (every log line says INSECURE); a context that does not say so is refused
        if not cfg.secure and not (force_insecure or meta.get("forced_insecure")):
            raise InsecureParameters(f"the public context uses openfhe parameters {cfg.name}, below 128-bit "
                                     "security, and was not made with force_insecure; load it with force_insecure=True")
        return cls(None, (), force_insecure=force_insecure,
                   _public={"key_id": meta["key_id"], "steps": meta["steps"], "config": meta["config"],
                            "tag": meta["tag"], "bootstrap_keys": meta.get("bootstrap_keys", True), **parts}, _secret=sk)

    def key_sizes(self) -> dict[str, int]:
        """Serialised size in bytes of each key kind (public_key, relin_keys, galois_keys: all automorphism keys,
        bootstrap keys included; secret_key when held), in OpenFHE's BINARY serialisation.
        """
        o, tag = self._o, self._tag
        sizes = {"public_key": len(o.Serialize(self._pk, o.BINARY)),
                 "relin_keys": len(o.SerializeEvalMultKeyString(o.BINARY, tag)),
                 "galois_keys": len(o.SerializeEvalAutomorphismKeyString(o.BINARY, tag)) if self._has_gk else 0}
        if self._sk is not None:
            sizes["secret_key"] = len(o.Serialize(self._sk, o.BINARY))
        return sizes

    def describe(self) -> str:
        c = self.config
        boot = f" bootstrap level budget={list(c.level_budget)} -> level {self._boot_level}" if c.bootstraps else ""
        return (f"openfhe {c.name} N={c.ring_dim} depth={self._depth} scale=2^{c.scale_bits} FLEXIBLEAUTO "
                f"levels={self.max_level} slots={self.slots}{boot} rotation keys={len(self.rotation_steps)} "
                f"secret key={'yes' if self.has_secret_key else 'no'}")


def _load(fn, data, what: str):
    try:
        return fn(bytes(data), _o.BINARY)
    except Exception as exc:  # OpenFHE raises RuntimeError with its own messages
        raise SerializationError(f"{what} does not load: {exc}") from None
