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


class RequestFailed(ServerError):
    """A request to the training service kept failing (unreachable, 5xx, a broken download) for
    longer than its retries allow. The job itself may still be running there: it is never deleted
    for this (transport.HttpTransport.run keeps its id and token in JOB/remote.json)."""
