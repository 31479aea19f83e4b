"""`hetrain roundtrip` (cli/roundtrip.py): the README's first look at the encryption layer."""
from __future__ import annotations

import re

import pytest

from hetrain.cli.main import main


def _error(out: str) -> float:
    return float(re.search(r"^max_abs_error=(\S+)$", out, re.M).group(1))


def test_roundtrip_on_seal_has_ckks_sized_error(capsys):
    assert main(["roundtrip", "--preset", "n8192"]) == 0
    out = capsys.readouterr().out
    assert "engine: seal N=8192" in out and "levels used: 2 of 2" in out
    # real CKKS: an error, of the size a fresh encryption and two rescales make at scale 2^40
    assert 0 < _error(out) < 1e-4
    assert re.search(r"\brotate=4\b", out) and "WARNING" not in out


def test_roundtrip_on_sim_is_exact_and_says_insecure(capsys):
    assert main(["roundtrip", "--preset", "n8192", "--backend", "sim"]) == 0
    out = capsys.readouterr().out
    # no CKKS error: only float64 rounding (the sum runs in another order than NumPy's)
    assert out.startswith("WARNING: sim backend: nothing is encrypted") and _error(out) < 1e-12


def test_roundtrip_refuses_an_unknown_preset(capsys):
    with pytest.raises(SystemExit) as info:
        main(["roundtrip", "--preset", "n4096"])
    assert info.value.code == 2
    assert "argument --preset: invalid choice: 'n4096'" in capsys.readouterr().err
