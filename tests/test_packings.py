"""The packings' common interface (circuits/packings.py): every registered packing round-trips random
weight matrices, and the rotation steps it reports are exactly those its circuits use on the sim
(recorded rotation by rotation), checked against NumPy too."""
from __future__ import annotations

import numpy as np
import pytest

from hetrain import ckks
from hetrain.circuits import blocked_matmul, diagonal as dg, dvr, rowmajor as rmj, volley_revolver
from hetrain.circuits.errors import LayoutError
from hetrain.circuits.packings import Packing, build_packing, packing_entry, packing_names

SLOTS = ckks.get_params("n8192").slots
# (n samples, (rows, cols)) per packing: padding in every index where the packing has one
PROBLEMS = {"blocked": (37, (3, 21)), "volley-revolver": (11, (3, 600)), "dvr": (20, (5, 11)),
            "diagonal": (12, (4, 5)), "rowmajor": (12, (3, 5))}


def test_every_builtin_packing_is_registered_and_has_a_problem_here():
    assert set(packing_names()) == set(PROBLEMS)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_pack_unpack_round_trips_random_matrices(name):
    rng = np.random.default_rng(7)
    n, shape = PROBLEMS[name]
    p = build_packing(name, n, shape, SLOTS)
    assert isinstance(p, Packing) and p.name == name and p.slots == SLOTS
    for _ in range(3):
        M = rng.normal(size=shape)
        vecs = p.pack(M)
        assert len(vecs) == p.n_ciphertexts(shape) and all(np.size(v) <= SLOTS for v in vecs)
        np.testing.assert_array_equal(p.unpack(vecs, shape), M)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_a_matrix_that_does_not_fit_is_refused(name):
    n, (r, c) = PROBLEMS[name]
    p = build_packing(name, n, (r, c), SLOTS)
    with pytest.raises(LayoutError, match=r"does not fit|holds a|rows"):
        p.n_ciphertexts((SLOTS, c))


def test_unknown_packing_name_lists_the_registered_ones():
    with pytest.raises(LayoutError, match="unknown packing 'nope'; choose one of blocked, volley-revolver, dvr"):
        packing_entry("nope")


def _recording_sim(steps):
    eng = ckks.create_engine("sim", "n8192", rotations=steps)
    used = set()
    inner = eng._rotate

    def rotate(ct, s):
        used.add(s)
        return inner(ct, s)

    eng._rotate = rotate
    return eng, used


def _run_mlr(eng, p, circ, rng):
    X, U, E = rng.normal(size=(p.n, p.d)), rng.normal(size=(p.c, p.d)), rng.normal(size=(p.n, p.c))
    enc = lambda vs: [eng.encrypt(v) for v in vs]  # noqa: E731
    z = circ.forward(eng, p, enc(p.pack_forward_data(X)), enc(p.pack(U)))
    G = circ.gradient(eng, p, circ.spread(eng, p, enc(p.pack_forward_output(E))), enc(p.pack_gradient_data(X)))
    np.testing.assert_allclose(p.unpack_forward([eng.decrypt(x) for x in z]), X @ U.T, atol=1e-9)
    np.testing.assert_allclose(p.unpack([eng.decrypt(x) for x in G], (p.c, p.d)), E.T @ X, atol=1e-9)


def _run_dvr(eng, p, rng):
    """Every reduction and replication the mlp-dvr circuits make (both axes, and the samples)."""
    x = rng.normal(size=(p.n, 3))
    ct = eng.encrypt(p.along(x, 0, "a"))
    np.testing.assert_allclose(p.read_along(eng.decrypt(dvr.reduce_axis(eng, ct, p, "a")), "a", 1)[: len(x), 0],
                               x[: p.S].sum(axis=1), atol=1e-9)
    for axis in ("b", "s"):
        dvr.reduce_axis(eng, ct, p, axis)
    for axis in ("a", "b"):
        dvr.replicate(eng, ct, p, axis)


