"""A released (decrypted, rounded) model: plaintext weights + the preprocessing to apply first."""
from __future__ import annotations

import dataclasses
import os

import numpy as np

import hetrain
from hetrain.data.validate import align_labels, check_features, check_labels
from hetrain.errors import HetrainUserError
from hetrain.models.base import get_trainer

from . import files
from .errors import ModelFileError
from .preprocess import Preprocessor, record_classes


def softmax(scores) -> np.ndarray:
    """Row-wise softmax of per-class scores (n × c): rows sum to 1 and follow the argmax. Not
    calibrated (the trainers fit one sigmoid per class, one-vs-rest)."""
    s = np.asarray(scores, dtype=np.float64)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def model_info(backend: str, params, **extra) -> dict:
    """The ``info`` record of a model file, for every writer (one schema: ``params`` is always the
    parameters' dict, with its ``name``). ``params``: a CKKSParams, its dict, or a preset name."""
    if hasattr(params, "to_dict"):
        params = params.to_dict()
    elif isinstance(params, str):
        params = {"name": params}
    return {"backend": backend, "params": dict(params), "hetrain_version": hetrain.__version__, **extra}


@dataclasses.dataclass
class TrainedModel:
    """A released model: trainer ``model`` (registry name) and ``config``, plaintext ``weights`` (name ->
    array), the ``preprocessing`` to apply to raw rows first, the ``key_id`` it was trained under (audit
    trail) and ``info`` (backend, params, release, timings). ``save``/``load`` write and read the model file.
    """
    model: str                        # registry name of the trainer
    config: dict
    weights: dict[str, np.ndarray]
    preprocessing: Preprocessor
    key_id: str                       # id of the key set it was trained under (audit trail)
    info: dict = dataclasses.field(default_factory=dict)  # backend, params, release, timings...

    @property
    def classes(self) -> list:
        """Class labels in the order of the score columns: ints, or the text labels as trained on."""
        return self.preprocessing.classes

    @property
    def n_features(self) -> int:
        """Raw features a row must have (d), as recorded by the preprocessing."""
        return self.preprocessing.n_features

    @property
    def params_name(self) -> str:
        """Name of the CKKS parameters it was trained under ('?' if the file does not say)."""
        p = self.info.get("params")
        return str(p.get("name", "?")) if isinstance(p, dict) else str(p) if p is not None else "?"

    def validate(self, where: str = "model") -> None:
        """ModelFileError unless the weights are finite and have the shapes the model's own config,
        class count and feature count give (and the trainer accepts the config)."""
        try:
            trainer = get_trainer(self.model)(**self.config)
        except HetrainUserError as exc:
            raise ModelFileError(f"{where}: {exc}") from None
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelFileError(f"{where}: model {self.model!r} does not accept its recorded config: {exc}") from None
        if not isinstance(self.weights, dict) or not self.weights:
            raise ModelFileError(f"{where}: the model holds no weights")
        for name, w in self.weights.items():
            w = np.asarray(w, dtype=np.float64)
            bad = ~np.isfinite(w)
            if bad.any():
                raise ModelFileError(f"{where}: weights {name!r} hold {int(bad.sum())} NaN or infinite value(s): "
                                     "the model is unusable (retrain it)")
        expected = trainer.weight_shapes(self.n_features, len(self.classes))
        if expected is None:
            return
        got = {k: tuple(int(n) for n in np.shape(v)) for k, v in self.weights.items()}
        want = {k: tuple(int(n) for n in v) for k, v in expected.items()}
        if got != want:
            raise ModelFileError(
                f"{where}: weight shapes {_shapes(got)} do not match model {self.model} with {self.n_features} "
                f"features and {len(self.classes)} classes, which needs {_shapes(want)}")

    def predict_scores(self, X) -> np.ndarray:
        """Per-class scores (n x c) from raw features: the recorded preprocessing is applied first.
        Raises DataError for malformed rows or another feature count, ModelFileError when the weights give scores
        of another shape than n × c.
        """
        Xp = self.preprocessing.transform(check_features(X))
        trainer = get_trainer(self.model)(**self.config)
        scores = np.asarray(trainer.predict_scores(self.weights, Xp))
        if scores.shape != (Xp.shape[0], len(self.classes)):
            raise ModelFileError(f"model weights give scores of shape {scores.shape}, expected "
                                 f"{(Xp.shape[0], len(self.classes))}: weights and preprocessing do not match")
        return scores

    def predict(self, X) -> np.ndarray:
        """The class label of each row (n,): the labels as trained on (text labels come back as text)."""
        return np.asarray(self.classes)[np.argmax(self.predict_scores(X), axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """``softmax`` of ``predict_scores`` (n × c, columns in the order of ``classes``)."""
        return softmax(self.predict_scores(X))

    def accuracy(self, X, y) -> float:
        """Fraction of rows of ``X`` (n × d) whose prediction equals ``y`` (n,). Raises DataError for a wrong feature
        count, a wrong number of labels, or labels not seen in training.
        """
        X = check_features(X)
        self.preprocessing.transform(X)  # a wrong feature count first: it explains odd labels too
        y = align_labels(check_labels(y, n_rows=np.shape(X)[0]), self.classes)
        self.preprocessing.label_index(y)  # DataError for labels not seen in training
        return float(np.mean(self.predict(X) == y))

    def to_record(self) -> dict:
        """The model as the dict the model file stores (weights as arrays; files.save_model serialises them)."""
        return {"model": self.model, "config": self.config, "weights": self.weights,
                "preprocessing": self.preprocessing.to_dict(), "classes": self.classes, "key_id": self.key_id,
                "info": self.info}

    def save(self, path: str | os.PathLike) -> None:
        """Write the model file to ``path`` (files.save_model: checksummed JSON, atomic, flushed, mode 0600).
        Raises OutputError naming the fallback location when ``path`` could not be written."""
        files.save_model(path, self.to_record())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainedModel":
        """The model in ``path``, checked: ModelFileError if any part is missing, malformed, non-finite
        or inconsistent (weights against config, classes and feature count)."""
        r = files.load_model(path)
        try:
            try:
                pre = Preprocessor.from_dict(r["preprocessing"])
            except HetrainUserError as exc:
                raise ModelFileError(f"{path}: {exc}") from None
            if pre.classes != record_classes(r["classes"]):
                raise ModelFileError(f"{path}: class labels and preprocessing disagree")
            info = r.get("info", {})
            config = r["config"]
            if not isinstance(info, dict) or not isinstance(config, dict):
                raise ModelFileError(f"{path}: malformed model record (config and info must be objects)")
            if isinstance(info.get("params"), str):  # files written before model_info: the preset's name only
                info = {**info, "params": {"name": info["params"]}}
            model = cls(str(r["model"]), dict(config), r["weights"], pre, str(r["key_id"]), info)
        except KeyError as exc:
            raise ModelFileError(f"{path}: missing field {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: malformed model record ({exc})") from None
        model.validate(str(path))
        return model


def _shapes(shapes: dict) -> str:
    return ", ".join(f"{k} {'x'.join(map(str, v)) or 'scalar'}" for k, v in sorted(shapes.items()))
