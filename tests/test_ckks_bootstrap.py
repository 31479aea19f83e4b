"""Engine.bootstrap: the default refuses clearly; the INSECURE sim emulates it for planning."""
import numpy as np
import pytest

from hetrain import ckks
from hetrain.errors import HetrainUserError


def test_seal_cannot_bootstrap_and_says_what_to_do():
    eng = ckks.create_engine("seal", "n8192")
    assert eng.can_bootstrap is False and eng.bootstrap_level is None
    with pytest.raises(ckks.CKKSError, match="cannot bootstrap: use --refresh client"):
        eng.bootstrap(eng.encrypt([1.0, 2.0]))
    assert issubclass(ckks.CKKSError, HetrainUserError)


def test_sim_without_bootstrap_level_refuses_too():
    eng = ckks.create_engine("sim", "n8192")
    assert not eng.can_bootstrap
    with pytest.raises(ckks.CKKSError, match="cannot bootstrap"):
        eng.bootstrap(eng.encrypt([1.0]))


def test_sim_bootstrap_restores_level_and_values_and_counts():
    eng = ckks.create_engine("sim", "n8192", bootstrap_level=1)
    x = np.array([0.5, -1.5, 2.0])
    ct = eng.square(eng.square(eng.encrypt(x)))
    assert ct.level == 0
    with pytest.raises(ckks.DepthExhausted):
        eng.square(ct)
    b = eng.bootstrap(ct)
    assert b.level == 1
    np.testing.assert_allclose(eng.decrypt(eng.square(b))[:3], x**8)
    assert eng.counters.counts["bootstrap"] == 1


def test_sim_bootstrap_noise_is_larger_than_fresh_noise():
    eng = ckks.create_engine("sim", "n8192", bootstrap_level=2, noise="ckks", seed=0)
    x = np.linspace(-1, 1, eng.slots)
    err = np.abs(eng.decrypt(eng.bootstrap(eng.encrypt(x))) - x).max()
    assert 1e-6 < err < 1e-3  # BOOTSTRAP_NOISE_STD = 1e-5: max over 4096 slots ≈ 4 sigma


def test_sim_bootstrap_level_survives_public_bytes_and_is_validated():
    eng = ckks.create_engine("sim", "n8192", bootstrap_level=2)
    server = ckks.load_engine(eng.public_bytes())
    assert server.can_bootstrap and server.bootstrap_level == 2 and not server.has_secret_key
    assert server.bootstrap(server.encrypt([1.0], level=0)).level == 2
    with pytest.raises(ValueError, match="bootstrap_level"):
        ckks.create_engine("sim", "n8192", bootstrap_level=3)