def _run_diagonal(eng, p, rng):
    """W·x, Wᵀ·δ on the same diagonals, and the gradient's pack_sum / unpack_all."""
    W, X = rng.normal(size=(p.band.rows, p.band.cols)), rng.normal(size=(p.layout.n_samples, p.band.cols))
    D = rng.normal(size=(p.layout.n_samples, p.band.rows))
    diags = {t: eng.encrypt(v) for t, v in zip(p.band.offsets, p.pack(W))}
    x = eng.encrypt(p.layout.place(X))
    z = dg.matvec(eng, diags, dg.rotations_of(eng, x, p.band.offsets))
    np.testing.assert_allclose(p.layout.read(eng.decrypt(z), p.band.rows), X @ W.T, atol=1e-9)
    delta = eng.encrypt(p.layout.place(D))
    u = dg.matvec_transpose(eng, diags, delta)
    np.testing.assert_allclose(p.layout.read(eng.decrypt(u), p.band.cols), D @ W, atol=1e-9)
    plan = dg.PackPlan.for_band(p.band, p.layout.block)
    rot = p.band.rotated_inputs(X)
    products = {t: eng.mul(delta, eng.encrypt(p.layout.place(rot[t]))) for t in p.band.offsets}
    grads = dg.unpack_all(eng, dg.pack_sum(eng, products, plan, p.layout), plan)
    G = p.band.matrix({t: eng.decrypt(ct)[: p.band.rows] for t, ct in grads.items()})
    np.testing.assert_allclose(G, D.T @ X, atol=1e-9)


def _run_rowmajor(eng, p, rng):
    """W·x, the re-packed Wᵀ·δ, spread and the outer-product sum."""
    rm, L = p.rm, p.layout
    W, X = rng.normal(size=(rm.rows, rm.cols)), rng.normal(size=(L.n_samples, rm.cols))
    D = rng.normal(size=(L.n_samples, rm.rows))
    w = eng.encrypt(p.pack(W)[0])
    z = rmj.matvec(eng, w, eng.encrypt(L.place(rm.tiled(X))), rm)
    np.testing.assert_allclose(L.read(eng.decrypt(z), rm.rows * rm.width)[:, :: rm.width], X @ W.T, atol=1e-9)
    delta = eng.encrypt(L.place(rm.strided(D)))
    u = rmj.matvec_transpose(eng, w, delta, rm, rmj.transpose_masks(rm, L), rmj.gather_masks(rm, L))
    np.testing.assert_allclose(L.read(eng.decrypt(u), rm.cols * rm.width)[:, :: rm.width], D @ W, atol=1e-9)
    spread = rmj.spread(eng, delta, rm, rmj.spread_mask(rm, L))
    G = rmj.outer_sum(eng, spread, eng.encrypt(L.place(rm.tiled(X))), L)
    np.testing.assert_allclose(p.unpack([eng.decrypt(G)], (rm.rows, rm.cols)), D.T @ X, atol=1e-9)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_reported_rotation_steps_are_exactly_those_the_circuits_use(name):
    rng = np.random.default_rng(3)
    n, shape = PROBLEMS[name]
    p = build_packing(name, n, shape, SLOTS)
    eng, used = _recording_sim(p.rotation_steps())  # a step it forgot: MissingRotationKey
    run = {"blocked": lambda: _run_mlr(eng, p, blocked_matmul, rng),
           "volley-revolver": lambda: _run_mlr(eng, p, volley_revolver, rng),
           "dvr": lambda: _run_dvr(eng, p, rng), "diagonal": lambda: _run_diagonal(eng, p, rng),
           "rowmajor": lambda: _run_rowmajor(eng, p, rng)}[name]
    run()
    assert used == {eng.normalize_step(s) for s in p.rotation_steps()} - {0}


@pytest.fixture(scope="module")
def seal_engine():
    return ckks.create_engine("seal", "n8192")


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_pack_encrypt_decrypt_unpack_under_real_ckks(name, seal_engine):
    """SEAL n8192, scale 2^40: fresh encryption leaves errors ~1e-7 on O(1) values."""
    n, shape = PROBLEMS[name]
    p = build_packing(name, n, shape, seal_engine.slots)
    M = np.random.default_rng(5).normal(size=shape)
    cts = [seal_engine.encrypt(v) for v in p.pack(M)]
    np.testing.assert_allclose(p.unpack([seal_engine.decrypt(ct) for ct in cts], shape), M, atol=1e-4)


def test_hetrain_models_lists_every_registered_packing(capsys):
    from hetrain.cli.main import main

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("packings (--layout"))
    listed = [ln.split()[0] for ln in lines[start + 1:] if ln.startswith("  ")][: len(packing_names()) + 1]
    assert listed == ["auto", *packing_names()]
    assert "not a --layout value" in next(ln for ln in lines if ln.split()[:1] == ["rowmajor"])
