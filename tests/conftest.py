"""Shared fixtures. SEAL engines are module-scoped: key generation is the slow part."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

SHARED_DATA = pathlib.Path(os.environ.get("HETRAIN_SHARED_DATA", pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"))


BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="session")
def bench_module():
    """Loads a module of bench/ by name (``bench_module("rowmajor_baseline")``): benchmark baselines live
    there, outside the package; sys.path is left alone."""
    import importlib.util
    import sys

    def load(name: str):
        key = f"_bench_{name}"
        if key not in sys.modules:
            spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            spec.loader.exec_module(module)
        return sys.modules[key]

    return load


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data beside the repository (CI clones next to it); tests needing it skip otherwise."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def iris_csv(tmp_path_factory) -> pathlib.Path:
    """Iris as `hetrain datasets export` writes it (label in column 0, no header)."""
    from hetrain.cli.main import main

    p = tmp_path_factory.mktemp("data") / "iris.csv"
    assert main(["datasets", "export", "iris", "--out", str(p)]) == 0
    return p


@pytest.fixture(scope="session")
def iris_third():
    """Every third Iris row (50 rows, 3 classes): a job bundle of a few ciphertexts."""
    from hetrain.data import load_builtin

    X, y = load_builtin("iris")
    return X[::3], y[::3]
