"""Client (holds the secret key) and server (never does), their file formats, and the local pipeline.

    from hetrain.protocol import fit, TrainedModel
    result = fit(X, y, model="mlr", config={"iterations": 2}, preset="n16384")
    result.model.save("model.json"); TrainedModel.load("model.json").predict(X_test)
"""
from .client import Client, release
from .errors import BundleError, ModelFileError, ServerError
from .model import TrainedModel
from .pipeline import FitResult, fit, make_trainer
from .preprocess import Preprocessor

__all__ = ["BundleError", "Client", "FitResult", "ModelFileError", "Preprocessor", "ServerError", "TrainedModel",
           "fit", "make_trainer", "release"]
