"""Diagonal packing: W·x, Wᵀ·δ (packed and re-packed), sample sums, vs NumPy on sim and SEAL."""
import numpy as np
import pytest

from hetrain import ckks
from hetrain.circuits import diagonal as dg
from hetrain.circuits.errors import LayoutError


def _setup(rng, backend, preset, rows=3, cols=5, n=10):
    eng0 = ckks.create_engine("sim", preset)
    layout = dg.SampleLayout(n, eng0.slots)
    band = dg.BandDiagonals(rows, cols)
    plan_in = dg.PackPlan.for_band(band, layout.block)
    plan_live = dg.PackPlan.for_band(band, layout.block, live_cols=cols)
    steps = set(band.offsets) | {-t for t in band.offsets} | set(layout.allreduce_steps())
    steps |= set(plan_in.steps()) | set(plan_live.steps())
    eng = ckks.create_engine(backend, preset, rotations=sorted(steps - {0}))
    W = rng.normal(size=(rows, cols))
    X = rng.normal(size=(n, cols))
    D = rng.normal(size=(n, rows))
    diags = {t: eng.encrypt(layout.replicate(v)) for t, v in band.diagonals(W).items()}
    return eng, layout, band, plan_in, plan_live, W, X, D, diags


# sim: exact up to float64 rounding; SEAL: scale 2^40, a few products of O(1) values -> error ~1e-6.
TOL = {"sim": 1e-12, "seal": 1e-4}


@pytest.mark.parametrize("backend", ["sim", "seal"])
def test_matvec_and_both_transposes_match_numpy(rng, backend):
    eng, layout, band, _, _, W, X, D, diags = _setup(rng, backend, "n8192")
    x = eng.encrypt(layout.place(X))
    z = dg.matvec(eng, diags, dg.rotations_of(eng, x, band.offsets))
    got = eng.decrypt(z)
    np.testing.assert_allclose(layout.read(got, band.rows), dg.matvec_plain(W, X), atol=TOL[backend])
    # clean: nothing outside the rows of each sample block
    assert np.abs(got.reshape(layout.batch, layout.block)[:, band.rows:]).max() < TOL[backend]
    d = eng.encrypt(layout.place(D))
    want = dg.matvec_transpose_plain(W, D)
    u = eng.decrypt(dg.matvec_transpose(eng, diags, d))
    np.testing.assert_allclose(layout.read(u, band.cols), want, atol=TOL[backend])
    snap = eng.counters.snapshot()
    u2 = eng.decrypt(dg.matvec_transpose_repacked(eng, diags, d, dg.transpose_masks(band, layout)))
    np.testing.assert_allclose(layout.read(u2, band.cols), want, atol=TOL[backend])
    assert eng.counters.diff(snap)["rotate"] > len(band.offsets)  # the naive way rotates more


def test_packed_transpose_uses_one_level_and_fewer_rotations(rng):
    eng, layout, band, _, _, W, X, D, diags = _setup(rng, "sim", "n16384")
    d = eng.encrypt(layout.place(D))
    s0 = eng.counters.snapshot()
    u = dg.matvec_transpose(eng, diags, d)
    packed = eng.counters.diff(s0)
    s1 = eng.counters.snapshot()
    u2 = dg.matvec_transpose_repacked(eng, diags, d, dg.transpose_masks(band, layout))
    naive = eng.counters.diff(s1)
    assert u.level == eng.max_level - 1 and u2.level == eng.max_level - 2
    assert packed["rotate"] == len(band.offsets) - 1
    assert naive["rotate"] == 2 * (len(band.offsets) - 1)


@pytest.mark.parametrize("backend", ["sim", "seal"])
def test_pack_sum_allreduce_unpack(rng, backend):
    eng, layout, band, plan_in, _, W, X, D, diags = _setup(rng, backend, "n8192")
    xr = band.rotated_inputs(X)
    prods = {t: eng.encrypt(layout.place(D * xr[t])) for t in band.offsets}
    q = dg.pack_sum(eng, prods, plan_in, layout)
    G = D.T @ X  # Σ_s δ_s x_sᵀ
    got = {t: eng.decrypt(v)[: band.rows] for t, v in dg.unpack_all(eng, q, plan_in).items()}
    np.testing.assert_allclose(band.matrix(got), G, atol=TOL[backend] * 10)
    # every sample block holds the sum
    blocks = eng.decrypt(q).reshape(layout.batch, layout.block)
    np.testing.assert_allclose(blocks, np.tile(blocks[0], (layout.batch, 1)), atol=TOL[backend] * 10)


