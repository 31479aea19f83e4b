"""The server side cannot decrypt, and nothing the client uploads holds the secret key (real SEAL)."""
from __future__ import annotations

import numpy as np
import pytest
from toykit import ToyTrainer  # noqa: F401  (registers "toy-centroid")

from hetrain import ckks
from hetrain.ckks.container import unpack
from hetrain.protocol import BundleError, files
from hetrain.protocol.server import run_job

from jobkit import make_job


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A SEAL n8192 job bundle on disk (written by the data owner's encrypt step, its key directory
    elsewhere), the data owner's kit (holding the secret key) and the rows it encrypted."""
    d = tmp_path_factory.mktemp("job")
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    kit = make_job(tmp_path_factory.mktemp("owner"), X, y, "toy-centroid", {}, backend="seal", preset="n8192",
                   jobdir=d)
    return d, kit, kit.job.Xp  # the preprocessed rows are what was encrypted


def test_bundle_holds_no_secret_key_bytes(job):
    d, kit, _ = job
    _, parts = unpack(kit.engine.secret_key_bytes(), expect_kind="secret_key")
    sk = parts["sk"]
    assert len(sk) > 1000
    probes = [sk[i:i + 64] for i in range(100, len(sk) - 64, len(sk) // 8)]
    written = sorted(p.name for p in d.iterdir())
    assert written == sorted([files.PUBLIC_CONTEXT, files.INPUTS, files.JOB, files.MANIFEST])
    for p in d.iterdir():
        blob = p.read_bytes()
        assert b'"secret_key"' not in blob
        assert not any(probe in blob for probe in probes), f"{p.name} contains secret-key bytes"


def test_server_engine_cannot_decrypt_and_its_own_key_gives_garbage(job):
    d, kit, X = job
    _, public, inputs, _ = files.read_job_files(d)
    server = ckks.load_engine(public)
    assert not server.has_secret_key
    ct = files.read_ciphertext_map(inputs, server, "inputs")["x"][0]
    with pytest.raises(ckks.SecretKeyUnavailable):
        server.decrypt(ct)
    with pytest.raises(ckks.SecretKeyUnavailable):
        server.secret_key_bytes()
    # A key the server makes itself (same parameters) does not open the client's ciphertexts.
    # Bypass the key-id check on purpose to show the decryption itself is meaningless.
    rogue = ckks.create_engine("seal", "n8192")
    garbage = rogue._decrypt(ckks.Ciphertext(rogue, ct.level, ct.data))[:16]
    truth = kit.engine.decrypt(ct)[:16]
    np.testing.assert_allclose(truth[:4], X[0], atol=1e-6)  # the rightful key reads the first row
    assert np.max(np.abs(garbage - truth)) > 1e3


def test_server_trains_with_public_material_only(job, tmp_path):
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(job[0], d)
    kit = job[1]
    stats = run_job(d)  # in-process: the same code the server process runs
    assert "secret key=no" in stats["engine"]
    outputs = files.read_ciphertext_map(d / files.OUTPUTS, kit.engine, "server outputs")
    w = kit.job.trainer.client_decrypt(kit.engine, outputs, {"d": 4})["W"]
    assert w.shape == (3, 4) and np.all(np.isfinite(w))


@pytest.mark.parametrize("target, damage, message", [
    (files.PUBLIC_CONTEXT, "flip", "does not match the manifest"),
    (files.MANIFEST, "truncate", "corrupted"),
    (files.JOB, "delete", "job description not found"),
])
def test_damaged_bundle_is_refused(job, tmp_path, target, damage, message):
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(job[0], d)
    p = d / target
    if damage == "flip":
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 0x55
        p.write_bytes(bytes(b))
    elif damage == "truncate":
        p.write_bytes(p.read_bytes()[:20])
    else:
        p.unlink()
    with pytest.raises(BundleError, match=message):
        run_job(d)


def test_server_peak_memory_is_its_own_not_the_parents():
    """A fork+exec child inherits the parent's ru_maxrss on Linux; the server must report its own peak."""
    import subprocess
    import sys

    import numpy as np

    ballast = np.ones(40_000_000)  # ~320 MB in this (parent) process
    ballast += 1
    code = "from hetrain.protocol.server import peak_rss_bytes; print(peak_rss_bytes())"
    child_peak = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child_peak < 250e6, child_peak
    del ballast
