"""The pipeline with the real logistic-regression trainer ("mlr") on scikit-learn's wine."""
from __future__ import annotations

import pytest
from sklearn.model_selection import train_test_split

from hetrain.data import load_builtin
from hetrain.protocol import TrainedModel, fit


@pytest.fixture(scope="module")
def wine():
    X, y = load_builtin("wine")
    return train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)


def test_mlr_under_seal_matches_twin(wine, tmp_path):
    Xtr, Xte, ytr, yte = wine
    r = fit(Xtr, ytr, "mlr", {"iterations": 1}, preset="n8192", backend="seal", progress=False)
    # One iteration = one encrypted gradient product, scaled by the client's out_scale after
    # decryption; weights are O(1-10), CKKS at 2^40 gives ~1e-9 relative per operation, and the
    # out_scale and row sums amplify it (measured ~6e-6). 1e-4 catches any layout/scale mistake
    # (which shows up at O(0.1)); the trainer's own tests bound the arithmetic more tightly.
    assert r.twin_max_abs_diff < 1e-4
    path = tmp_path / "mlr.json"
    r.model.save(path)
    assert TrainedModel.load(path).accuracy(Xte, yte) > 0.9


def test_mlr_auto_preset_fits_three_iterations(wine):
    Xtr, Xte, ytr, yte = wine
    r = fit(Xtr, ytr, "mlr", {"iterations": 3, "sigmoid": "deg3:16"}, preset="auto", backend="sim", progress=False)
    assert r.stats["params"] == "n16384-deep" and r.plan.levels_needed == 9
    assert r.twin_max_abs_diff < 1e-9  # sim without noise: only float rounding order differs
    assert r.model.accuracy(Xte, yte) > 0.93
