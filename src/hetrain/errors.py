"""Errors a user can act on. The CLI prints their message without a traceback."""


class HetrainUserError(Exception):
    """Base class of every error caused by input, configuration or keys (not by a bug)."""


class DataError(HetrainUserError, ValueError):
    """A data file or array is malformed: wrong shape, NaN/inf, unknown labels, empty..."""


class HetrainWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints it as one line."""


class DataWarning(HetrainWarning):
    """The data is usable but part of it is degenerate (e.g. constant features)."""


class OutputError(HetrainUserError):
    """An output file cannot be written where asked (checked before the work), or had to go elsewhere."""
