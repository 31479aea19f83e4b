"""CKKS parameter sets: named presets at 128-bit security, or a custom modulus chain.

The limits below are the maximum total coefficient-modulus bits for 128-bit classical security
from the Homomorphic Encryption Standard (the same table as SEAL's CoeffModulus.MaxBitCount).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from hetrain._format import plain

from .errors import InsecureParameters

# poly_modulus_degree -> max total modulus bits at 128-bit security (HE standard, ternary secret)
MAX_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@dataclasses.dataclass(frozen=True)
class CKKSParams:
    """A CKKS parameter set.

    ``coeff_bits`` is the modulus chain: first the key-level-free base prime (it holds the result
    at level 0), then one prime per multiplicative level, then the special prime used by key
    switching. ``levels`` is therefore ``len(coeff_bits) - 2``.
    """

    poly_modulus_degree: int
    coeff_bits: tuple[int, ...]
    scale_bits: int = 40
    name: str = "custom"
    #: sparse packing: the number of slots when fewer than N/2 (0: full packing). Only the openfhe
    #: backend packs sparsely; serialised (and fingerprinted) only when set, so full-packing
    #: parameter sets keep their fingerprints.
    packing: int = 0

    @property
    def slots(self) -> int:
        """Number of real values one ciphertext holds: N/2, or ``packing`` when sparse."""
        return self.packing or self.poly_modulus_degree // 2

    @property
    def levels(self) -> int:
        """Multiplicative levels of a fresh ciphertext (rescales it can undergo): ``len(coeff_bits) - 2``."""
        return len(self.coeff_bits) - 2

    @property
    def total_bits(self) -> int:
        """Total coefficient-modulus bits (special prime included): what the 128-bit security limit bounds."""
        return sum(self.coeff_bits)

    @property
    def scale(self) -> float:
        """The encoding scale Δ = 2^scale_bits (a float)."""
        return float(2**self.scale_bits)

    def is_128_bit_secure(self) -> bool:
        """Whether ``total_bits`` is within the Homomorphic Encryption Standard's limit for ring N (``MAX_BITS_128``,
        as SEAL's CoeffModulus.MaxBitCount); False for an N not in that table.
        """
        limit = MAX_BITS_128.get(self.poly_modulus_degree)
        return limit is not None and self.total_bits <= limit

    def check_security(self, force_insecure: bool = False) -> None:
        """Refuse parameters below 128-bit security unless ``force_insecure`` is set.
        Raises InsecureParameters naming the limit (bits) and the presets otherwise.
        """
        if self.is_128_bit_secure() or force_insecure:
            return
        limit = MAX_BITS_128.get(self.poly_modulus_degree, "unsupported N")
        raise InsecureParameters(
            f"parameters {self.describe()} have {self.total_bits} modulus bits; 128-bit security at "
            f"N={self.poly_modulus_degree} allows at most {limit}. Choose a preset "
            f"({', '.join(PRESETS)}) or pass force_insecure=True (command line: --force-insecure; every log line "
            "will then say INSECURE)."
        )

    def describe(self) -> str:
        """One line: ``N=... chain=[...] scale=2^...`` (and ``slots=`` when sparse)."""
        sparse = f" slots={self.packing}" if self.packing else ""
        return f"N={self.poly_modulus_degree} chain={plain(list(self.coeff_bits))} scale=2^{self.scale_bits}{sparse}"

    def to_dict(self) -> dict:
        """The parameters as a JSON-ready dict (``packing`` only when sparse); inverse of ``from_dict``."""
        d = {"poly_modulus_degree": self.poly_modulus_degree, "coeff_bits": list(self.coeff_bits),
             "scale_bits": self.scale_bits, "name": self.name}
        if self.packing:
            d["packing"] = self.packing
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CKKSParams":
        """Inverse of ``to_dict``. Raises KeyError for a missing field, ValueError or TypeError for a
        non-integer one."""
        return cls(int(d["poly_modulus_degree"]), tuple(int(b) for b in d["coeff_bits"]),
                   int(d["scale_bits"]), str(d.get("name", "custom")), int(d.get("packing", 0)))

    def fingerprint(self) -> str:
        """Stable id of the parameters (not of the keys), stored with every serialised object."""
        blob = json.dumps({k: v for k, v in self.to_dict().items() if k != "name"}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _chain(edge: int, mid: int, levels: int) -> tuple[int, ...]:
    return (edge,) + (mid,) * levels + (edge,)


PRESETS: dict[str, CKKSParams] = {
    # small: fast tests, 2 levels
    "n8192": CKKSParams(8192, _chain(60, 40, 2), 40, "n8192"),
    # 7 levels: one logistic-regression iteration, cheap operations
    "n16384": CKKSParams(16384, _chain(60, 40, 7), 40, "n16384"),
    # 9 levels at scale 2^35 within N=16384's 438 bits (425 used): ~10x cheaper operations than N=32768 for
    # circuits of moderate depth; measured error ~1e-6 after a multiply and a rotation (60-bit special
    # prime keeps key-switching noise low).
    "n16384-deep": CKKSParams(16384, (50,) + (35,) * 9 + (60,), 35, "n16384-deep"),
    # SEAL's largest ring: 19 levels
    "n32768": CKKSParams(32768, _chain(60, 40, 19), 40, "n32768"),
}

# INSECURE rings for fast tests: below 128-bit security, so refused unless forced (``force_insecure``,
# CLI ``--force-insecure``); never chosen by --preset auto (the planners search PRESETS only).
TEST_PRESETS: dict[str, CKKSParams] = {
    # N=4096 with n16384's chain (400 bits, 109 allowed): 7 levels, 2,048 slots, operations ~4x cheaper
    "n4096-test": CKKSParams(4096, _chain(60, 40, 7), 40, "n4096-test"),
}


def get_params(preset: str | CKKSParams) -> CKKSParams:
    """A preset by name (the INSECURE test presets and the openfhe backend's too), or the CKKSParams passed in.
    Raises ValueError for an unknown preset name (the message lists the presets).
    """
    if isinstance(preset, CKKSParams):
        return preset
    if preset in PRESETS:
        return PRESETS[preset]
    if preset in TEST_PRESETS:
        return TEST_PRESETS[preset]
    from .openfhe_backend import PRESETS as OPENFHE_PRESETS  # plain data; openfhe itself stays optional
    if preset in OPENFHE_PRESETS:
        return OPENFHE_PRESETS[preset].params()
    raise ValueError(f"unknown CKKS preset {preset!r}; choose one of {', '.join(PRESETS)} "
                     f"(openfhe backend: {', '.join(OPENFHE_PRESETS)}; INSECURE, with --force-insecure: "
                     f"{', '.join(TEST_PRESETS)})")


def smallest_preset_with_levels(levels: int) -> str | None:
    """Name of the smallest preset that offers at least ``levels`` levels (None if none does)."""
    for name, p in sorted(PRESETS.items(), key=lambda kv: kv[1].poly_modulus_degree):
        if p.levels >= levels:
            return name
    return None
