"""Errors raised by the circuits package."""
from hetrain.errors import HetrainUserError


class LayoutError(HetrainUserError):
    """The problem does not fit a slot layout in these parameters: more classes, features, samples
    or hidden units than the packing (circuits/packing.py), the diagonal layout (circuits/diagonal.py),
    the row-major layout (circuits/rowmajor.py) or the DVR grid (circuits/dvr.py) can hold; the
    message names what does not fit and the limit."""
