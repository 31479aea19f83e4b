"""Plain Python values for messages a user reads (errors, CLI output, logs, reports).

NumPy 2 writes a scalar's repr as ``np.float64(4.5)``: that is what a list, tuple or dict of NumPy
values prints, and what ``!r`` of one prints. ``plain`` turns NumPy scalars and arrays, also inside
lists, tuples, sets and dicts, into Python numbers and lists; anything else passes unchanged.
"""
from __future__ import annotations

import numpy as np


def plain(obj):
    """``obj`` with every NumPy scalar/array (at any depth of list, tuple, set, dict) made plain."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [plain(v) for v in obj]
        return items if isinstance(obj, list) else tuple(items) if isinstance(obj, tuple) else type(obj)(items)
    return obj
