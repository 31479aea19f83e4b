"""The optional desilofhe backend (skipped where desilofhe is not installed, e.g. in CI).

Small parameters only (desilo-l3: N=2^14, 3 levels); bootstrapping at N=2^16 takes minutes and
≈10 GB, so it is measured in bench/bootstrap.py, not here. Tolerances: fresh CKKS error at scale
2^40 is ~1e-9 relative, each rescale adds ~1e-8 on values in [-1, 1]; 1e-6 leaves two orders of margin.
"""
import numpy as np
import pytest

from hetrain import ckks

TOL = 1e-6


def test_missing_desilofhe_gives_install_hint(monkeypatch):
    from hetrain.ckks import desilo_backend
    monkeypatch.setattr(desilo_backend, "_d", None)
    with pytest.raises(ckks.CKKSError, match=r"pip install 'hetrain\[desilo\]'"):
        ckks.create_engine("desilo", "desilo-l2")


pytest.importorskip("desilofhe", reason="desilofhe (optional, non-commercial licence) is not installed")


@pytest.fixture(scope="module")
def eng():
    return ckks.create_engine("desilo", "desilo-l3", rotations=[1, 4, -2], threads=1)


@pytest.fixture(scope="module")
def xy(eng):
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, eng.slots), rng.uniform(-1, 1, eng.slots)


def test_arithmetic_matches_numpy(eng, xy):
    x, y = xy
    a, b = eng.encrypt(x), eng.encrypt(y)
    assert a.level == eng.max_level == 3
    cases = {"add": (a + b, x + y), "sub": (a - b, x - y), "neg": (-a, -x), "mul": (a * b, x * y),
             "mul_sum": (eng.mul_sum([(a, b), (a, a)]), x * y + x * x), "square": (eng.square(a), x * x),
             "plain": (a * y, x * y), "scalar": (a * 0.3, 0.3 * x), "add_plain": (eng.add(a, y), x + y),
             "mixed levels": ((a * b) * a, x * y * x)}
    for name, (ct, ref) in cases.items():
        assert np.abs(eng.decrypt(ct) - ref).max() < TOL, name
    assert (a * b).level == 2 and ((a * b) * a).level == 1 and (a + b).level == 3


def test_rotation_is_left_like_the_engine_contract(eng, xy):
    x, _ = xy
    a = eng.encrypt(x)
    np.testing.assert_allclose(eng.decrypt(eng.rotate(a, 1)), np.roll(x, -1), atol=TOL)
    np.testing.assert_allclose(eng.decrypt(eng.rotate(a, -2)), np.roll(x, 2), atol=TOL)
    with pytest.raises(ckks.MissingRotationKey):
        eng.rotate(a, 3)


def test_levels_encrypt_drop_and_depth_exhausted(eng, xy):
    x, _ = xy
    c = eng.encrypt(x, level=1)
    assert c.level == 1 and np.abs(eng.decrypt(c) - x).max() < TOL
    d = eng.drop_to_level(eng.encrypt(x), 1)
    assert d.level == 1 and np.abs(eng.decrypt(d) - x).max() < TOL
    with pytest.raises(ckks.DepthExhausted):
        eng.square(eng.square(d))


def test_server_side_engine_computes_but_cannot_decrypt_or_bootstrap(eng, xy):
    x, y = xy
    server = ckks.load_engine(eng.public_bytes())
    assert not server.has_secret_key and server.backend_name == "desilo"
    ct = server.deserialize(eng.serialize(eng.encrypt(x)))
    r = server.rotate(server.mul(ct, y), 4)
    with pytest.raises(ckks.SecretKeyUnavailable):
        server.decrypt(r)
    np.testing.assert_allclose(eng.decrypt(eng.deserialize(server.serialize(r))), np.roll(x * y, -4), atol=TOL)
    assert not server.can_bootstrap
    with pytest.raises(ckks.CKKSError, match="cannot bootstrap"):
        server.bootstrap(r)


def test_secret_key_round_trip_and_foreign_ciphertexts(eng, xy):
    x, _ = xy
    again = ckks.load_engine(eng.public_bytes(), eng.secret_key_bytes())
    assert np.abs(again.decrypt(again.deserialize(eng.serialize(eng.encrypt(x)))) - x).max() < TOL
    other = ckks.create_engine("desilo", "desilo-l3", threads=1)
    with pytest.raises(ckks.KeyMismatch):
        other.deserialize(eng.serialize(eng.encrypt(x)))
    with pytest.raises(ckks.SerializationError):
        eng.deserialize(eng.serialize(eng.encrypt(x))[:-100])


def test_presets(eng):
    assert ckks.create_engine("desilo", "n8192", threads=1).max_level == 2  # SEAL preset -> same levels
    with pytest.raises(ValueError, match="unknown desilo parameter set"):
        ckks.create_engine("desilo", "desilo-huge")
    assert "galois_keys" in eng.key_sizes() and eng.secure


def test_minibatch_training_with_client_refresh_matches_twin(tmp_path):
    from sklearn.datasets import load_iris

    from hetrain.protocol import fit
    from hetrain.protocol.keys import KeyDir
    X, y = load_iris(return_X_y=True)
    cfg = {"epochs": 1, "batch_size": 64, "learning_rate": 0.5, "patience": 0}  # 3 steps, 2 refreshes
    KeyDir.create(tmp_path / "keys", "desilo", "desilo-l4", threads=1)  # the engine options go with the keys
    # all 150 rows train (no validation split), cfg as given (no planner)
    r = fit(X, y, "mlr", cfg, backend="desilo", refresh="client", keys=tmp_path / "keys", progress=False,
            plan=False, validation_fraction=0.0)
    assert r.stats["steps"] == 3 and r.stats["refreshes"] == 2
    assert r.stats["twin_max_abs_diff"] < 1e-4  # same tolerance argument as the SEAL test (test_minibatch)
