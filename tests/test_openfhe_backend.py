"""The optional OpenFHE backend (skipped where openfhe is not importable: it has a wheel for Python 3.10 only).

The engine contract itself runs in tests/test_ckks_engine.py (parametrised over "openfhe"). Here:
bootstrapping, the client/server split across processes, secret_key=, serialisation and the
128-bit refusals. Rings are INSECURE test rings (forced, marked ``insecure``); the 128-bit N=2^16
bootstrap is measured by bench/bootstrap.py --backend openfhe --split DIR (openfhe-boot: a 7.65 GiB public
context, ≈11 GiB per process; tests/test_openfhe_files.py runs it with HETRAIN_BIG=1).
Tolerances: fresh error at 2^50-2^59 scaling is ~1e-10; a bootstrap at 59-bit scaling measured
1.5e-7 (sparse, 64 slots) to 1.1e-6 (1024 slots) max abs on values in [-1, 1]; 1e-5 leaves margin.
"""
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hetrain import ckks

BOOT_TOL = 1e-5
TOL = 1e-7


def test_missing_openfhe_gives_install_hint(monkeypatch):
    from hetrain.ckks import openfhe_backend
    monkeypatch.setattr(openfhe_backend, "_o", None)
    with pytest.raises(ckks.CKKSError, match=r"pip install 'hetrain\[openfhe\]'"):
        ckks.create_engine("openfhe", "openfhe-test", force_insecure=True)
    assert "openfhe" in ckks.BACKENDS and "openfhe" in ckks.BOOTSTRAP_BACKENDS


pytest.importorskip("openfhe", reason="openfhe (optional; wheel for Python 3.10 only) is not installed")
pytestmark = pytest.mark.insecure


@pytest.fixture(scope="module")
def boot():
    """Sparse packing (64 slots) at N=4096: the cheapest bootstrapping ring (keys ≈ 2 s, a bootstrap ≈ 5-20 s)."""
    return ckks.create_engine("openfhe", "openfhe-boot-test-sparse", rotations=[1, -2], force_insecure=True)


@pytest.fixture(scope="module")
def x(boot):
    return np.random.default_rng(0).uniform(-1, 1, boot.slots)


def test_refuses_parameters_below_128_bits_unless_forced():
    with pytest.raises(ckks.InsecureParameters, match="force_insecure"):
        ckks.create_engine("openfhe", "openfhe-test")
    # SEAL's n16384 (7 levels at 2^40) maps to the same chain; OpenFHE's own 128-bit bound (its key-switching
    # primes included) wants N=32768 for it
    with pytest.raises(ckks.InsecureParameters, match="HEStd_128_classic"):
        ckks.create_engine("openfhe", "n16384")
    forced = ckks.create_engine("openfhe", "n16384", force_insecure=True)
    assert forced.forced_insecure and forced.max_level == 7
    # a server loads the public context of parameters the data owner forced (it says so; logs say INSECURE)
    small = ckks.create_engine("openfhe", "openfhe-test", force_insecure=True)
    assert ckks.load_engine(small.public_bytes()).forced_insecure
    meta, parts = ckks.container.unpack(small.public_bytes())
    meta = {k: v for k, v in meta.items() if k not in ("parts", "forced_insecure")}
    with pytest.raises(ckks.InsecureParameters, match="force_insecure"):
        ckks.load_engine(ckks.container.pack(meta, parts))


def test_128_bit_presets_pass_openfhes_check():
    """Context only (no keys): OpenFHE accepts the secure presets at HEStd_128_classic."""
    from hetrain.ckks.openfhe_backend import PRESETS, _make_context
    for name in ("openfhe-l10", "openfhe-boot"):
        cfg = PRESETS[name]
        cc, forced = _make_context(cfg, False)
        assert not forced and cc.GetRingDimension() == cfg.ring_dim
    cfg = PRESETS["openfhe-boot"]
    assert cfg.params().slots == 1024 and cfg.params().levels == cfg.levels >= 6  # levels after a bootstrap
    assert cfg.depth() == cfg.levels + 1 + cfg.boot_depth() == 25


def test_bootstrap_restores_levels_and_values(boot, x):
    assert boot.can_bootstrap and boot.bootstrap_level == boot.max_level == 6
    ct = boot.drop_to_level(boot.encrypt(x), 1)
    ct = boot.square(ct)
    assert ct.level == 0
    with pytest.raises(ckks.DepthExhausted):
        boot.square(ct)
    b = boot.bootstrap(ct)
    assert b.level == boot.bootstrap_level
    assert np.abs(boot.decrypt(b) - x * x).max() < BOOT_TOL
    r = boot.rotate(boot.square(b), 1)  # the refreshed ciphertext computes on: a level used, keys work
    assert r.level == boot.bootstrap_level - 1
    assert np.abs(boot.decrypt(r) - np.roll(x ** 4, -1)).max() < BOOT_TOL
    assert boot.counters.counts["bootstrap"] == 1


def test_bootstrap_of_larger_values_from_the_top_level(boot, x):
    b = boot.bootstrap(boot.encrypt(4 * x))  # from max_level: lowered to level 0 first, the same result level
    assert b.level == boot.bootstrap_level
    assert np.abs(boot.decrypt(b) - 4 * x).max() < 4 * BOOT_TOL


