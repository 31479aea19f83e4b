"""Keys, parameters and serialisation: the security rules for the ckks layer (128-bit parameters only unless forced; the secret key never in a public serialisation)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from hetrain import ckks
from hetrain.ckks.params import CKKSParams

BACKENDS = ["seal", "sim"]


@pytest.fixture(scope="module", params=BACKENDS)
def client(request):
    return ckks.create_engine(request.param, "n8192", rotations=[1, 4])


@pytest.fixture
def x(client, rng):
    return rng.uniform(-1, 1, client.slots)


def test_presets_are_128_bit_and_have_the_documented_levels():
    assert {k: p.levels for k, p in ckks.PRESETS.items()} == {"n8192": 2, "n16384": 7, "n16384-deep": 9, "n32768": 19}
    assert all(p.is_128_bit_secure() for p in ckks.PRESETS.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_insecure_parameters_are_refused_unless_forced(backend, caplog):
    weak = CKKSParams(8192, (60, 60, 60, 60), 40, "weak")  # 240 bits > 218 allowed at N=8192
    with pytest.raises(ckks.InsecureParameters, match="128-bit"):
        ckks.create_engine(backend, weak)
    with caplog.at_level(logging.INFO, logger="hetrain.ckks"):
        eng = ckks.create_engine(backend, weak, force_insecure=True)
        eng.log.info("hello")
    assert eng.forced_insecure
    assert caplog.records and all("INSECURE" in r.getMessage() for r in caplog.records)


def test_sim_backend_says_it_is_insecure(caplog):
    with caplog.at_level(logging.INFO, logger="hetrain.ckks"):
        eng = ckks.create_engine("sim", "n8192")
    assert "INSECURE" in eng.backend_name and not eng.secure
    assert "INSECURE" in type(eng).__doc__ and "INSECURE" in eng.describe()
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


def test_ciphertext_round_trip_through_bytes_and_files(client, x, tmp_path):
    ct = client.encrypt(x) * 0.5
    back = client.deserialize(client.serialize(ct))
    assert back.level == ct.level
    np.testing.assert_allclose(client.decrypt(back), client.decrypt(ct), atol=1e-9)
    client.save_ciphertexts(tmp_path / "cts", [ct, client.encrypt(x)])
    loaded = client.load_ciphertexts(tmp_path / "cts")
    assert [c.level for c in loaded] == [ct.level, client.max_level]
    np.testing.assert_allclose(client.decrypt(loaded[1]), x, atol=1e-6)


def test_public_context_computes_but_cannot_decrypt(client, x):
    public = client.public_bytes()
    server = ckks.load_engine(public)
    assert not server.has_secret_key
    ct = server.deserialize(client.serialize(client.encrypt(x)))
    out = server.rotate(ct * ct, 4)  # relinearisation and Galois keys travelled
    with pytest.raises(ckks.SecretKeyUnavailable):
        server.decrypt(out)
    with pytest.raises(ckks.SecretKeyUnavailable):
        server.secret_key_bytes()
    np.testing.assert_allclose(client.decrypt(client.deserialize(server.serialize(out))), np.roll(x * x, -4), atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_public_context_without_rotation_keys_loads(backend, rng):
    client = ckks.create_engine(backend, "n8192")
    server = ckks.load_engine(client.public_bytes())
    x = rng.uniform(-1, 1, client.slots)
    out = server.deserialize(client.serialize(client.encrypt(x))) * 2.0
    np.testing.assert_allclose(client.decrypt(client.deserialize(server.serialize(out))), 2 * x, atol=1e-5)
    with pytest.raises(ckks.MissingRotationKey):
        server.rotate(out, 1)


def test_public_bytes_hold_no_secret_key(client):
    if not client.secure:
        pytest.skip("the simulator has no key material")
    sk = client.secret_key_bytes()
    from hetrain.ckks.container import unpack
    _, parts = unpack(sk, "secret_key")
    assert parts["sk"] not in client.public_bytes()


def test_a_key_made_by_the_server_decrypts_garbage(x):
    """Even with its own secret key on the same parameters, the server reads nothing."""
    client = ckks.create_engine("seal", "n8192")
    intruder = ckks.create_engine("seal", "n8192")
    ct = client.encrypt(x)
    stolen = intruder.deserialize(client.serialize(ct).replace(client.key_id.encode(), intruder.key_id.encode()))
    garbage = intruder.decrypt(stolen)
    assert np.max(np.abs(garbage - x)) > 1e3


def test_secret_key_restores_decryption(client, x):
    full = ckks.load_engine(client.public_bytes(), client.secret_key_bytes())
    np.testing.assert_allclose(full.decrypt(full.deserialize(client.serialize(client.encrypt(x)))), x, atol=1e-6)


def test_ciphertext_of_another_key_is_refused(client, x):
    other = ckks.create_engine(client.backend_name.split("-")[0], "n8192")
    with pytest.raises(ckks.KeyMismatch, match="another key"):
        client.deserialize(other.serialize(other.encrypt(x)))
    with pytest.raises(ckks.KeyMismatch):
        ckks.load_engine(client.public_bytes(), other.secret_key_bytes())
    with pytest.raises(ckks.KeyMismatch):
        client.add(client.encrypt(x), other.encrypt(x))


def test_ciphertext_of_other_parameters_is_refused(client, x):
    other = ckks.create_engine(client.backend_name.split("-")[0], "n16384")
    with pytest.raises(ckks.KeyMismatch, match="parameters"):
        client.deserialize(other.serialize(other.encrypt(x)))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_corrupted_bytes_are_a_clear_error(client, x, damage):
    b = bytearray(client.serialize(client.encrypt(x)))
    if damage == "flip":
        b[len(b) // 2] ^= 0xFF
    elif damage == "truncate":
        b = b[: len(b) - 100]
    elif damage == "garbage":
        b = bytearray(b"not a ciphertext at all")
    else:
        b = bytearray()
    with pytest.raises(ckks.SerializationError):
        client.deserialize(bytes(b))
    with pytest.raises(ckks.SerializationError):
        ckks.load_engine(bytes(b))


def test_unknown_backend_and_preset():
    with pytest.raises(ckks.BackendUnavailable, match="unknown backend 'heaan'; choose one of seal, sim"):
        ckks.create_engine("heaan", "n8192")
    with pytest.raises(ValueError, match="preset"):
        ckks.create_engine("sim", "n4096")


def test_sim_noise_has_ckks_size(rng):
    eng = ckks.create_engine("sim", "n8192", noise="ckks", seed=0)
    x = rng.uniform(-1, 1, eng.slots)
    err = eng.decrypt(eng.encrypt(x)) - x
    assert 0 < np.std(err) < 1e-6
    exact = ckks.create_engine("sim", "n8192")
    assert np.array_equal(exact.decrypt(exact.encrypt(x)), x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_secret_key_of_other_parameters_is_refused(backend):
    """The ownership check is shared by every backend: key id AND parameters must match."""
    a = ckks.create_engine(backend, "n8192")
    b = ckks.create_engine(backend, "n16384")
    forged = a.secret_key_bytes().replace(a.key_id.encode(), b.key_id.encode())
    with pytest.raises(ckks.KeyMismatch, match="does not belong"):
        ckks.load_engine(b.public_bytes(), forged)
