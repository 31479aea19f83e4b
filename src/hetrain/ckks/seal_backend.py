"""The real CKKS backend: Microsoft SEAL 4 through TenSEAL's ``tenseal.sealapi``.

hetrain pins TenSEAL 0.3.18 (SEAL 4.3) on Python 3.11+ and 0.3.16 (SEAL 4.1, the newest TenSEAL
for Python 3.10) on 3.10. Both expose the same calls, but SEAL refuses objects written by another
minor version, so keys and ciphertexts move only between installations of the same TenSEAL
(``_seal_from_bytes`` says so instead of SEAL's bare "incompatible version").

Scales are managed exactly. Rescaling divides by the level's prime q_l, which is only close to
2^40 (|2^40/q_l - 1| up to 2e-5 at N=32768); forcing the scale back to 2^40 after each
multiplication (what TenSEAL does) would bias every product by that much. Instead each level l
has its own scale s_l, chosen from the bottom up as s_0 = 2^40, s_{l+1} = sqrt(s_l * q_{l+1}),
so that a product of two ciphertexts at level l+1 lands exactly on s_l after rescaling, a
plaintext multiplier is encoded at s_{l-1}*q_l/s_l, and lowering a ciphertext by k levels is
k-1 free modulus switches plus one multiplication by 1 at the right scale. The s_l stay within
a few 1e-5 of 2^40, so precision is unchanged. (A bare modulus switch keeps the scale s_k of the
higher level: it would mislabel the values by s_k/s_l - 1, up to 7e-5 at n16384-deep, so alignment
keeps its one exact rescale. Measured on seed-MLR, 3 iterations: alignment by bare modulus switches
saved 14% of training but moved the weights by 1.8e-5, against 2.4e-5 for the whole CKKS-vs-twin gap.)

An engine holding the secret key (the data owner) encrypts symmetrically and keeps each fresh
ciphertext's seeded serialisation (``_Seeded``), and serialises the key-switching keys it makes
(relinearisation, Galois) in seeded form too: about half the upload bytes each (the server expands
the seeds when it loads them, ~0.03 s more per Galois key at n16384). SEAL objects move
to and from bytes through an anonymous memory file (``_memfd``), as sealapi offers paths only.
"""
from __future__ import annotations

import importlib.metadata
import math
import os
import secrets
import tempfile

import numpy as np
import tenseal.sealapi as seal

from .container import pack, unpack
from .engine import Engine, read_secret_key, unpack_secret_key
from .errors import InsecureParameters, SerializationError
from .params import CKKSParams


def _tmpdir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _memfd() -> int | None:
    """An anonymous in-memory file (Linux memfd_create), or None where there is none.

    TenSEAL's sealapi saves and loads SEAL objects by path only (no stream or string API), so
    bytes pass through a file; a memfd is one with no name in any file system (nothing to clean up,
    nothing another process can open by name) that SEAL reaches through /proc/self/fd/N."""
    if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.memfd_create("hetrain-seal", os.MFD_CLOEXEC)
    except OSError:
        return None


def _seal_to_bytes(obj) -> bytes:
    """SEAL objects save only to paths: through an anonymous memory file (else a RAM-backed temporary file)."""
    fd = _memfd()
    if fd is not None:
        try:
            obj.save(f"/proc/self/fd/{fd}")
            return os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
    fd, path = tempfile.mkstemp(dir=_tmpdir(), prefix="hetrain-")
    os.close(fd)
    try:
        obj.save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.remove(path)


