"""The two training products (z = X·Uᵀ, G = Eᵀ·X̃) in both packings, against NumPy: sim and real CKKS."""
import numpy as np
import pytest

from hetrain import ckks
from hetrain.circuits import blocked_matmul, volley_revolver
from hetrain.circuits.masked_poly import eval_poly_masked, eval_poly_masked_plain
from hetrain.circuits.errors import LayoutError
from hetrain.circuits.packing import BlockedPacking, VolleyRevolverPacking, choose_packing

CIRCUITS = {"blocked": blocked_matmul, "volley-revolver": volley_revolver}


def _problem(n, d, c, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(c, d)) * 0.3, rng.normal(size=(n, c))


def _products(eng, pk, circ, X, U, E):
    """Encrypted z = X·Uᵀ and G = Eᵀ·X (E enters where the forward leaves its valid values)."""
    Xc = [eng.encrypt(v) for v in pk.pack_forward_data(X)]
    Xg = [eng.encrypt(v) for v in pk.pack_gradient_data(X)]
    Uc = [eng.encrypt(v) for v in pk.pack_weights(U)]
    z = circ.forward(eng, pk, Xc, Uc)
    q = [eng.encrypt(v) for v in pk.pack_forward_output(E)]
    G = circ.gradient(eng, pk, circ.spread(eng, pk, q), Xg)
    return pk.unpack_forward([eng.decrypt(x) for x in z]), pk.unpack_weights([eng.decrypt(x) for x in G])


# (layout, n, d, c): shapes that leave padding in every index (samples, features, classes)
CASES = [("blocked", 37, 21, 3), ("blocked", 5, 130, 5), ("volley-revolver", 11, 600, 3)]


@pytest.mark.parametrize("layout,n,d,c", CASES)
def test_products_match_numpy_on_sim(layout, n, d, c):
    eng0 = ckks.create_engine("sim", "n8192")
    pk = choose_packing(layout, n, d, c, eng0.slots)
    eng = ckks.create_engine("sim", "n8192", rotations=pk.rotation_steps())
    X, U, E = _problem(n, d, c)
    z, G = _products(eng, pk, CIRCUITS[layout], X, U, E)
    np.testing.assert_allclose(z, X @ U.T, atol=1e-9)
    np.testing.assert_allclose(G, E.T @ X, atol=1e-9)
    assert z.shape == (n, c) and G.shape == (c, d)


@pytest.mark.parametrize("layout,n,d,c", [CASES[0], CASES[2]])
def test_products_match_numpy_under_real_ckks(layout, n, d, c):
    # n8192 (2 levels): the forward and the gradient are one level each. Scale 2^40, inputs O(1):
    # fresh-encryption + rescale + key-switching errors are ~1e-6 per slot; a row sum of up to 1024
    # terms stays well under 1e-3.
    params = ckks.get_params("n8192")
    pk = choose_packing(layout, n, d, c, params.slots)
    eng = ckks.create_engine("seal", "n8192", rotations=pk.rotation_steps())
    X, U, E = _problem(n, d, c, seed=1)
    z, G = _products(eng, pk, CIRCUITS[layout], X, U, E)
    np.testing.assert_allclose(z, X @ U.T, atol=1e-3)
    np.testing.assert_allclose(G, E.T @ X, atol=1e-3)


def test_blocked_declares_exactly_the_rotations_it_uses():
    pk = BlockedPacking.choose(37, 21, 3, 4096)
    steps = pk.rotation_steps()
    assert len(steps) == len(set(steps)) == int(np.log2(4096 // pk.C))
    X, U, E = _problem(37, 21, 3)
    for missing in steps:  # every declared key is needed
        eng = ckks.create_engine("sim", "n8192", rotations=[s for s in steps if s != missing])
        with pytest.raises(ckks.MissingRotationKey):
            _products(eng, pk, blocked_matmul, X, U, E)


def test_blocked_chooses_fewest_rotations_for_the_seed_shape():
    pk = BlockedPacking.choose(128, 401, 10, 8192)
    assert (pk.I, pk.L, pk.C) == (16, 32, 16)
    assert pk.rotations_per_iteration() == 8 * 2 * 5 + 13 * 4
    vr = VolleyRevolverPacking.choose(128, 401, 10, 8192)
    assert vr.rotations_per_iteration() > 10 * pk.rotations_per_iteration()


def test_packings_round_trip_weights():
    rng = np.random.default_rng(3)
    for pk in (BlockedPacking.choose(9, 50, 6, 4096), VolleyRevolverPacking.choose(9, 300, 6, 4096)):
        U = rng.normal(size=(6, 50 if pk.name == "blocked" else 300))
        np.testing.assert_array_equal(pk.unpack_weights(pk.pack_weights(U)), U)


def test_layouts_refuse_what_does_not_fit():
    with pytest.raises(LayoutError, match="classes"):
        VolleyRevolverPacking.choose(10, 600, 5, 4096)  # 4 rows of 1024 slots < 5 classes
    with pytest.raises(LayoutError, match="features"):
        VolleyRevolverPacking.choose(10, 5000, 2, 4096)
    with pytest.raises(LayoutError, match="classes"):
        BlockedPacking.choose(10, 10, 3000, 4096)
    with pytest.raises(LayoutError, match="unknown layout"):
        choose_packing("diagonal", 10, 10, 2, 4096)


@pytest.mark.parametrize("backend", ["sim", "seal"])
def test_masked_polynomial_zeroes_garbage_and_matches_twin(backend):
    eng = ckks.create_engine(backend, "n8192")
    rng = np.random.default_rng(4)
    x = rng.uniform(-8, 8, eng.slots)
    x[::3] = 30.0  # garbage where the mask is 0 (out of the interval, like a forward's partial sums)
    mask = np.ones(eng.slots)
    mask[::3] = 0.0
    coeffs = [0.5, 0.10679534503216294, 0.0, -0.00038503259805075]
    out = eng.decrypt(eval_poly_masked(eng, eng.encrypt(x), coeffs, ckks.PlainVector(mask)))
    assert eng.max_level == 2  # the degree-3 polynomial with its mask used exactly the 2 levels
    # SEAL: a masked term is (noise ~1e-7)·x², so garbage g leaks ~1e-7·g²: ≈1e-4 for g = 30 (tolerance
    # 1e-3); valid slots carry the usual ~1e-6 error. In training the garbage is a partial row sum, of
    # the size of z itself (|z| ≤ 8).
    np.testing.assert_allclose(out, eval_poly_masked_plain(x, coeffs, mask), atol=1e-3 if backend == "seal" else 1e-12)
    with pytest.raises(ckks.DepthExhausted):
        eval_poly_masked(eng, eng.encrypt(x, level=1), coeffs, mask)


def test_every_layout_raises_the_one_layout_error():
    # circuits/errors.LayoutError is the only layout error: the packings, the diagonal layout and the
    # DVR grid all raise it, and it is a user error (the CLI prints it as one line)
    from hetrain.circuits import diagonal, dvr
    from hetrain.errors import HetrainUserError

    assert issubclass(LayoutError, HetrainUserError)
    for refuse in (lambda: BlockedPacking.choose(10, 10, 3000, 4096),
                   lambda: diagonal.SampleLayout(5000, 4096),
                   lambda: dvr.GridLayout.choose(4096, n=20, d=11, widths=[100])):
        with pytest.raises(LayoutError) as info:
            refuse()
        assert type(info.value) is LayoutError
