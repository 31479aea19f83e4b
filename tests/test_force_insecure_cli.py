"""`--force-insecure` on keygen / fit / encrypt / demo, and the server following the data owner's recorded
choice (SEAL on the INSECURE test ring n4096-test: N=4096 with 400 modulus bits, 109 allowed at 128 bits)."""
from __future__ import annotations

import json

import pytest

from hetrain import ckks
from hetrain.protocol import server as server_mod
from jobkit import run_cli  # noqa: E402

pytestmark = pytest.mark.insecure
WEAK = "n4096-test"


def run(capsys, *argv):
    return run_cli(capsys, *argv)


def test_test_preset_is_below_128_bits_and_never_chosen_by_auto():
    p = ckks.get_params(WEAK)
    assert WEAK in ckks.TEST_PRESETS and WEAK not in ckks.PRESETS
    assert not p.is_128_bit_secure() and p.levels == 7 and p.slots == 2048
    with pytest.raises(ValueError, match="n4096-test"):  # the unknown-preset message lists the test presets
        ckks.get_params("n4096")


@pytest.mark.parametrize("backend", ["seal", "sim"])
def test_public_context_records_the_owners_choice(backend):
    forced = ckks.create_engine(backend, WEAK, force_insecure=True)
    assert ckks.owner_forced_insecure(forced.public_bytes())
    server = ckks.load_engine(forced.public_bytes(), force_insecure=ckks.owner_forced_insecure(forced.public_bytes()))
    assert server.forced_insecure and not server.has_secret_key
    # without the recorded choice the weak context is refused, as before
    meta, parts = ckks.container.unpack(forced.public_bytes())
    meta = {k: v for k, v in meta.items() if k not in ("parts", "forced_insecure")}
    bare = ckks.container.pack(meta, parts)
    assert not ckks.owner_forced_insecure(bare)
    with pytest.raises(ckks.InsecureParameters, match="force-insecure"):
        ckks.load_engine(bare, force_insecure=ckks.owner_forced_insecure(bare))
    secure = ckks.create_engine(backend, "n8192")
    assert not ckks.owner_forced_insecure(secure.public_bytes())


def test_models_lists_the_test_preset_as_insecure(capsys):
    rc, out, _ = run(capsys, "models")
    line = next(ln for ln in out.splitlines() if ln.split()[:1] == [WEAK])
    assert rc == 0 and "INSECURE" in line and "--force-insecure" in line and "N=4096" in line


def test_fit_refuses_a_weak_preset_without_the_option(capsys, tmp_path, iris_csv):
    rc, out, err = run(capsys, "fit", "--data", iris_csv, "--preset", WEAK, "--out", tmp_path / "m.json", "--quiet")
    assert rc == 1 and "--force-insecure" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m.json").exists()


def test_fit_trains_a_seal_job_on_a_forced_weak_preset_end_to_end(capsys, tmp_path, iris_csv, caplog):
    """keys, encryption, the server process (which loads the weak public context because the owner's
    choice is recorded in it), client refreshes and the twin check, all under real SEAL."""
    model = tmp_path / "m.json"
    rc, out, err = run(capsys, "fit", "--data", iris_csv, "--preset", WEAK, "--force-insecure", "--out", model,
                       "--quiet", "--keep-job", tmp_path / "job")
    assert rc == 0, err
    assert "params=n4096-test" in out and "backend=seal" in out
    assert json.loads(model.read_text())  # the model file was written
    diff = float(out.strip().splitlines()[-1].split("=")[1])
    assert diff < 1e-3  # the twin check passed (its bound for this job is ~3e-4)
    assert "train accuracy (decrypted model): 0." in out and "INSECURE" in "".join(r.getMessage() for r in caplog.records)
    # the server's own log says it ran on forced weak parameters
    stats = json.loads((tmp_path / "job" / "server_stats.json").read_text())
    assert "N=4096" in stats["engine"] and stats["engine_has_secret_key"] is False


def test_keygen_then_encrypt_needs_the_option_again(capsys, tmp_path, iris_csv):
    keys = tmp_path / "keys"
    rc, out, err = run(capsys, "keygen", "--out", keys, "--preset", WEAK)
    assert rc == 1 and "--force-insecure" in err and not (keys / "secret.key").exists()
    rc, out, err = run(capsys, "keygen", "--out", keys, "--preset", WEAK, "--force-insecure")
    assert rc == 0 and "INSECURE" in out
    rc, out, err = run(capsys, "encrypt", "--keys", keys, "--data", iris_csv, "--out", tmp_path / "job")
    assert rc == 1 and "--force-insecure" in err and "n4096-test" in err
    assert not (tmp_path / "job" / "inputs.bin").exists()
    rc, out, err = run(capsys, "encrypt", "--keys", keys, "--data", iris_csv, "--out", tmp_path / "job",
                       "--force-insecure", "--refresh", "none", "--iterations", 1, "--quiet")
    assert rc == 0, err
    # the server side loads the job without being told anything: the context records the owner's choice
    stats = server_mod.run_job(tmp_path / "job")
    assert stats["engine_has_secret_key"] is False and stats["server_train_s"] > 0
    # fit with that key directory: the same rule
    rc, out, err = run(capsys, "fit", "--data", iris_csv, "--keys", keys, "--out", tmp_path / "m.json", "--quiet")
    assert rc == 1 and "--force-insecure" in err


def test_demo_takes_the_option(capsys):
    rc, out, err = run(capsys, "demo", "--dataset", "iris", "--preset", WEAK, "--refresh", "none", "--iterations", 1,
                       "--quiet")
    assert rc == 1 and "--force-insecure" in err
    rc, out, err = run(capsys, "demo", "--dataset", "iris", "--preset", WEAK, "--refresh", "none", "--iterations", 1,
                       "--quiet", "--force-insecure")
    assert rc == 0, err
    assert float(out.split("encrypted_accuracy=")[1].split()[0]) > 0.5
