"""Issue 13 item 4: the twin check's bound is derived from the job's CKKS parameters and its own circuit
(protocol/twin_bound.py); every decrypted state of every refreshing trainer is checked against it; and
`fit` refuses an unverifiable result unless --force-unverified."""
from __future__ import annotations

import os

import numpy as np
import pytest

from hetrain import ckks
from hetrain.data import load_builtin
from hetrain.protocol import TrainedModel, files
from hetrain.protocol import twin_bound as tb
from hetrain.protocol.client import TWIN_TOLERANCE
from hetrain.protocol.errors import TwinMismatch

FULL_BATCH = {"iterations": 2, "sigmoid": "deg3:16"}


def test_the_noise_of_one_operation_follows_the_ring_degree_and_the_scale():
    p16, p8, deep = ckks.PRESETS["n16384"], ckks.PRESETS["n8192"], ckks.PRESETS["n16384-deep"]
    assert tb.ckks_noise_std(p16) == pytest.approx(2 * tb.ckks_noise_std(p8), rel=0.01)  # ∝ N
    assert tb.ckks_noise_std(deep) == pytest.approx(tb.ckks_noise_std(p16) * 2.0 ** (p16.scale_bits - deep.scale_bits),
                                                    rel=1e-9)  # ∝ 1/Δ
    # σ·N·√(4/3)/Δ at N = 16384, Δ = 2^40: the order of CKKS's per-operation error
    assert 4e-8 < tb.ckks_noise_std(p16) < 7e-8


def test_the_bound_is_the_rehearsal_of_the_jobs_own_circuit_and_is_recorded(tmp_path):
    from hetrain.protocol import fit

    X, y = load_builtin("iris")
    r = fit(X, y, "mlr", FULL_BATCH, refresh="none", backend="sim", progress=False, keys=tmp_path / "K",
            workdir=tmp_path / "JOB")
    bound = r.stats["twin_bound"]
    record = r.stats  # the rehearsal's figures are in the job's private record; the bound in the model file
    assert bound == r.model.info["twin_bound"] and bound > 0
    assert r.twin_max_abs_diff <= bound
    from hetrain.protocol.client_jobs import ClientJob
    from hetrain.protocol.keys import KeyDir

    keys = KeyDir.open(tmp_path / "K")
    job = ClientJob.load(keys.job_dir(r.stats["job_id"]))
    b = job.options["twin_bound"]
    assert b["bound"] == pytest.approx(tb.SLACK * max(b["rehearsed"], b["levels"] * b["noise_std"]))
    assert b["noise_std"] == pytest.approx(tb.ckks_noise_std(job.params))
    assert record["rehearsal_s"] is not None


def test_a_small_tampering_that_the_old_relative_rule_let_through_is_refused(tmp_path):
    """+3 × the bound on every weight: below the fixed 1e-2 × max(1, |twin|) of earlier versions, far
    above what an honest run of this job shows."""
    from hetrain.protocol import fit
    from hetrain.protocol.keys import KeyDir
    from hetrain.protocol.steps import decrypt

    X, y = load_builtin("iris")
    r = fit(X, y, "mlr", FULL_BATCH, refresh="none", backend="sim", progress=False, keys=tmp_path / "K",
            workdir=tmp_path / "JOB")
    bound = r.stats["twin_bound"]
    delta = 3 * bound
    assert delta < TWIN_TOLERANCE  # the old rule (relative to max(1, |twin|) >= 1) would have released it
    keys = KeyDir.open(tmp_path / "K")
    engine = keys.job_engine(())
    out = tmp_path / "JOB" / files.OUTPUTS
    outputs = files.read_ciphertext_map(out, engine, "outputs")
    files.write_ciphertext_map(out, engine, {k: [engine.add(ct, delta) for ct in v] for k, v in outputs.items()})
    with pytest.raises(TwinMismatch, match="could not be verified"):
        decrypt(keys, tmp_path / "JOB")
    forced = decrypt(keys, tmp_path / "JOB", force_unverified=True)
    assert forced.stats["verified"] is False and forced.model.info["verified"] is False


@pytest.fixture
def tamper_from_iteration():
    os.environ["HETRAIN_TEST_TAMPER_STEP"] = "2"
    yield
    del os.environ["HETRAIN_TEST_TAMPER_STEP"]


@pytest.mark.parametrize("layout", ["dvr", "diagonal"])
def test_an_mlp_server_that_returns_other_values_is_stopped_at_the_next_refresh(tmp_path, layout,
                                                                              tamper_from_iteration):
    """The refreshed states of both mlp layouts are compared with the twin after as many iterations
    (Trainer.state_weights, Trainer.twin_after): the run stops there, nothing is released."""
    from hetrain.protocol import fit

    X, y = load_builtin("iris")
    with pytest.raises(TwinMismatch, match=r"the state after iteration [2-4] .*could not be verified"):
        fit(X, y, "mlp", {"layout": layout, "iterations": 4}, refresh="client", backend="sim", progress=False,
            trainer_modules=("tamper_hook",))


@pytest.mark.slow  # SEAL end to end (n16384, client refresh)
def test_under_seal_a_tampered_refresh_of_the_network_is_stopped(tamper_from_iteration):
    """The same mid-run check under real CKKS: a tampered refreshed state is stopped (the honest SEAL run
    of this configuration passes every refresh check: test_refresh.py's mlp-diagonal SEAL test)."""
    from hetrain.protocol import fit
    from sklearn.model_selection import train_test_split

    X, y = load_builtin("iris")
    Xtr, _, ytr, _ = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)  # 120 rows fit n16384
    cfg = {"layout": "diagonal", "hidden": [4], "iterations": 4, "sigmoid": "deg3:8", "output_sigmoid": "deg1:8",
           "hidden_learning_rate": 2.0, "init_gain": 2.0}
    with pytest.raises(TwinMismatch, match=r"the state after iteration [2-4] .*could not be verified"):
        fit(Xtr, ytr, "mlp", cfg, preset="n16384", backend="seal", refresh="client", progress=False,
            trainer_modules=("tamper_hook",))