def test_sparse_packing_rotates_within_the_slots(boot, x):
    assert boot.slots == 64 and boot.params.packing == 64 and boot.params.poly_modulus_degree == 4096
    a = boot.encrypt(x)
    assert np.abs(boot.decrypt(boot.rotate(a, -2)) - np.roll(x, 2)).max() < TOL
    assert np.abs(boot.decrypt(boot.rotate(a, 1)) - np.roll(x, -1)).max() < TOL
    with pytest.raises(ckks.MissingRotationKey):
        boot.rotate(a, 3)


def test_server_without_secret_key_computes_and_bootstraps(boot, x):
    server = ckks.load_engine(boot.public_bytes(), force_insecure=True)
    assert not server.has_secret_key and server.can_bootstrap and server.bootstrap_level == boot.bootstrap_level
    ct = server.deserialize(boot.serialize(boot.drop_to_level(boot.encrypt(x), 0)))
    with pytest.raises(ckks.SecretKeyUnavailable):
        server.decrypt(ct)
    out = server.rotate(server.mul_plain(server.bootstrap(ct), x), 1)
    got = boot.decrypt(boot.deserialize(server.serialize(out)))
    assert np.abs(got - np.roll(x * x, -1)).max() < BOOT_TOL


def test_client_server_split_across_processes(boot, x, tmp_path):
    """public bytes -> a second process (no secret key) deserialises, computes, bootstraps, serialises ->
    the client decrypts. OpenFHE's key maps are process-wide: only a separate process shows that the
    public context alone carries everything (context, public, relinearisation, rotation and bootstrapping keys)."""
    (tmp_path / "public.bin").write_bytes(boot.public_bytes())
    boot.save_ciphertexts(tmp_path / "in.bin", [boot.drop_to_level(boot.encrypt(x), 0)])
    script = textwrap.dedent("""
        import sys, pathlib, numpy as np
        from hetrain import ckks
        d = pathlib.Path(sys.argv[1])
        eng = ckks.load_engine((d / "public.bin").read_bytes(), force_insecure=True)
        assert not eng.has_secret_key
        (ct,) = eng.load_ciphertexts(d / "in.bin")
        b = eng.bootstrap(ct)
        out = eng.rotate(eng.square(b) * 0.5, -2)
        eng.save_ciphertexts(d / "out.bin", [out])
        print("levels", ct.level, b.level, out.level)
    """)
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1] / "src"))
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"levels 0 {boot.bootstrap_level} {boot.bootstrap_level - 2}" in res.stdout
    (out,) = boot.load_ciphertexts(tmp_path / "out.bin")
    assert np.abs(boot.decrypt(out) - np.roll(0.5 * x * x, 2)).max() < BOOT_TOL


def test_secret_key_makes_fresh_evaluation_keys_for_the_stored_key(x):
    owner = ckks.create_engine("openfhe", "openfhe-test", force_insecure=True)
    job = ckks.create_engine("openfhe", "openfhe-test", rotations=[4], force_insecure=True,
                             secret_key=owner.secret_key_bytes())
    assert job.key_id == owner.key_id and job.rotation_steps == {4}
    v = np.resize(x, job.slots)
    # the job's public context carries the job's rotation key only; the stored key decrypts its results
    server = ckks.load_engine(job.public_bytes(), force_insecure=True)
    r = server.rotate(server.deserialize(job.serialize(job.encrypt(v))) * v, 4)
    again = ckks.load_engine(job.public_bytes(), owner.secret_key_bytes(), force_insecure=True)
    assert np.abs(again.decrypt(again.deserialize(server.serialize(r))) - np.roll(v * v, -4)).max() < TOL
    # and ciphertexts of the owner's engine decrypt under the job's engine (same secret key)
    assert np.abs(job.decrypt(job.deserialize(owner.serialize(owner.encrypt(v)))) - v).max() < TOL
    with pytest.raises(ckks.MissingRotationKey):
        owner.rotate(owner.encrypt(v), 4)
    other = ckks.create_engine("openfhe", "openfhe-boot-test-sparse", force_insecure=True)
    with pytest.raises(ckks.KeyMismatch):
        ckks.create_engine("openfhe", "openfhe-test", force_insecure=True, secret_key=other.secret_key_bytes())


def test_foreign_and_corrupted_ciphertexts_are_refused(x):
    a = ckks.create_engine("openfhe", "openfhe-test", force_insecure=True)
    b = ckks.create_engine("openfhe", "openfhe-test", force_insecure=True)
    v = np.resize(x, a.slots)
    blob = a.serialize(a.encrypt(v))
    with pytest.raises(ckks.KeyMismatch):
        b.deserialize(blob)
    with pytest.raises(ckks.SerializationError):
        a.deserialize(blob[:-100])
    sizes = a.key_sizes()
    assert sizes["galois_keys"] == 0 and sizes["relin_keys"] > 0 and sizes["secret_key"] > 0
    assert "sk" not in ckks.container.unpack(a.public_bytes())[1]  # the public context has no secret part
