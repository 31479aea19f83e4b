"""Imports every trainer module so that it registers itself (one line per trainer)."""
from . import mlr  # noqa: F401
from . import mlp_diagonal  # noqa: F401  (mlp-diagonal)
from . import mlp_dvr  # noqa: F401  (mlp-dvr)
from . import mlr_minibatch  # noqa: F401  (mlr-minibatch: refreshed mini-batch MLR)
