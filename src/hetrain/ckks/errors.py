"""Errors raised by the CKKS layer. Each is specific so callers (and tests) can tell them apart."""
from hetrain.errors import HetrainUserError


class CKKSError(HetrainUserError):
    """Base class of every error of the ckks package."""


class DepthExhausted(CKKSError):
    """An operation needs a multiplicative level that the ciphertext no longer has."""


class MissingRotationKey(CKKSError):
    """A rotation was requested for a step whose Galois key was not generated."""


class KeyMismatch(CKKSError):
    """A ciphertext or key belongs to another key set or to other parameters."""


class SecretKeyUnavailable(CKKSError):
    """Decryption was attempted with an engine built from public material only."""


class InsecureParameters(CKKSError):
    """The parameters give less than 128-bit security and were not explicitly forced."""


class SerializationError(CKKSError):
    """Bytes or a file could not be read back: corrupted, truncated, or of the wrong kind."""


class TransparentResult(CKKSError):
    """A backend's exact result would be a transparent ciphertext (a key-independent encryption of
    0: SEAL refuses to make one). Internal: the engine catches it and returns a fresh encryption of 0."""


class WorkerFailed(CKKSError):
    """A worker process of the executor (ckks/executor.py) died: out of memory at start-up under a
    memory limit, killed, or crashed."""


class ExecutorUnavailable(CKKSError):
    """The executor asked for cannot run here: Ray is not installed (``pip install 'hetrain[ray]'``),
    its cluster cannot be reached, or it has fewer free CPUs than the workers asked for."""
