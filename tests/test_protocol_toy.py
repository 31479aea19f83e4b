"""The toy trainer of the protocol tests (tests/toykit.py) against its own twin.

"toy-centroid": W_c = Σ_t decay^(t-1) · (lr/n) Σ_i y_ic x_i — class-mean directions, computed on
ciphertexts with one ct×ct product, a rotate-and-sum over rows and one scalar product per iteration.
It uses levels (iterations + 1), rotation keys and the progress callback like a real trainer.
Other test modules use it through ``from toykit import ToyTrainer``.
"""
from __future__ import annotations

import numpy as np
import pytest

from hetrain import ckks
from hetrain.errors import HetrainUserError

from toykit import ToyTrainer


def test_toy_trainer_matches_its_twin_in_process(rng):
    X, Y = rng.normal(size=(20, 5)), np.eye(3)[rng.integers(0, 3, 20)]
    t = ToyTrainer(iterations=2)
    eng = ckks.create_engine("sim", "n16384", rotations=t.plan(20, 5, 3, ckks.get_params("n16384")).rotation_steps)
    inputs, job = t.client_encrypt(eng, X, Y)
    w = t.client_decrypt(eng, t.server_train(eng, inputs, job), job)["W"]
    np.testing.assert_allclose(w, t.twin(X, Y)["W"], atol=1e-12)  # sim without noise is exact


def test_toy_trainer_rejects_unknown_keys():
    with pytest.raises(HetrainUserError, match="bogus"):
        ToyTrainer(bogus=1)
