"""Errors of the feature-extraction client, all actionable by the user (no traceback in the CLI)."""
from __future__ import annotations

from hetrain.errors import DataError, HetrainUserError

INSTALL_HINT = "pip install 'hetrain[features]'"


class FeatureError(HetrainUserError):
    """Base class of feature-extraction errors."""


class MissingDependencyError(FeatureError, ImportError):
    """torch / pillow / onnxruntime is not installed."""


class WeightsError(FeatureError):
    """The backbone's weights file is missing, unreadable or does not fit the architecture."""


class ImageInputError(FeatureError, DataError):
    """The images (folder, npz or idx files) cannot be read or are malformed."""


def require(module: str, purpose: str):
    """Import `module` or raise MissingDependencyError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the '{module}' package, which is not installed: {INSTALL_HINT}"
        ) from exc
