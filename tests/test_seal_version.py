"""TenSEAL 0.3.18 (Python 3.11) and 0.3.16 (Python 3.10) bundle different SEAL versions, and SEAL
loads only its own: keys or ciphertexts from the other one are refused with a message naming both."""
from __future__ import annotations

import numpy as np
import pytest

from hetrain import ckks
from hetrain.ckks.container import pack, unpack
from hetrain.ckks.errors import SerializationError

seal_backend = pytest.importorskip("hetrain.ckks.seal_backend")


def _as_if_other_seal(blob: bytes, kind: str) -> bytes:
    """The hetrain container ``blob`` with each SEAL part's header claiming another minor version."""
    meta, parts = unpack(blob, expect_kind=kind)
    meta.pop("parts", None)
    for name, b in parts.items():
        assert b[:2] == b"\x5e\xa1", name
        parts[name] = b[:4] + bytes([(b[4] + 1) % 256]) + b[5:]
    return pack(meta, parts)


def test_seal_version_is_read_from_the_library():
    assert seal_backend.seal_version().startswith("4.")


def test_keys_and_ciphertexts_from_another_seal_version_name_both_versions():
    eng = ckks.create_engine("seal", "n8192", rotations=[1])
    ours = seal_backend.seal_version()
    with pytest.raises(SerializationError, match=rf"this installation has SEAL {ours} .*same TenSEAL"):
        ckks.load_engine(_as_if_other_seal(eng.public_bytes(), "public_context"))
    blob = eng.serialize(eng.encrypt(np.arange(4) / 4.0))
    with pytest.raises(SerializationError, match=r"ciphertext was written by SEAL 4\.\d+, this installation"):
        eng.deserialize(_as_if_other_seal(blob, "ciphertext"))
    assert eng.decrypt(eng.deserialize(blob))[:4] == pytest.approx([0, 0.25, 0.5, 0.75], abs=1e-4)
