"""Powers of two: slot counts, rotate-and-sum widths and packing blocks are all powers of two.

The one implementation of these integer helpers in hetrain (ckks, circuits and protocol use it)."""
from __future__ import annotations


def is_pow2(n: int) -> bool:
    """True when the integer ``n`` is 1, 2, 4, 8, ... (False for 0 and negative numbers)."""
    n = int(n)
    return n >= 1 and n & (n - 1) == 0


def next_pow2(n: int) -> int:
    """The smallest power of two ≥ ``n`` (1 for every ``n`` ≤ 1). Exact for any size of integer."""
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def log2_pow2(n: int) -> int:
    """k with 2^k = ``n``, computed exactly on integers.

    Raises ValueError when ``n`` is not a power of two (a caller's bug: layouts make powers of two)."""
    if not is_pow2(n):
        raise ValueError(f"{n} is not a power of two")
    return int(n).bit_length() - 1
