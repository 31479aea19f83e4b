"""Early stopping on a validation split, shared by the client's monitor and the planner.

An epoch makes *progress* when the validation accuracy beats every earlier epoch or the validation
loss (binary cross-entropy of the true sigmoid) drops by more than ``tol`` below every earlier
epoch; training stops after ``patience`` epochs without progress (0: never). The *best* epoch is
the one with the highest accuracy, ties broken by the lower loss: its model is the one released.
Accuracy alone plateaus early on small validation splits (24 Iris rows), so the loss keeps
training going while it still improves.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class EarlyStopping:
    """The early-stopping rule of this module's docstring, fed one epoch at a time with :meth:`update`:
    ``patience`` epochs without progress stop the run (0: never), ``tol`` is the loss drop (in nats of
    mean binary cross-entropy) that counts as progress; the other fields are its running record."""

    patience: int
    tol: float = 1e-4
    best_accuracy: float = -np.inf   # of the best epoch
    best_loss: float = np.inf        # of the best epoch
    best_epoch: int = 0
    max_accuracy: float = -np.inf
    min_loss: float = np.inf
    epochs_without_progress: int = 0

    def update(self, accuracy: float, loss: float, epoch: int) -> tuple[bool, bool]:
        """Record one epoch's validation measures; returns (this epoch is the best so far, stop now)."""
        best = accuracy > self.best_accuracy or (accuracy == self.best_accuracy and loss < self.best_loss)
        if best:
            self.best_accuracy, self.best_loss, self.best_epoch = accuracy, loss, epoch
        progress = accuracy > self.max_accuracy or loss < self.min_loss - self.tol
        self.max_accuracy = max(self.max_accuracy, accuracy)
        self.min_loss = min(self.min_loss, loss)
        self.epochs_without_progress = 0 if progress else self.epochs_without_progress + 1
        return best, self.patience > 0 and self.epochs_without_progress >= self.patience


def score_metrics(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and mean binary cross-entropy (true sigmoid, one-vs-rest) of class scores
    (n × ... × c: any number of models stacked in the middle axes) against y (n class indices);
    arrays of the middle axes' shape."""
    acc = np.mean(np.argmax(scores, axis=-1) == y.reshape((-1,) + (1,) * (scores.ndim - 2)), axis=0)
    p = np.clip(1.0 / (1.0 + np.exp(-np.clip(scores, -700, 700))), 1e-12, 1 - 1e-12)
    Y = np.eye(scores.shape[-1])[y].reshape((len(y),) + (1,) * (scores.ndim - 2) + (scores.shape[-1],))
    loss = -np.mean(np.sum(Y * np.log(p) + (1 - Y) * np.log(1 - p), axis=-1), axis=0)
    return acc, loss


def validation_metrics(W: np.ndarray, X: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy and mean binary cross-entropy (true sigmoid, one-vs-rest) of W (c × (1 + d)) on
    labelled rows X (n × d, preprocessed), y (n, class indices)."""
    acc, loss = score_metrics(np.concatenate([np.ones((X.shape[0], 1)), X], axis=1) @ W.T, np.asarray(y))
    return {"val_accuracy": float(acc), "val_loss": float(loss)}
