"""Transparent results: products by zero plaintexts and exact cancellations give encryptions of 0.

SEAL refuses to produce a *transparent* ciphertext (mask polynomial 0) and raises "result
ciphertext is transparent"; the engine turns every such case into a fresh encryption of 0 at the
result's level and scale, the same way on every backend (the sim flags the same conditions).
"""
import numpy as np
import pytest
import tenseal.sealapi as seal

from hetrain import ckks
from hetrain.models.mlr import MLRTrainer


@pytest.fixture(scope="module", params=["seal", "sim"])
def eng(request):
    return ckks.create_engine(request.param, "n8192", rotations=[1])


def _zero_ok(eng, ct, level):
    """ct decrypts to 0 at ``level`` with the level's scale, and further operations work on it."""
    assert ct.level == level
    assert np.abs(eng.decrypt(ct)).max() < 1e-5
    if eng.backend_name == "seal":
        assert ct.data.scale == eng._scale[level] and not ct.data.is_transparent()
    x = np.linspace(-1, 1, eng.slots)
    other = eng.encrypt(x, level=level)
    for out, want in [(eng.add(ct, other), x), (eng.sub(other, ct), x), (eng.rotate(ct, 1), 0 * x),
                      (eng.add(ct, 2.0), 2 + 0 * x)]:
        assert out.level == level and np.abs(eng.decrypt(out) - want).max() < 1e-5
    if level >= 1:
        out = eng.mul(ct, other)
        assert out.level == level - 1 and np.abs(eng.decrypt(out)).max() < 1e-5


@pytest.mark.parametrize("how", ["zeros", "plainvector", "tiny-vector", "scalar0", "scalar1e-30", "operator"])
def test_multiplying_by_a_zero_plaintext_gives_an_encryption_of_zero(eng, how):
    a = eng.encrypt(np.arange(16.0))
    top = eng.max_level
    before = eng.counters.snapshot().get("zero_result", 0)
    ct = {"zeros": lambda: eng.mul_plain(a, np.zeros(eng.slots)),
          "plainvector": lambda: eng.mul_plain(a, ckks.PlainVector(np.zeros(8))),
          # 1e-14 on 3 slots: every coefficient of the encoding rounds to 0 at scale 2^40
          "tiny-vector": lambda: eng.mul_plain(a, [1e-14, 0, -1e-14, 0, 1e-14]),
          "scalar0": lambda: eng.mul_scalar(a, 0.0),
          "scalar1e-30": lambda: eng.mul_scalar(a, 1e-30),
          "operator": lambda: a * 0}[how]()
    assert eng.counters.snapshot()["zero_result"] == before + 1  # the same path on sim and SEAL
    _zero_ok(eng, ct, top - 1)


def test_exact_cancellations_give_an_encryption_of_zero(eng):
    x = np.linspace(-2, 2, eng.slots)
    a = eng.encrypt(x)
    top = eng.max_level
    _zero_ok(eng, eng.sub(a, a), top)
    _zero_ok(eng, eng.add(a, eng.neg(a)), top)
    _zero_ok(eng, eng.add_many([a, eng.neg(a)]), top)
    _zero_ok(eng, eng.sub(eng.rotate(a, 1), eng.rotate(a, 1)) if eng.backend_name == "seal"
             else eng.sub(a, eng.drop_to_level(a, top)), top)
    _zero_ok(eng, eng.mul_sum([(a, a), (eng.neg(a), a)]), top - 1)
    # a cancelling pair inside a longer mul_sum: the remaining term survives
    out = eng.mul_sum([(a, a), (eng.neg(a), a), (a, eng.encrypt(np.ones(eng.slots)))])
    assert out.level == top - 1 and np.abs(eng.decrypt(out) - x).max() < 1e-4
    # a + 0 plaintext is a itself (SEAL accepts it; no substitution)
    assert np.abs(eng.decrypt(eng.add(a, 0.0)) - x).max() < 1e-5
    assert np.abs(eng.decrypt(eng.add(a, np.zeros(4))) - x).max() < 1e-5


def test_sim_and_seal_count_the_same_zero_results():
    def run(e):
        a = e.encrypt(np.arange(8.0))
        e.add_many([e.mul_scalar(a, 0.0), e.mul_plain(a, np.zeros(4)), e.sub(a, a), e.mul_scalar(a, 2.0)])
        return e.counters.snapshot()
    seal_counts = run(ckks.create_engine("seal", "n8192"))
    sim_counts = run(ckks.create_engine("sim", "n8192"))
    seal_counts.pop("keygen_galois")
    assert seal_counts["zero_result"] == 3 and seal_counts == sim_counts


def test_encodes_to_zero_matches_seals_encoder():
    from hetrain.ckks.engine import encodes_to_zero
    e = ckks.create_engine("seal", "n8192")
    rng = np.random.default_rng(0)
    scale = e._mul_scale(e.max_level)
    seen = set()
    for _ in range(60):
        k = int(rng.integers(1, e.slots))
        v = np.zeros(e.slots)
        v[rng.choice(e.slots, k, replace=False)] = rng.choice([-1, 1], k) * 10 ** rng.uniform(-13, -10) * rng.uniform(0.5, 1, k)
        pt = seal.Plaintext()
        e._coder.encode(v.tolist(), e._pid[e.max_level], scale, pt)
        assert encodes_to_zero(v, scale) == pt.is_zero()
        seen.add(pt.is_zero())
    assert seen == {True, False}
    assert encodes_to_zero(0.4 / scale, scale) and not encodes_to_zero(0.6 / scale, scale)


@pytest.mark.parametrize("backend", ["seal", "sim"])
def test_mlr_nesterov_with_a_vanishing_cubic_coefficient_trains(backend):
    """Regression: a small step makes κ³·c₃ (the sigmoid's cubic coefficient times the forward scale
    cubed, times the mask) encode to zero; SEAL raised 'result ciphertext is transparent'."""
    rng = np.random.default_rng(7)
    n, d, c = 48, 20, 3
    y = np.arange(n) % c
    X = rng.normal(size=(c, d))[y] * 1.5 + rng.normal(size=(n, d))
    X = (X - X.mean(0)) / X.std(0)
    Y = np.eye(c)[y]
    tr = MLRTrainer(iterations=2, momentum="nesterov", learning_rate=0.1)
    plan = tr.plan(n, d, c, "n16384")
    eng = ckks.create_engine(backend, "n16384", rotations=plan.rotation_steps)
    inputs, job = tr.client_encrypt(eng, X, Y)
    out = tr.server_train(eng, inputs, job)
    assert eng.counters.counts["zero_result"] > 0  # the sim takes the same path as SEAL
    W = tr.client_decrypt(eng, out, job)["W"]
    tw = tr.twin(X, Y)["W"]
    assert np.abs(W - tw).max() < 1e-4 and np.abs(tw).max() > 1e-3