def test_band_diagonals_roundtrip_and_windows():
    band = dg.BandDiagonals(3, 5)
    W = np.arange(15.0).reshape(3, 5)
    assert band.offsets == [-2, -1, 0, 1, 2, 3, 4]
    np.testing.assert_array_equal(band.matrix(band.diagonals(W)), W)
    p = dg.PackPlan.for_band(band, 64, live_cols=5)
    starts = sorted(p.pack_offsets)
    assert len(set(starts)) == 7 and max(starts) < 64


def test_layout_errors():
    with pytest.raises(LayoutError):
        dg.SampleLayout(5000, 4096)
    with pytest.raises(LayoutError, match="windows"):
        dg.PackPlan.for_band(dg.BandDiagonals(3, 30), 32, live_cols=30)
    with pytest.raises(LayoutError):
        dg.SampleLayout(4, 64).place(np.ones((3, 2)))
    with pytest.raises(ValueError):
        dg.BandDiagonals(2, 2).diagonals(np.ones((3, 3)))


@pytest.mark.parametrize("backend", ["sim", "seal"])
def test_pack_sum_windowed_equals_pack_sum_with_one_relinearisation(rng, backend):
    eng, layout, band, plan_in, _, W, X, D, diags = _setup(rng, backend, "n8192")
    xr = band.rotated_inputs(X)
    d = eng.encrypt(layout.place(D))
    # the client moves each input to its window itself: x̃_t = rot(x_t, -o_t)
    xw = {t: eng.encrypt(np.roll(layout.place(xr[t]), plan_in.off(t))) for t in band.offsets}
    snap = eng.counters.snapshot()
    q = dg.pack_sum_windowed(eng, d, xw, plan_in, layout)
    ops = eng.counters.diff(snap)
    assert ops["relinearize"] == 1 and q.level == eng.max_level - 1
    got = {t: eng.decrypt(v)[: band.rows] for t, v in dg.unpack_all(eng, q, plan_in).items()}
    np.testing.assert_allclose(band.matrix(got), D.T @ X, atol=TOL[backend] * 10)


def test_chained_rotations_and_horner_sum_use_few_keys(rng):
    """rotations_of / rotate_sum reach every shift with the consecutive-difference keys only, with
    one rotation per non-zero shift (the same count as rotating directly)."""
    shifts = [-14, -7, 0, 7, 14, 21]
    assert dg.chain_steps(shifts) == [-7, 7]
    eng = ckks.create_engine("sim", "n8192", rotations=[-7, 7])
    v = rng.normal(size=eng.slots)
    ct = eng.encrypt(v)
    snap = eng.counters.snapshot()
    rot = dg.rotations_of(eng, ct, shifts)
    assert eng.counters.diff(snap)["rotate"] == 5
    for s in shifts:
        np.testing.assert_allclose(eng.decrypt(rot[s]), np.roll(v, -s), atol=1e-12)
    terms = {s: rng.normal(size=eng.slots) for s in shifts}
    snap = eng.counters.snapshot()
    got = eng.decrypt(dg.rotate_sum(eng, {s: eng.encrypt(t) for s, t in terms.items()}))
    assert eng.counters.diff(snap)["rotate"] == 5
    np.testing.assert_allclose(got, sum(np.roll(t, -s) for s, t in terms.items()), atol=1e-12)


def test_pack_plan_is_evenly_spaced_and_windows_disjoint():
    band = dg.BandDiagonals(3, 5)
    p = dg.PackPlan.for_band(band, 64, live_cols=5)
    assert p.window == dg.PackPlan.min_spacing(band, 5) == 7
    assert p.pack_offsets == tuple(7 * k for k in range(7)) and p.steps() == [-7, 7]
    # every window's extent [off + lo, off + hi) is disjoint from the others, modulo the block
    cover = np.zeros(64, int)
    for t, o in zip(p.offsets, p.pack_offsets):
        lo, hi = min(0, -t), max(3, 5 - t)
        cover[np.arange(o + lo, o + hi) % 64] += 1
    assert cover.max() == 1
    with pytest.raises(LayoutError, match="below the minimum"):
        dg.PackPlan.for_band(band, 64, live_cols=5, spacing=6)
