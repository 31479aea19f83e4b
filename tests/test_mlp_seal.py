"""mlp-dvr under real CKKS (SEAL): the decrypted network matches the plaintext twin.

Tolerance: measured errors are ~3e-6 (n16384-deep, scale 2^35, 16 samples x 8 features) and
~1e-5 (n32768, two hidden layers, 14 levels deep). Noise grows with the circuit: each gradient
entry sums noisy δ·x over the samples, and the masked polynomials leak noise·garbage² from the
slots rotate-and-sum leaves behind. 1e-4 is >= 10x the measured error, while a wrong slot, sign
or scale shows up at >= 1e-2 (the step itself moves weights by > 0.05, asserted below). On the
seed workload (128 x 400 features, bench/seed_nn.py) the gap grows to ~2e-4, as the sim
backend's CKKS-noise model predicts (~5e-5).
"""
from __future__ import annotations

import numpy as np
import pytest

from hetrain import ckks
from hetrain.models.mlp_dvr import MLPTrainer


def data(n=16, d=8, c=3, seed=2):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.eye(c)[np.arange(n) % c]


def train_seal(trainer, X, Y, preset, via_bytes=True):
    n, d = X.shape
    plan = trainer.plan(n, d, Y.shape[1], ckks.get_params(preset))
    plan.check(ckks.get_params(preset))
    client = ckks.create_engine("seal", preset, rotations=plan.rotation_steps)
    inputs, job = trainer.client_encrypt(client, X, Y)
    job["data_shape"] = [n, d, Y.shape[1]]
    if not via_bytes:  # N=32768: a second copy of the Galois keys would cost gigabytes
        return trainer.client_decrypt(client, trainer.server_train(client, inputs, job), job)
    # the server gets public material only and cannot decrypt
    server = ckks.load_engine(client.public_bytes())
    assert not server.has_secret_key
    moved = {k: [server.deserialize(client.serialize(ct)) for ct in v] for k, v in inputs.items()}
    out = trainer.server_train(server, moved, job)
    with pytest.raises(ckks.SecretKeyUnavailable):
        server.decrypt(out["W1"][0])
    back = {k: [client.deserialize(server.serialize(ct)) for ct in v] for k, v in out.items()}
    return trainer.client_decrypt(client, back, job)


def check(trainer, W, X, Y, tol):
    twin = trainer.twin(X, Y)
    init = trainer.initial_weights(X.shape[1], Y.shape[1])
    diff = max(float(np.max(np.abs(W[k] - twin[k]))) for k in twin)
    step = max(float(np.max(np.abs(twin[k] - init[k]))) for k in twin)
    assert step > 0.05, "training must move the weights for this comparison to mean anything"
    assert diff < tol, f"decrypted weights differ from the twin by {diff:.2e}"


def test_one_hidden_layer_n16384_deep():
    X, Y = data()
    tr = MLPTrainer(hidden=[4], iterations=1, momentum="none", learning_rate=2.0)
    check(tr, train_seal(tr, X, Y, "n16384-deep"), X, Y, 1e-4)


@pytest.mark.slow
def test_two_hidden_layers_n32768():
    # the full non-interactive iteration of a two-hidden-layer network: 14 of the 19 levels
    X, Y = data(n=16, d=8, c=3)
    tr = MLPTrainer(hidden=[4, 4], iterations=1, learning_rate=2.0)
    check(tr, train_seal(tr, X, Y, "n32768", via_bytes=False), X, Y, 1e-4)


def test_minibatch_step_with_label_smoothing_n16384_deep():
    # hidden 9 -> P = 16, 32 samples per ciphertext: 64 rows are 2 groups, batch_size 32 trains on the first
    # (permuted) group only, with step lr / 32 in its output mask and targets 0.1 / 0.9
    X, Y = data(n=64)
    tr = MLPTrainer(hidden=[9], iterations=1, momentum="none", learning_rate=2.0, batch_size=32, label_smoothing=0.1)
    W = train_seal(tr, X, Y, "n16384-deep")
    check(tr, W, X, Y, 1e-4)
    full = MLPTrainer(**{**tr.config, "batch_size": None}).twin(X, Y)
    assert max(float(np.max(np.abs(W[k] - full[k]))) for k in full) > 1e-2  # the batch is not the full data
