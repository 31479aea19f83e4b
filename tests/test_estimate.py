"""protocol/estimate.py: sizes against SEAL's real serialised objects (n8192), the estimate against a
real n8192 run's upload, and the confirmation above --max-memory-gb (--yes)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from toykit import ToyTrainer  # noqa: F401  (registers "toy-centroid")

from hetrain import ckks
from hetrain.errors import HetrainUserError
from hetrain.protocol import estimate as E
from hetrain.protocol.files import load_model
from jobkit import run_cli  # noqa: E402


def run(capsys, *argv):
    return run_cli(capsys, *argv)


def test_size_formulas_match_seal_at_n8192():
    params = ckks.get_params("n8192")
    eng = ckks.create_engine("seal", "n8192", rotations=[1, 2, 4])
    sizes = eng.key_sizes()
    ct = eng.encrypt(np.linspace(-1, 1, eng.slots))
    # the data owner's fresh encryptions are seeded (about half); a computed ciphertext is not
    assert E.ciphertext_bytes(params, seeded=True) == pytest.approx(len(eng.serialize(ct)), rel=0.12)
    dropped = eng.drop_to_level(eng.mul_scalar(ct, 1.0), 0)
    assert E.ciphertext_bytes(params, 0) == pytest.approx(len(eng.serialize(dropped)), rel=0.12)
    assert E.ciphertext_bytes(params, params.levels) == pytest.approx(2 * E.ciphertext_bytes(params, seeded=True),
                                                                      rel=0.01)
    # the keys the data owner makes are serialised seeded too (about half)
    assert 3 * E.key_switching_key_bytes(params, seeded=True) == pytest.approx(sizes["galois_keys"], rel=0.1)
    assert E.key_switching_key_bytes(params, seeded=True) == pytest.approx(sizes["relin_keys"], rel=0.1)
    assert E.public_key_bytes(params) == pytest.approx(sizes["public_key"], rel=0.1)  # TenSEAL: full form
    # the data owner loading its keys again uploads them as written; a server engine writes SEAL's
    # full form: the same keys, twice the bytes
    again = ckks.load_engine(eng.public_bytes(), eng.secret_key_bytes())
    assert again.public_bytes() == eng.public_bytes()
    loaded = ckks.load_engine(eng.public_bytes()).key_sizes()
    assert 3 * E.key_switching_key_bytes(params) == pytest.approx(loaded["galois_keys"], rel=0.1)
    assert E.public_key_bytes(params) == pytest.approx(loaded["public_key"], rel=0.1)
    # in memory: 8 bytes per coefficient per prime, never less than the compressed form
    assert E.ciphertext_bytes(params, serialised=False) == 2 * 8192 * 3 * 8 > E.ciphertext_bytes(params)


def test_a_rotation_key_at_n32768_weighs_about_176_mb():
    est = E.estimate(ckks.get_params("n32768"), [1], 10)
    assert 150 * E.MB < est.rotation_key_bytes < 220 * E.MB
    assert est.key_bytes > 2 * est.rotation_key_bytes  # relinearisation key too, and the public key
    assert "1 rotation key(s)" in est.line() and "client peak ~" in est.line()


def test_estimate_matches_a_real_n8192_run(capsys, tmp_path, iris_csv):
    job = tmp_path / "job"
    rc, out, err = run(capsys, "fit", "--data", iris_csv, "--model", "toy-centroid", "--iterations", 1,
                       "--backend", "seal", "--preset", "n8192", "--out", tmp_path / "m.json", "--keep-job", job,
                       "--quiet")
    assert rc == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("estimate (n8192): keys"))
    assert out.index(line) < out.index("backend=seal")  # printed before the run's summary
    measured = sum((job / f).stat().st_size for f in ("public_context.bin", "inputs.bin", "job.json"))
    est = load_model(tmp_path / "m.json")["info"]["run"]["estimate"]
    assert est["upload_bytes"] == pytest.approx(measured, rel=0.3)
    assert est["params"] == "n8192" and est["ciphertexts"] > 0


def test_above_the_limit_refuses_without_a_terminal_and_yes_follows_the_advice(capsys, tmp_path, iris_csv):
    model = tmp_path / "m.json"
    args = ["fit", "--data", iris_csv, "--model", "toy-centroid", "--backend", "sim", "--out", model, "--quiet",
            "--max-memory-gb", "0.01"]
    rc, out, err = run(capsys, *args)
    assert rc == 1 and "--yes" in err and "--max-memory-gb 0.01" in err and not model.exists()
    assert "keygen" not in out  # refused before any key was made
    rc, out, err = run(capsys, *args, "--yes")
    assert rc == 0, err
    assert json.loads(model.read_text())["info"]["run"]["estimate"]["client_peak_bytes"] > 0.01 * E.GB


def test_check_memory_asks_at_a_terminal():
    est = E.estimate(ckks.get_params("n16384"), [1, 2], 4)
    E.check_memory(est, limit_gb=0.01, interactive=True, ask=lambda prompt: "y")
    with pytest.raises(E.MemoryRefused, match="not confirmed"):
        E.check_memory(est, limit_gb=0.01, interactive=True, ask=lambda prompt: "n")
    with pytest.raises(E.MemoryRefused, match="pass --yes"):
        E.check_memory(est, limit_gb=0.01, interactive=False)
    E.check_memory(est, limit_gb=0.01, yes=True)
    E.check_memory(est, limit_gb=100)
    with pytest.raises(HetrainUserError, match="--max-memory-gb must be a positive"):
        E.check_memory(est, limit_gb=0)


def test_openfhe_boot_estimate_counts_its_measured_bootstrapping_keys_and_is_refused_at_the_default_limit():
    """The SEAL-based formulas count no bootstrapping keys (0.5 GB for openfhe-boot against 7.65 GiB
    measured): the estimate takes the preset's measured figures, so the default memory limit refuses a
    128-bit bootstrapping run on one machine, and the advice it gives (--yes) lets it through."""
    params = ckks.get_params("openfhe-boot")
    formula = E.estimate(params, [1, 2, 4], 4)
    est = E.with_measured(formula, "openfhe", params)
    assert formula.key_bytes < 2 * 2**30 < 7 * 2**30 < est.key_bytes
    assert est.server_peak_bytes > 13 * 2**30 and est.client_peak_bytes > 11 * 2**30
    assert E.with_measured(formula, "seal", params) == formula  # other backends: the formulas
    assert E.with_measured(E.estimate(ckks.get_params("n16384"), [1], 4), "openfhe", ckks.get_params("n16384")).key_bytes \
        == E.estimate(ckks.get_params("n16384"), [1], 4).key_bytes  # a preset without measurements
    with pytest.raises(E.MemoryRefused, match=r"--max-memory-gb 8.*--yes"):
        E.check_memory(est)
    E.check_memory(est, yes=True)
