"""A tiny trainer that follows the Trainer contract, so the protocol can be tested without the real ones.

"toy-centroid": W_c = Σ_t decay^(t-1) · (lr/n) Σ_i y_ic x_i — class-mean directions, computed on
ciphertexts with one ct×ct product, a rotate-and-sum over rows and one scalar product per iteration.
It uses levels (iterations + 1), rotation keys and the progress callback like a real trainer.
Other test modules import it: ``from test_protocol_toy import ToyTrainer``.
"""
from __future__ import annotations

import numpy as np
import pytest

from hetrain import ckks
from hetrain.errors import HetrainUserError
from hetrain.models.base import Plan, Trainer, register

DEFAULTS = {"iterations": 1, "learning_rate": 1.0, "decay": 0.5}


def _pow2(k: int) -> int:
    return 1 << max(0, (k - 1).bit_length())


@register
class ToyTrainer(Trainer):
    name = "toy-centroid"

    def __init__(self, **config) -> None:
        unknown = set(config) - set(DEFAULTS)
        if unknown:
            raise HetrainUserError(f"toy-centroid does not know config keys {sorted(unknown)}")
        super().__init__(**{**DEFAULTS, **config})

    def _layout(self, n, d):
        return _pow2(n), _pow2(d)

    def plan(self, n_samples, n_features, n_classes, params):
        npow, dp = self._layout(n_samples, n_features)
        if npow * dp > params.slots:
            raise HetrainUserError(f"{n_samples} x {n_features} does not fit in {params.slots} slots")
        it = int(self.config["iterations"])
        return Plan(levels_needed=it + 1, levels_available=params.levels,
                    rotation_steps=ckks.rotate_sum_steps(npow, dp), iterations=it,
                    iterations_that_fit=max(0, params.levels - 1),
                    levels_per_iteration={"gradient": 2, "decay": 1}, n_input_ciphertexts=1 + n_classes)

    def client_encrypt(self, engine, X, Y, *, refresh=False):
        n, d = X.shape
        npow, dp = self._layout(n, d)
        rows = np.zeros((n, dp))
        rows[:, :d] = X
        inputs = {"x": [engine.encrypt(rows.ravel())],
                  "y": [engine.encrypt(np.repeat(Y[:, c], dp)) for c in range(Y.shape[1])]}
        return inputs, {"model": self.name, "config": self.config, "n": n, "d": d, "npow": npow, "dp": dp}

    def server_train(self, engine, inputs, job, progress=None):
        x = inputs["x"][0]
        it, lr, decay = self.config["iterations"], self.config["learning_rate"], self.config["decay"]
        out = []
        for y in inputs["y"]:
            g = engine.sum_slots(y * x, job["npow"], job["dp"]) * (lr / job["n"])
            w = g
            for _ in range(it - 1):
                w = w * decay + g
            out.append(w)
        for t in range(1, it + 1):
            if progress:
                progress(t, it, f"iteration {t}")
        return {"w": out}

    def client_decrypt(self, engine, outputs, job):
        return {"W": np.stack([engine.decrypt(w)[: job["d"]] for w in outputs["w"]])}

    def twin(self, X, Y):
        g = Y.T @ X * (self.config["learning_rate"] / X.shape[0])
        w = g
        for _ in range(self.config["iterations"] - 1):
            w = w * self.config["decay"] + g
        return {"W": w}

    def predict_scores(self, weights, X):
        return X @ weights["W"].T


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