def _load_via_file(obj, ctx, data: bytes) -> None:
    """``obj.load(ctx, path)`` of ``data``: through an anonymous memory file where there is one."""
    fd = _memfd()
    if fd is not None:
        try:
            view, done = memoryview(data), 0
            while done < len(view):
                done += os.write(fd, view[done:done + (1 << 30)])
            obj.load(ctx, f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    _load_via_tempfile(obj, ctx, data)


def _load_via_tempfile(obj, ctx, data: bytes) -> None:
    """``obj.load(ctx, path)`` of ``data`` through a private temporary file (no memfd on this system)."""
    fd, path = tempfile.mkstemp(dir=_tmpdir(), prefix="hetrain-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        obj.load(ctx, path)
    finally:
        os.remove(path)


def _written_by(data: bytes) -> str | None:
    """SEAL version (major.minor) in a serialised object's header: magic A15E, size, major, minor."""
    return f"{data[3]}.{data[4]}" if len(data) >= 5 and data[:2] == b"\x5e\xa1" else None


_LOCAL_SEAL_VERSION: list[str] = []


def seal_version() -> str:
    """Version (major.minor) of the SEAL that this TenSEAL bundles, as it writes it into every object."""
    if not _LOCAL_SEAL_VERSION:
        _LOCAL_SEAL_VERSION.append(_written_by(_seal_to_bytes(seal.Plaintext())) or "unknown")
    return _LOCAL_SEAL_VERSION[0]


def _seal_from_bytes(obj, ctx, data: bytes, what: str):
    try:
        _load_via_file(obj, ctx, data)
    except Exception as exc:  # SEAL raises ValueError/RuntimeError with terse messages
        theirs, ours = _written_by(data), seal_version()
        if theirs is not None and theirs != ours:
            raise SerializationError(
                f"{what} was written by SEAL {theirs}, this installation has SEAL {ours} (TenSEAL "
                f"{_tenseal_version()}); SEAL reads only its own version: both sides need the same TenSEAL "
                "(hetrain installs 0.3.18 on Python 3.11, 0.3.16 on Python 3.10)") from None
        raise SerializationError(f"{what} does not load under these parameters: {exc}") from None
    return obj


class _Seeded(seal.Ciphertext):
    """A fresh symmetric encryption that keeps its seeded serialisation (``seeded``).

    SEAL's symmetric encryption (secret key: the data owner's engine) draws the mask polynomial c1
    from a PRNG seed and can serialise the ciphertext as (c0, seed): about half the bytes of (c0, c1).
    ``Ciphertext.load`` expands the seed, so a server reads it as any ciphertext. Every engine
    operation writes a new ciphertext (none changes an operand in place), so the bytes stay those of
    this object's values; its scale is set only at encryption (``_fix_scale`` writes the same value).
    Source: SEAL 3.6+ ``Encryptor::encrypt_symmetric`` returning ``Serializable<Ciphertext>``."""

    def __init__(self, seeded: bytes) -> None:
        super().__init__()
        self.seeded = seeded


def _tenseal_version() -> str:
    try:
        return importlib.metadata.version("tenseal")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def galois_element(step: int, n: int) -> int:
    """SEAL's Galois element for a left rotation by ``step`` slots at ring degree n."""
    return pow(3, step % (n // 2), 2 * n)


class SealEngine(Engine):
    """CKKS on Microsoft SEAL (real encryption)."""

    backend_name = "seal"
    secure = True

    def __init__(self, params: CKKSParams, rotation_steps=(), *, force_insecure: bool = False,
                 secret_key: bytes | None = None, _public: dict | None = None, _secret: bytes | None = None) -> None:
        """Generate fresh keys (the client), or rebuild from ``public_bytes`` (``load_engine``).

        ``secret_key`` (``secret_key_bytes()`` of an earlier engine): keep that secret key (and its
        key id) and make fresh public, relinearisation and Galois keys for ``rotation_steps``."""
        forced = not params.is_128_bit_secure()
        params.check_security(force_insecure)
        self.ctx = _make_context(params, forced)
        if _public is None:
            if secret_key is None:
                keygen, key_id = seal.KeyGenerator(self.ctx), secrets.token_hex(8)
            else:
                key_id, raw = read_secret_key(secret_key, self.backend_name, params)
                keygen = seal.KeyGenerator(self.ctx, _seal_from_bytes(seal.SecretKey(), self.ctx, raw, "secret key"))
            super().__init__(params, rotation_steps, key_id, True, forced)
            self._sk = keygen.secret_key()
            self._pk = seal.PublicKey()
            keygen.create_public_key(self._pk)  # (TenSEAL does not bind SEAL's Serializable<PublicKey>)
            # seeded serialisations (SEAL's Serializable<...>: each key's uniform polynomials as a PRNG
            # seed): about half the bytes of the key-switching keys; the keys themselves are the same
            self._seeded = {"rlk": _seal_to_bytes(keygen.create_relin_keys())}
            self._rlk = _seal_from_bytes(seal.RelinKeys(), self.ctx, self._seeded["rlk"], "relinearisation keys")
            self._gk = seal.GaloisKeys()
            with self.counters.time("keygen_galois", len(self.rotation_steps)):
                if self.rotation_steps:
                    n = params.poly_modulus_degree
                    self._seeded["gk"] = _seal_to_bytes(
                        keygen.create_galois_keys([galois_element(s, n) for s in sorted(self.rotation_steps)]))
                    self._gk = _seal_from_bytes(seal.GaloisKeys(), self.ctx, self._seeded["gk"], "Galois keys")
        else:
            self._seeded = {}
            super().__init__(params, _public["steps"], _public["key_id"], False, forced)
            self._pk = _seal_from_bytes(seal.PublicKey(), self.ctx, _public["pk"], "public key")
            self._rlk = _seal_from_bytes(seal.RelinKeys(), self.ctx, _public["rlk"], "relinearisation keys")
            # a key set without rotations ships no Galois part (SEAL refuses to load an empty one)
            self._gk = _seal_from_bytes(seal.GaloisKeys(), self.ctx, _public["gk"], "Galois keys") if "gk" in _public \
                else seal.GaloisKeys()
            self._sk = None
            if _secret is not None:
                self._sk = _seal_from_bytes(seal.SecretKey(), self.ctx, _secret, "secret key")
                self.has_secret_key = True
                # the data owner reusing its key directory uploads its keys as they were written (seeded)
                self._seeded = {k: _public[k] for k in ("rlk", "gk") if k in _public}
        self._encryptor = seal.Encryptor(self.ctx, self._pk)
        if self._sk is not None:
            self._encryptor.set_secret_key(self._sk)
        self._decryptor = seal.Decryptor(self.ctx, self._sk) if self._sk is not None else None
        self._ev = seal.Evaluator(self.ctx)
        self._coder = seal.CKKSEncoder(self.ctx)
        self._build_level_tables()
        if forced:
            self.log.warning("parameters below 128-bit security were forced: %s", params.describe())

    # ---------------------------------------------------------------- levels and scales
    def _build_level_tables(self) -> None:
        """parms_id, prime and exact scale of every data level (see module docstring)."""
        self._pid: dict[int, list] = {}
        self._q: dict[int, int] = {}
        cd = self.ctx.first_context_data()
        while cd is not None:
            lvl = cd.chain_index()
            self._pid[lvl] = cd.parms_id()
            self._q[lvl] = cd.parms().coeff_modulus()[-1].value()
            cd = cd.next_context_data()
        if sorted(self._pid) != list(range(self.max_level + 1)):
            raise RuntimeError(f"unexpected SEAL modulus chain {sorted(self._pid)}")
        self._scale = [float(self.params.scale)]
        for lvl in range(1, self.max_level + 1):
            self._scale.append(math.sqrt(self._scale[-1] * self._q[lvl]))
        self._ones: dict[tuple[int, int], seal.Plaintext] = {}

    def _mul_scale(self, level: int) -> float:
        """Scale of a plaintext multiplier at ``level`` so the product rescales onto s_{level-1}."""
        return self._scale[level - 1] * self._q[level] / self._scale[level]

    def _transparent_error(self, exc: Exception) -> bool:
        # SEAL (built with SEAL_THROW_ON_TRANSPARENT_CIPHERTEXT) throws std::logic_error, which
        # pybind11 turns into RuntimeError("result ciphertext is transparent")
        return super()._transparent_error(exc) or (isinstance(exc, RuntimeError) and "transparent" in str(exc))

    def _fix_scale(self, ct: seal.Ciphertext, level: int) -> seal.Ciphertext:
        # Values are exact; this only removes last-bit float differences in the scale bookkeeping.
        ct.scale = self._scale[level]
        return ct

    # ---------------------------------------------------------------- primitives
    def _encode(self, v: np.ndarray, level: int, scale: float) -> seal.Plaintext:
        pt = seal.Plaintext()
        self._coder.encode(v.tolist(), self._pid[level], scale, pt)
        return pt

    def _encrypt(self, v, level):
        pt = self._encode(v, level, self._scale[level])
        if self._sk is not None:  # the data owner: symmetric, seeded (its bytes are about half: see _Seeded)
            seeded = _seal_to_bytes(self._encryptor.encrypt_symmetric(pt))
            return _seal_from_bytes(_Seeded(seeded), self.ctx, seeded, "ciphertext")
        ct = seal.Ciphertext()
        self._encryptor.encrypt(pt, ct)
        return ct

    def _decrypt(self, ct):
        pt = seal.Plaintext()
        self._decryptor.decrypt(ct.data, pt)
        return np.array(self._coder.decode_double(pt))

    def _encode_add(self, v, level):
        return self._encode(v, level, self._scale[level])

    def _encode_mul(self, v, level):
        return self._encode(v, level, self._mul_scale(level))

    def _add(self, a, b):
        out = seal.Ciphertext()
        self._ev.add(a.data, b.data, out)
        return out

    def _add_plain(self, a, pt):
        out = seal.Ciphertext()
        self._ev.add_plain(a.data, pt, out)
        return out

    def _sub(self, a, b):
        out = seal.Ciphertext()
        self._ev.sub(a.data, b.data, out)
        return out

    def _neg(self, a):
        out = seal.Ciphertext()
        self._ev.negate(a.data, out)
        return out

    def _tensor(self, a, b):
        out = seal.Ciphertext()
        self._ev.multiply(a.data, b.data, out)
        return out

    def _square(self, a):
        out = seal.Ciphertext()
        self._ev.square(a.data, out)
        return out

    def _add_tensor(self, t1, t2):
        self._ev.add_inplace(t1, t2)
        return t1

    def _relinearize(self, t):
        self._ev.relinearize_inplace(t, self._rlk)
        return t

    def _rescale(self, t, level):
        self._ev.rescale_to_next_inplace(t)
        return self._fix_scale(t, level - 1)

    def _mul_plain(self, a, pt):
        out = seal.Ciphertext()
        self._ev.multiply_plain(a.data, pt, out)
        self._ev.rescale_to_next_inplace(out)
        return self._fix_scale(out, a.level - 1)

    def _mul_scalar(self, a, c):
        pt = seal.Plaintext()
        self._coder.encode(c, self._pid[a.level], self._mul_scale(a.level), pt)
        out = seal.Ciphertext()
        self._ev.multiply_plain(a.data, pt, out)
        self._ev.rescale_to_next_inplace(out)
        return self._fix_scale(out, a.level - 1)

    def _rotate(self, a, step):
        out = seal.Ciphertext()
        self._ev.rotate_vector(a.data, step, self._gk, out)
        return out

    def _drop(self, a, level):
        ct = a.data
        if a.level > level + 1:  # free modulus switches down to level+1 (scale unchanged)
            ct = seal.Ciphertext()
            self._ev.mod_switch_to(a.data, self._pid[level + 1], ct)
        # one multiplication by 1 whose scale lands the rescale exactly on s_level
        key = (a.level, level)
        if key not in self._ones:
            pt = seal.Plaintext()
            self._coder.encode(1.0, self._pid[level + 1], self._scale[level] * self._q[level + 1] / self._scale[a.level], pt)
            self._ones[key] = pt
        out = seal.Ciphertext()
        self._ev.multiply_plain(ct, self._ones[key], out)
        self._ev.rescale_to_next_inplace(out)
        return self._fix_scale(out, level)

    # ---------------------------------------------------------------- serialisation
    def _ct_to_bytes(self, ct):
        seeded = getattr(ct.data, "seeded", None)
        return seeded if seeded is not None else _seal_to_bytes(ct.data)

    def _ct_from_bytes(self, b, level):
        if level not in self._pid:
            raise SerializationError(f"ciphertext claims level {level}, parameters have 0..{self.max_level}")
        ct = _seal_from_bytes(seal.Ciphertext(), self.ctx, b, "ciphertext")
        if list(ct.parms_id()) != list(self._pid[level]) or ct.size() != 2:
            raise SerializationError("ciphertext header and SEAL payload disagree (level or size)")
        return self._fix_scale(ct, level)

    def public_bytes(self) -> bytes:
        meta = {"kind": "public_context", "backend": self.backend_name, "params": self.params.to_dict(),
                "key_id": self.key_id, "steps": sorted(self.rotation_steps)}
        if self.forced_insecure:  # the data owner's choice, for the server (ckks.owner_forced_insecure)
            meta["forced_insecure"] = True
        parts = {"pk": self._key_bytes("pk"), "rlk": self._key_bytes("rlk")}
        if self.rotation_steps:
            parts["gk"] = self._key_bytes("gk")
        return pack(meta, parts)

    def _key_bytes(self, part: str) -> bytes:
        """A public key part's serialisation: seeded (about half the bytes) where the data owner made the
        keys (kept as written when it loads them again), SEAL's full form on the server. Source: SEAL 3.6+ ``KeyGenerator::create_*_keys``
        returning ``Serializable<...>``."""
        seeded = self._seeded.get(part)
        return seeded if seeded is not None else _seal_to_bytes({"pk": self._pk, "rlk": self._rlk, "gk": self._gk}[part])

    def secret_key_bytes(self) -> bytes:
        return self._pack_secret_key(None if self._sk is None else _seal_to_bytes(self._sk))

    @classmethod
    def from_bytes(cls, public: bytes, secret: bytes | None = None, *, force_insecure: bool = False,
                   verify: bool = True) -> "SealEngine":
        """``verify=False``: skip the key parts' SHA-256 (the caller checked the file's digest)."""
        meta, parts = unpack(public, expect_kind="public_context", verify=verify)
        params = CKKSParams.from_dict(meta["params"])
        sk = None if secret is None else unpack_secret_key(meta, params, secret)
        return cls(params, (), force_insecure=force_insecure,
                   _public={"key_id": meta["key_id"], "steps": meta["steps"], **parts}, _secret=sk)

    def key_sizes(self) -> dict[str, int]:
        """Serialised size in bytes of each key kind (for benchmarks and upload accounting)."""
        sizes = {"public_key": len(self._key_bytes("pk")), "relin_keys": len(self._key_bytes("rlk")),
                 "galois_keys": len(self._key_bytes("gk")) if self.rotation_steps else 0}
        if self._sk is not None:
            sizes["secret_key"] = len(_seal_to_bytes(self._sk))
        return sizes


def _make_context(params: CKKSParams, insecure: bool) -> seal.SEALContext:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    try:
        parms.set_coeff_modulus(seal.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_bits)))
    except Exception as exc:
        raise InsecureParameters(f"SEAL cannot build the modulus chain {params.describe()}: {exc}") from None
    level = seal.SEC_LEVEL_TYPE.NONE if insecure else seal.SEC_LEVEL_TYPE.TC128
    ctx = seal.SEALContext(parms, True, level)
    if not ctx.parameters_set():  # SEALContext does not raise on its own
        raise InsecureParameters(f"SEAL rejected {params.describe()}: {ctx.parameters_error_message()}")
    return ctx
