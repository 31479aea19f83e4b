"""Errors of the client/server protocol (all are HetrainUserError: the CLI prints them plainly)."""
from hetrain.errors import HetrainUserError


class BundleError(HetrainUserError):
    """A job bundle or server output is missing, corrupted, or does not match the client's keys."""


class ModelFileError(HetrainUserError):
    """A model file is missing, corrupted, or inconsistent with the data it is used on."""


class ServerError(HetrainUserError):
    """The server process failed; the message carries the server's own explanation."""


class ReaderGoneError(HetrainUserError):
    """The process reading the server's output (its parent: the client or the service) went away."""


class TwinMismatch(HetrainUserError):
    """The decrypted model disagrees with its plaintext twin beyond CKKS noise: not released."""
