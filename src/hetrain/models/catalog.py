"""Imports every trainer module so that it registers itself (one line per trainer)."""
from . import mlr  # noqa: F401
