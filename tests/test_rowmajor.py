"""Row-major baseline (circuits.rowmajor): products, encrypted transposition, gradient sums vs NumPy on
sim and SEAL (n8192), and one full network iteration vs the twin's step (sim)."""
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from hetrain import ckks
from hetrain.circuits import diagonal as dg
from hetrain.circuits import rowmajor as rmj
from hetrain.circuits.errors import LayoutError
from hetrain.models.base import get_trainer
from hetrain.models.mlp_diagonal_twin import init_hidden, scaled_step

# sim: float64 rounding only; SEAL n8192 (scale 2^40): two levels of products of O(1) values -> ~1e-6.
TOL = {"sim": 1e-12, "seal": 1e-4}


def _setup(rng, backend, rows=3, cols=5, n=10):
    layout = dg.SampleLayout(n, ckks.get_params("n8192").slots)
    rm = rmj.RowMajor.for_matrix(rows, cols, layout.block)
    steps = set(rm.rowsum_steps()) | set(rm.gather_steps()) | set(rm.T.gather_steps()) | set(rm.transpose_steps())
    steps |= set(rm.T.tile_steps(rm.cols)) | set(rm.tile_steps(rm.rows)) | set(rm.T.rowsum_steps())
    steps |= set(rm.spread_steps()) | set(layout.allreduce_steps())
    eng = ckks.create_engine(backend, "n8192", rotations=sorted(steps - {0}))
    W = rng.normal(size=(rows, cols))
    return eng, layout, rm, W, eng.encrypt(layout.replicate(rm.pack(W)))


@pytest.mark.parametrize("backend", ["sim", "seal"])
def test_matvec_gather_tile(rng, backend):
    eng, layout, rm, W, w = _setup(rng, backend)
    X = rng.normal(size=(layout.n_samples, rm.cols))
    z = rmj.matvec(eng, w, eng.encrypt(layout.place(rm.tiled(X))), rm)
    got = layout.read(eng.decrypt(z), rm.rows * rm.width)[:, :: rm.width]  # z_i at slot i·width
    np.testing.assert_allclose(got, X @ W.T, atol=TOL[backend])
    zc = rmj.gather(eng, z, rm, rmj.gather_masks(rm, layout))
    assert zc.level == eng.max_level - 2
    blocks = eng.decrypt(zc).reshape(layout.batch, layout.block)
    np.testing.assert_allclose(blocks[: layout.n_samples, : rm.rows], X @ W.T, atol=TOL[backend])
    assert np.abs(blocks[:, rm.rows:]).max() < TOL[backend]  # gathered vector is clean


@pytest.mark.parametrize("backend", ["sim", "seal"])
def test_transpose_repack_and_transpose_product(rng, backend):
    eng, layout, rm, W, w = _setup(rng, backend)
    snap = eng.counters.snapshot()
    wt = rmj.transpose(eng, w, rm, rmj.transpose_masks(rm, layout))
    ops = eng.counters.diff(snap)
    # one mask per offset i − j, one rotation per non-zero offset
    assert ops["multiply_plain"] == rm.rows + rm.cols - 1 and ops["rotate"] == rm.rows + rm.cols - 2
    np.testing.assert_allclose(rm.T.unpack(eng.decrypt(wt)[: layout.block]), W.T, atol=TOL[backend])
    D = rng.normal(size=(layout.n_samples, rm.rows))
    d = eng.encrypt(layout.place(rm.strided(D)))  # δ as matvec leaves it
    u = rmj.matvec_transpose(eng, w, d, rm, rmj.transpose_masks(rm, layout), rmj.gather_masks(rm, layout))
    got = layout.read(eng.decrypt(u), rm.cols * rm.width)[:, :: rm.width]
    np.testing.assert_allclose(got, D @ W, atol=TOL[backend])


@pytest.mark.parametrize("backend", ["sim", "seal"])
def test_outer_sum_is_the_row_major_gradient(rng, backend):
    eng, layout, rm, W, _ = _setup(rng, backend)
    D = rng.normal(size=(layout.n_samples, rm.rows))
    A = rng.normal(size=(layout.n_samples, rm.cols))
    # garbage beside the strided entries must not leak into the gradient (the spread mask removes it)
    noisy = layout.place(rm.strided(D) + np.where(rm.strided(np.ones_like(D)) == 0, 7.0, 0.0))
    ds = rmj.spread(eng, eng.encrypt(noisy), rm, rmj.spread_mask(rm, layout))
    g = rmj.outer_sum(eng, ds, eng.encrypt(layout.place(rm.tiled(A))), layout)
    blocks = eng.decrypt(g).reshape(layout.batch, layout.block)
    for b in (0, layout.batch - 1):  # every block holds the sum over samples
        np.testing.assert_allclose(rm.unpack(blocks[b]), D.T @ A, atol=TOL[backend] * 10)


def test_layout_error():
    with pytest.raises(LayoutError, match="row-major"):
        rmj.RowMajor.for_matrix(3, 9, 64)  # width 16: 256 slots > 64
    with pytest.raises(ValueError):
        rmj.RowMajor(2, 3, 4).pack(np.ones((3, 2)))


def test_full_iteration_matches_twin_step_and_costs_eleven_levels(bench_module):
    RowMajorIteration = bench_module("rowmajor_baseline").RowMajorIteration
    X, y = load_iris(return_X_y=True)
    Xtr, _, ytr, _ = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    Xtr = (Xtr - Xtr.mean(0)) / Xtr.std(0)
    Y = np.eye(3)[ytr]
    T = get_trainer("mlp-diagonal")()
    it = RowMajorIteration(T, len(Xtr), 4, 3, ckks.get_params("n32768").slots)
    s = it.scales
    xh = s.x * np.hstack([Xtr, np.ones((len(Xtr), 1))])
    V1 = init_hidden(T.H, 4, T.gain) / s.x
    V1, V2, _ = scaled_step(V1, np.zeros((3, T.H + 1)), xh, Y, s, T.hidden_sig, T.hb, hidden_update=False)
    want1, want2, _ = scaled_step(V1, V2, xh, Y, s, T.hidden_sig, T.hb)
    eng = ckks.create_engine("sim", "n32768", rotations=it.rotation_steps())
    out = it.iteration(eng, it.client_encrypt(eng, Xtr, Y, V1, V2))
    got1, got2 = it.decrypt(eng, out)
    np.testing.assert_allclose(got1, want1, atol=1e-10)  # sim: float64 rounding only
    np.testing.assert_allclose(got2, want2, atol=1e-10)
    assert np.abs(want1 - V1).max() > 0.1  # both layers moved
    assert out["w1"].level == eng.max_level - 11
