"""hetrain.ckks.pow2: the one power-of-two helper, checked against a brute-force definition."""
import pytest

from hetrain.ckks.pow2 import is_pow2, log2_pow2, next_pow2

POWERS = {1 << k for k in range(70)}


@pytest.mark.parametrize("n", [-8, -1, 0, 1, 2, 3, 4, 5, 7, 8, 9, 1023, 1024, 1025, 2**62 - 1, 2**62, 2**62 + 1])
def test_against_the_definition(n):
    assert is_pow2(n) == (n in POWERS)
    assert next_pow2(n) == min(p for p in POWERS if p >= n)
    if n in POWERS:
        assert 2 ** log2_pow2(n) == n


def test_exact_beyond_float_precision():
    # math.log2 rounds 2**60 + 1 to 60.0; the integer helper does not
    assert next_pow2(2**60 + 1) == 2**61


@pytest.mark.parametrize("n", [0, 3, 6, 1000, -4])
def test_log2_refuses_a_non_power(n):
    with pytest.raises(ValueError, match=f"{n} is not a power of two"):
        log2_pow2(n)