def test_an_honest_mlp_run_with_refreshes_passes_every_mid_run_check():
    from hetrain.protocol import fit

    X, y = load_builtin("iris")
    r = fit(X, y, "mlp", {"layout": "dvr", "iterations": 4}, refresh="client", backend="sim", progress=False)
    assert r.stats["refresh"]["refreshes"] >= 2 and r.stats["verified"] is True


def test_fit_with_force_unverified_releases_a_tampered_run_marked_unverified(tamper_from_iteration):
    from hetrain.protocol import fit

    X, y = load_builtin("iris")
    r = fit(X, y, "mlp", {"layout": "dvr", "iterations": 4}, refresh="client", backend="sim", progress=False,
            trainer_modules=("tamper_hook",), force_unverified=True)
    assert r.stats["verified"] is False and r.model.info["verified"] is False


def test_the_fit_command_refuses_an_unverifiable_result_and_writes_it_only_when_forced(tmp_path, monkeypatch, capsys):
    """CLI: exit 1 and no file; with --force-unverified the file, marked unverified, exit 6. (The job's
    bound is made impossibly small here, so that the honest run's CKKS noise already exceeds it.)"""
    from hetrain.cli.fit import UNVERIFIED_EXIT
    from hetrain.cli.main import main
    from hetrain.protocol.client_jobs import ClientJob

    monkeypatch.setattr(ClientJob, "twin_bound", property(lambda self: 1e-300))
    X, y = load_builtin("iris")
    data = tmp_path / "iris.csv"
    np.savetxt(data, np.column_stack([y, X]), delimiter=",")
    args = ["fit", "--data", str(data), "--backend", "seal", "--preset", "n8192", "--refresh", "none",
            "--iterations", "1", "--sigmoid", "deg3:16", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a.json")]) == 1
    assert "could not be verified" in capsys.readouterr().err and not (tmp_path / "a.json").exists()
    assert main(args + ["--out", str(tmp_path / "b.json"), "--force-unverified"]) == UNVERIFIED_EXIT
    assert "UNVERIFIED" in capsys.readouterr().out
    assert TrainedModel.load(tmp_path / "b.json").info["verified"] is False


def test_the_rehearsal_writes_nothing_to_the_users_log(tmp_path):
    """The client rehearses a mini-batch job before its keys are made; the validation lines the user reads
    are the real run's only: one 'epoch E: validation …' line per epoch trained, none from the rehearsal."""
    from hetrain.protocol import fit

    X, y = load_builtin("iris")
    lines: list[str] = []
    r = fit(X, y, "mlr", {"epochs": 2, "patience": 5}, refresh="client", backend="sim", progress=False,
            log=lines.append, keys=tmp_path / "K", workdir=tmp_path / "JOB")
    assert r.stats["twin_bound"] > 0  # the rehearsal ran
    epochs = [line for line in lines if line.startswith("epoch ") and "validation accuracy" in line]
    assert len(epochs) == 2 == sum(1 for h in r.stats["history"] if h.get("kind") == "epoch"), lines


def test_the_rehearsal_adds_the_engines_own_bootstrap_error(tmp_path):
    """A bootstrapping engine that declares a larger bootstrap error (an OpenFHE preset's measured one,
    ckks/openfhe_backend.OpenFHEConfig.bootstrap_error) gets a rehearsal, and so a bound, that grows with it;
    the sim's fixed 1e-5 would underestimate a low-precision preset."""
    from hetrain.ckks.sim_backend import BOOTSTRAP_NOISE_STD
    from hetrain.protocol import fit
    from hetrain.protocol.client_jobs import ClientJob
    from hetrain.protocol.keys import KeyDir

    X, y = load_builtin("iris")
    cfg = {"epochs": 2, "batch_size": 64, "learning_rate": 0.5, "patience": 0}
    bounds = {}
    for noise in (None, 1e-3):
        keys = tmp_path / f"K{noise}"
        opts = {} if noise is None else {"bootstrap_noise": noise}
        KeyDir.create(keys, "sim", "n16384", seed=0, bootstrap_level=7, **opts)  # INSECURE: planning only
        r = fit(X, y, "mlr", cfg, backend="sim", refresh="bootstrap", keys=keys, progress=False, plan=False,
                validation_fraction=0.2)
        assert r.stats["bootstraps"] > 0
        b = ClientJob.load(KeyDir.open(keys).job_dir(r.stats["job_id"])).options["twin_bound"]
        assert b["bootstrap_noise_std"] == (BOOTSTRAP_NOISE_STD if noise is None else noise)
        bounds[noise] = b
    assert bounds[1e-3]["rehearsed"] > 10 * bounds[None]["rehearsed"]
    assert bounds[1e-3]["bound"] > 10 * bounds[None]["bound"]


def test_sim_refuses_a_bootstrap_noise_that_is_not_a_standard_deviation():
    with pytest.raises(ValueError, match="bootstrap_noise must be a finite standard deviation"):
        ckks.create_engine("sim", "n8192", bootstrap_level=1, bootstrap_noise=-1.0)
