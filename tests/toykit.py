"""Test helper: "toy-centroid", a one-level trainer that exercises the protocol (not a model).

Importing this module registers it (hetrain.models.base.register); a server process imports it by
name (protocol.steps passes a trainer's module to the server). Test modules import it, never
another test module.
"""
from __future__ import annotations

import numpy as np

from hetrain import ckks
from hetrain.ckks.pow2 import next_pow2
from hetrain.errors import HetrainUserError
from hetrain.models.base import Plan, Trainer, register

DEFAULTS = {"iterations": 1, "learning_rate": 1.0, "decay": 0.5}


@register
class ToyTrainer(Trainer):
    name = "toy-centroid"

    def __init__(self, **config) -> None:
        unknown = set(config) - set(DEFAULTS)
        if unknown:
            raise HetrainUserError(f"toy-centroid does not know config keys {sorted(unknown)}")
        super().__init__(**{**DEFAULTS, **config})

    def _layout(self, n, d):
        return next_pow2(n), next_pow2(d)

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
