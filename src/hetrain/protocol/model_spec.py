"""A plaintext model as inference layers (preprocessing folded in) and its public spec.

Case (b) of encrypted inference: the model owner keeps the model; the query owner encrypts raw
feature rows. The query owner does not know the training preprocessing (the per-feature means and
deviations of the training data are the model owner's), so it is FOLDED into the first layer:
    x_std = (x − mean)/sd·scale  ⇒  A·x_std + b = (A·diag(scale/sd))·x + (b − A·(mean·scale/sd)).
mlp-dvr's projection Q (x ↦ Q·x_std) is folded the same way (A₁·Q). Nothing else needs publishing.

The spec (``model_spec``) is what the model owner publishes so that the query owner makes keys and
ciphertexts that fit: feature and class counts, class labels, layer sizes and activation degrees,
the levels the circuit needs, the packing, and that no rotation (Galois key) is needed. No weight.
"""
from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np

from hetrain.circuits.inference import Layer, levels_needed
from hetrain.errors import HetrainUserError, HetrainWarning
from hetrain.models.base import get_trainer

SPEC_FORMAT = "hetrain-model-spec"
SPEC_VERSION = 1
PACKING = "column"


class InferenceError(HetrainUserError):
    """A model, query bundle or scores file cannot be used for (encrypted) inference as asked."""


def _scaled(A, b, act):
    """The layer with its activation evaluated in the unit variable x/bound (1/bound folded into A, b)."""
    if act is None:
        return Layer(np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64), None)
    s = act.bound
    return Layer(np.asarray(A) / s, np.asarray(b) / s, tuple(act.unit_coeffs()))


def network_layers(model) -> list[Layer]:
    """The model's layers on its PREPROCESSED inputs; the last one gives linear class scores (the
    output sigmoid is monotone, so argmax is that of the linear scores). InferenceError for a
    model kind without an encrypted-inference form."""
    trainer = get_trainer(model.model)(**model.config)
    w = model.weights
    if model.model in ("mlr", "mlr-minibatch"):
        W = np.asarray(w["W"])
        return [Layer(W[:, 1:], W[:, 0])]  # bias first (mlr_twin.add_bias)
    if model.model == "mlp-diagonal":
        W1, W2 = np.asarray(w["W1"]), np.asarray(w["W2"])
        H = W1.shape[0]
        slope = trainer.out_sig.coeffs[1] if len(trainer.out_sig.coeffs) > 1 else 0.0
        if not slope > 0:
            raise InferenceError("mlp-diagonal: the output activation is not increasing; argmax of linear scores "
                                 "would not be the model's")
        # σ_o(W2·[σ_h(W1·[x, 1]), hb]): bias of layer 1 is its last column; hb folds into layer 2's bias
        return [_scaled(W1[:, :-1], W1[:, -1], trainer.hidden_sig), Layer(W2[:, :H], W2[:, H] * trainer.hb)]
    if model.model == "mlp-dvr":
        K = trainer.K
        layers = [_scaled(w[f"W{l}"], w[f"b{l}"], trainer.acts[l - 1]) for l in range(1, K)]
        layers.append(Layer(np.asarray(w[f"W{K}"], dtype=np.float64), np.asarray(w[f"b{K}"], dtype=np.float64)))
        if trainer._projection is not None:
            first = layers[0]
            layers[0] = Layer(first.A @ trainer._projection, first.b, first.act)
        return layers
    raise InferenceError(f"model {model.model!r} has no encrypted-inference form; supported: mlr, mlp-dvr, "
                         "mlp-diagonal")


def folded_layers(model) -> list[Layer]:
    """``network_layers`` with the recorded preprocessing folded into the first layer: the layers
    take RAW feature rows (case (b): the query owner does not know the preprocessing).
    Warns (HetrainWarning) when the model clips its inputs (mlp input_clip), which no encrypted
    circuit can do: rows beyond the clip may then be scored differently."""
    pre = model.preprocessing
    layers = network_layers(model)
    if model.model == "mlp-dvr" and model.config.get("input_clip") is not None:
        warnings.warn(f"this model clips standardised inputs to ±{model.config['input_clip']}; encrypted inference "
                      "cannot clip, so queries with larger values may be scored differently", HetrainWarning,
                      stacklevel=2)
    s = pre.scale / pre.std
    first = layers[0]
    A = first.A * s[None, :]
    b = first.b - A @ pre.mean
    return [Layer(A, b, first.act)] + layers[1:]


def model_spec(model, layers: list[Layer] | None = None) -> dict:
    """The public description of ``model`` for query owners (no weights): see module doc."""
    layers = folded_layers(model) if layers is None else layers
    spec = {"format": SPEC_FORMAT, "version": SPEC_VERSION, "model": model.model,
            "n_features": int(model.n_features), "n_classes": len(model.classes),
            "classes": [int(c) for c in model.classes],
            "layer_sizes": [int(layers[0].A.shape[1])] + [int(l.A.shape[0]) for l in layers],
            "activation_degrees": [len(l.act) - 1 if l.act else 1 for l in layers],
            "levels": levels_needed(layers), "packing": PACKING, "rotations": [],
            "relinearisation": any(l.act and len(l.act) > 2 for l in layers)}
    spec["spec_id"] = spec_id(spec)
    return spec


def spec_id(spec: dict) -> str:
    """Content id of a model spec: the first 16 hex digits of the SHA-256 of its JSON (sorted keys) without
    ``spec_id`` itself.
    """
    body = {k: v for k, v in spec.items() if k != "spec_id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def check_spec(spec, where: str = "model spec") -> dict:
    """InferenceError unless ``spec`` is a well-formed spec whose id matches its content."""
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT or spec.get("version") != SPEC_VERSION:
        raise InferenceError(f"{where} is not a hetrain model spec of version {SPEC_VERSION} (make one with "
                             "`hetrain model-spec --model MODEL.json --out SPEC.json`)")
    for key in ("n_features", "n_classes", "levels"):
        v = spec.get(key)
        if not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 20):
            raise InferenceError(f"{where}: {key} must be a positive integer, got {v!r}")
    classes = spec.get("classes")
    if not (isinstance(classes, list) and len(classes) == spec["n_classes"]
            and all(isinstance(c, int) and not isinstance(c, bool) for c in classes)):
        raise InferenceError(f"{where}: classes must list n_classes integer labels")
    if spec.get("packing") != PACKING:
        raise InferenceError(f"{where}: packing {spec.get('packing')!r} is not {PACKING!r}")
    if spec.get("spec_id") != spec_id(spec):
        raise InferenceError(f"{where} was edited or is corrupted (its spec_id does not match its content)")
    return spec
