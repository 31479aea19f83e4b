"""Ciphertext maps written and read one ciphertext at a time (job inputs weigh gigabytes)."""
from __future__ import annotations

import numpy as np
import pytest

from hetrain import ckks
from hetrain.protocol import files
from hetrain.protocol.errors import BundleError


@pytest.fixture(scope="module", params=["seal", "sim"])
def eng(request):
    return ckks.create_engine(request.param, "n8192")


def test_streamed_map_round_trip_equals_the_in_memory_format(eng, tmp_path, rng):
    xs = [rng.uniform(-1, 1, eng.slots) for _ in range(3)]
    named = {"X": [eng.encrypt(x) for x in xs[:2]], "W": [eng.encrypt(xs[2], level=1)]}
    size, sha = files.write_ciphertext_map(tmp_path / "m.bin", eng, named)
    data = (tmp_path / "m.bin").read_bytes()
    assert size == len(data) and sha == files._sha(data)
    back = files.read_ciphertext_map(tmp_path / "m.bin", eng, "inputs")
    assert {k: len(v) for k, v in back.items()} == {"X": 2, "W": 1} and back["W"][0].level == 1
    np.testing.assert_allclose(eng.decrypt(back["X"][1]), xs[1], atol=1e-5)
    same = files.unpack_ciphertexts(eng, data, "inputs")  # the bytes reader reads the same file
    np.testing.assert_allclose(eng.decrypt(same["W"][0]), xs[2], atol=1e-5)
    assert not list(tmp_path.glob("*.tmp*"))  # spool and temporary files are gone


def test_damaged_or_foreign_maps_are_clear_errors(eng, tmp_path, rng):
    path = tmp_path / "m.bin"
    files.write_ciphertext_map(path, eng, {"X": [eng.encrypt(rng.uniform(-1, 1, 8)) for _ in range(2)]})
    good = path.read_bytes()
    path.write_bytes(good[:-10])
    with pytest.raises(BundleError, match="truncated"):
        files.read_ciphertext_map(path, eng, "inputs")
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(BundleError, match="corrupted"):
        files.read_ciphertext_map(path, eng, "inputs")
    path.write_bytes(good)
    other = ckks.create_engine(eng.backend_name.split("-")[0], "n8192")
    with pytest.raises(BundleError, match="another job"):
        files.read_ciphertext_map(path, other, "inputs")
    with pytest.raises(BundleError, match="not found"):
        files.read_ciphertext_map(tmp_path / "missing.bin", eng, "inputs")
