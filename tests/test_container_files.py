"""Container parts streamed from and to files (ckks/container.py): what lets OpenFHE's keys of gigabytes
reach the job bundle and the server without being held as bytes (tests/test_openfhe_files.py uses them
with OpenFHE, Python 3.10); and ckks.load_engine_file for the other backends."""
import numpy as np
import pytest

from hetrain import ckks
from hetrain.ckks import container


def test_a_part_given_as_a_file_is_copied_byte_for_byte_and_spilled_back(tmp_path):
    big = np.random.default_rng(0).bytes(3 << 20)  # 3 MiB: several chunks
    (tmp_path / "big.part").write_bytes(big)
    meta = {"kind": "public_context", "backend": "x"}
    size, sha = container.write_container_file(tmp_path / "c.bin", meta, [("a", b"small"), ("gk", tmp_path / "big.part")])
    data = (tmp_path / "c.bin").read_bytes()
    assert data == container.pack(meta, {"a": b"small", "gk": big}) and size == len(data)
    assert sha == container.file_sha256(tmp_path / "c.bin")
    assert container.read_header_file(tmp_path / "c.bin", "public_context")["backend"] == "x"
    spill = tmp_path / "spill"
    spill.mkdir()
    header, parts = container.read_container_file(tmp_path / "c.bin", "public_context", ["gk"], spill)
    assert parts["a"] == b"small" and open(parts["gk"], "rb").read() == big
    _, parts = container.read_container_file(tmp_path / "c.bin", None, [], spill, skip=["gk"])
    assert parts == {"a": b"small"}


def test_a_corrupted_spilled_part_is_refused_and_its_file_removed(tmp_path):
    (tmp_path / "big.part").write_bytes(b"k" * 5000)
    container.write_container_file(tmp_path / "c.bin", {"kind": "public_context"}, [("gk", tmp_path / "big.part")])
    data = bytearray((tmp_path / "c.bin").read_bytes())
    data[-1] ^= 1
    (tmp_path / "c.bin").write_bytes(bytes(data))
    spill = tmp_path / "spill"
    spill.mkdir()
    with pytest.raises(ckks.SerializationError, match="part 'gk' is corrupted"):
        container.read_container_file(tmp_path / "c.bin", "public_context", ["gk"], spill)
    with pytest.raises(ckks.SerializationError, match="expected a 'ciphertexts' object"):
        container.read_container_file(tmp_path / "c.bin", "ciphertexts", ["gk"], spill)
    assert list(spill.iterdir()) == []


@pytest.mark.parametrize("backend, preset", [("sim", "n8192"), ("seal", "n8192")])
def test_load_engine_file_reads_other_backends_contexts(tmp_path, backend, preset):
    eng = ckks.create_engine(backend, preset, [1])
    (tmp_path / "public.bin").write_bytes(eng.public_bytes())
    server = ckks.load_engine_file(tmp_path / "public.bin")
    assert server.key_id == eng.key_id and not server.has_secret_key
    x = np.linspace(-1, 1, eng.slots)
    out = eng.deserialize(server.serialize(server.rotate(server.deserialize(eng.serialize(eng.encrypt(x))), 1)))
    assert np.abs(eng.decrypt(out) - np.roll(x, -1)).max() < 1e-4
