"""The hot spots of issue 16: job loading in one hashing pass without temporary files, and smaller
uploads (seeded symmetric encryption by the data owner, inputs at the lowest level they are used)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from hetrain import ckks
from hetrain.ckks import seal_backend
from hetrain.ckks.container import read_header
from hetrain.models.mlr import MLRTrainer
from hetrain.protocol import files
from hetrain.protocol.errors import BundleError


@pytest.fixture(scope="module")
def seal_job(tmp_path_factory):
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(128, 60)), np.eye(3)[rng.integers(0, 3, 128)]
    tr = MLRTrainer(iterations=1)
    eng = ckks.create_engine("seal", "n8192", rotations=tr.plan(128, 60, 3, "n8192").rotation_steps)
    inputs, job = tr.client_encrypt(eng, X, Y)
    job["data_shape"] = [128, 60, 3]
    d = tmp_path_factory.mktemp("job")
    files.write_job(d, eng, inputs, job)
    return d, eng, inputs


def test_data_owner_ciphertexts_are_seeded_half_size_and_load_anywhere():
    owner = ckks.create_engine("seal", "n8192", rotations=[1])
    server = ckks.load_engine(owner.public_bytes())
    x = np.random.default_rng(0).uniform(-1, 1, owner.slots)
    seeded = owner.serialize(owner.encrypt(x))
    full = server.serialize(server.encrypt(x))  # public-key encryption: no seed
    assert len(seeded) < 0.55 * len(full)
    ct = server.deserialize(seeded)
    out = server.rotate(server.mul(ct, ct), 1)
    np.testing.assert_allclose(owner.decrypt(owner.deserialize(server.serialize(out))), np.roll(x * x, -1), atol=1e-5)


def test_an_operation_result_is_serialised_in_full_not_as_its_operands_seed():
    owner = ckks.create_engine("seal", "n8192")
    a = owner.encrypt(np.full(owner.slots, 0.5))
    b = owner.add(a, a)
    np.testing.assert_allclose(owner.decrypt(owner.deserialize(owner.serialize(b))), 1.0, atol=1e-6)


def test_server_loads_the_job_in_one_pass_with_the_same_ciphertexts(seal_job):
    d, eng, inputs = seal_job
    engine, loaded = files.load_job_public(d)
    assert not engine.has_secret_key and engine.key_id == eng.key_id
    assert {k: len(v) for k, v in loaded.items()} == {k: len(v) for k, v in inputs.items()}
    for name in inputs:
        for a, b in zip(inputs[name], loaded[name]):
            assert a.level == b.level
            np.testing.assert_array_equal(eng.decrypt(a), eng.decrypt(b))


def test_one_pass_reader_refuses_a_file_whose_digest_differs(seal_job):
    d, eng, _ = seal_job
    manifest = files.read_manifest(d)
    with pytest.raises(BundleError, match="does not match the manifest"):
        files.read_ciphertext_map(d / files.INPUTS, eng, "encrypted inputs", sha256="0" * 64)
    good = files.read_ciphertext_map(d / files.INPUTS, eng, "encrypted inputs", sha256=manifest["sha256"][files.INPUTS])
    assert sum(len(v) for v in good.values()) > 0


def test_one_pass_reader_refuses_a_flipped_byte_in_a_ciphertext(seal_job, tmp_path):
    d, eng, _ = seal_job
    data = bytearray((d / files.INPUTS).read_bytes())
    data[-100] ^= 0x01  # inside the last ciphertext's SEAL payload: the structure still parses
    bad = tmp_path / "inputs.bin"
    bad.write_bytes(bytes(data))
    digest = files.read_manifest(d)["sha256"][files.INPUTS]
    with pytest.raises(BundleError, match="encrypted inputs|does not match the manifest"):
        files.read_ciphertext_map(bad, eng, "encrypted inputs", sha256=digest)
    assert hashlib.sha256(bytes(data)).hexdigest() != digest


def test_deferred_inputs_need_a_checksum_in_the_manifest(seal_job, tmp_path):
    import json
    import shutil

    d, _, _ = seal_job
    copy = tmp_path / "job"
    shutil.copytree(d, copy)
    m = json.loads((copy / files.MANIFEST).read_text())
    del m["sha256"][files.INPUTS]
    (copy / files.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="names no checksum for inputs.bin"):
        files.read_job_files(copy, defer_inputs=True)


def test_seal_objects_pass_through_an_anonymous_memory_file(monkeypatch):
    if seal_backend._memfd() is None:
        pytest.skip("no memfd_create on this system")
    made = []
    monkeypatch.setattr(seal_backend.tempfile, "mkstemp", lambda *a, **k: made.append(a) or (_ for _ in ()).throw(
        AssertionError("a temporary file was made")))
    owner = ckks.create_engine("seal", "n8192", rotations=[1])
    server = ckks.load_engine(owner.public_bytes(), verify=False)
    ct = server.deserialize(owner.serialize(owner.encrypt([1.0, 2.0])))
    assert server.serialize(ct) and not made


def test_load_engine_reads_only_the_header_to_pick_the_backend():
    owner = ckks.create_engine("sim", "n8192")
    public = owner.public_bytes()
    assert read_header(public, expect_kind="public_context")["backend"] == "sim-INSECURE"
    with pytest.raises(ckks.SerializationError, match="expected bytes, got str"):
        read_header("not bytes")
    assert ckks.load_engine(public).key_id == owner.key_id
