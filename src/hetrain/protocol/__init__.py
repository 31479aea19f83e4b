"""Client (holds the secret key) and server (never does), their file formats, and the steps between.

    from hetrain.protocol import fit, TrainedModel
    result = fit(X, y, model="mlr", preset="auto")          # keygen → encrypt → train → decrypt
    result.model.save("model.json"); TrainedModel.load("model.json").predict(X_test)

The same steps one by one, each on its own machine: hetrain.protocol.steps (keygen, encrypt,
train, attach, decrypt); encrypted inference: hetrain.protocol.inference (encrypt_queries,
encrypt_queries_for_job, infer, decrypt_scores) with model_spec. The names below are imported on first use, so that the server process
(hetrain.protocol.server) never loads the data owner's modules (steps, client_jobs, keys, refresh).
"""
import importlib

_EXPORTS = {"BundleError": "errors", "ModelFileError": "errors", "ServerError": "errors",
            "FitResult": "client_jobs", "TrainedModel": "model", "Preprocessor": "preprocess",
            "fit": "steps", "make_trainer": "planning", "release": "client",
            "encrypt_queries": "inference", "encrypt_queries_for_job": "inference", "infer": "inference",
            "decrypt_scores": "inference", "model_spec": "model_spec"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
