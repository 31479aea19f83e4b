"""Client (holds the secret key) and server (never does), their file formats, and the steps between.

    from hetrain.protocol import fit, TrainedModel
    result = fit(X, y, model="mlr", preset="auto")          # keygen → encrypt → train → decrypt
    result.model.save("model.json"); TrainedModel.load("model.json").predict(X_test)

The same steps one by one, each on its own machine: hetrain.protocol.steps (keygen, encrypt,
train, attach, decrypt).
"""
from .client import release
from .client_jobs import FitResult
from .errors import BundleError, ModelFileError, ServerError
from .model import TrainedModel
from .planning import make_trainer
from .preprocess import Preprocessor
from .steps import fit

__all__ = ["BundleError", "FitResult", "ModelFileError", "Preprocessor", "ServerError", "TrainedModel",
           "fit", "make_trainer", "release"]
