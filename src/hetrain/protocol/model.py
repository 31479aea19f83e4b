"""A released (decrypted, rounded) model: plaintext weights + the preprocessing to apply first."""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from hetrain.data.validate import check_features, check_labels
from hetrain.models.base import get_trainer

from . import files
from .errors import ModelFileError
from .preprocess import Preprocessor


@dataclasses.dataclass
class TrainedModel:
    model: str                        # registry name of the trainer
    config: dict
    weights: dict[str, np.ndarray]
    preprocessing: Preprocessor
    key_id: str                       # id of the key set it was trained under (audit trail)
    info: dict = dataclasses.field(default_factory=dict)  # backend, params, release, timings...

    @property
    def classes(self) -> list[int]:
        return self.preprocessing.classes

    def predict_scores(self, X) -> np.ndarray:
        """Per-class scores (n x c) from raw features: the recorded preprocessing is applied first."""
        Xp = self.preprocessing.transform(check_features(X))
        trainer = get_trainer(self.model)(**self.config)
        scores = np.asarray(trainer.predict_scores(self.weights, Xp))
        if scores.shape != (Xp.shape[0], len(self.classes)):
            raise ModelFileError(f"model weights give scores of shape {scores.shape}, expected "
                                 f"{(Xp.shape[0], len(self.classes))}: weights and preprocessing do not match")
        return scores

    def predict(self, X) -> np.ndarray:
        return np.asarray(self.classes)[np.argmax(self.predict_scores(X), axis=1)]

    def accuracy(self, X, y) -> float:
        y = check_labels(y, n_rows=np.shape(X)[0])
        self.preprocessing.label_index(y)  # DataError for labels not seen in training
        return float(np.mean(self.predict(X) == y))

    def to_record(self) -> dict:
        return {"model": self.model, "config": self.config, "weights": self.weights,
                "preprocessing": self.preprocessing.to_dict(), "classes": self.classes, "key_id": self.key_id,
                "info": self.info}

    def save(self, path: str | os.PathLike) -> None:
        files.save_model(path, self.to_record())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainedModel":
        r = files.load_model(path)
        try:
            pre = Preprocessor.from_dict(r["preprocessing"])
            if pre.classes != [int(c) for c in r["classes"]]:
                raise ModelFileError(f"{path}: class labels and preprocessing disagree")
            return cls(r["model"], dict(r["config"]), r["weights"], pre, str(r["key_id"]), r.get("info", {}))
        except KeyError as exc:
            raise ModelFileError(f"{path}: missing field {exc}") from None
