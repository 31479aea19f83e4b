"""Errors raised by the circuits package."""
from hetrain.errors import HetrainUserError


class LayoutError(HetrainUserError):
    """The problem does not fit a packing in these parameters: more classes, features, samples or
    hidden units than the mlr packings (circuits/packing.py), the diagonal packing (circuits/diagonal.py),
    the row-major packing (circuits/rowmajor.py) or the DVR grid (circuits/dvr.py) can hold, or a
    packing name that is not registered (circuits/packings.py); the message names what does not fit
    and the limit. (The class keeps its name for compatibility.)"""
