"""Messages a user reads print plain numbers, never NumPy reprs such as ``np.float64(4.5)``.

NumPy 2 writes a scalar's repr as ``np.float64(...)``, which is what a list/tuple/dict of NumPy
values and ``!r`` print; hetrain._format.plain makes such values plain before they go into text.
"""
from __future__ import annotations

import numpy as np
import pytest

from hetrain.cli.main import main
from hetrain.errors import HetrainUserError


def _message(fn) -> str:
    with pytest.raises((HetrainUserError, ValueError)) as info:
        fn()
    return str(info.value)


def _cases():
    from hetrain.ckks.params import CKKSParams
    from hetrain.data.validate import check_known_labels, check_labels
    from hetrain.models.base import Plan
    from hetrain.models.mlp_dvr import MLPTrainer
    from hetrain.protocol.preprocess import Preprocessor

    X = np.random.default_rng(0).normal(size=(6, 3))
    plan = Plan(levels_needed=np.int64(9), levels_available=np.int64(2), rotation_steps=[np.int64(1)],
                iterations=np.int64(3), iterations_that_fit=np.int64(0),
                levels_per_iteration={"forward": np.int64(1), "sigmoid": np.int64(2)}, n_input_ciphertexts=1)
    return {
        "non-integer label": lambda: check_labels(np.array([0.0, 4.50333])),
        "unseen label": lambda: check_known_labels(np.array([7]), np.array([0, 1, 2])),
        "bad scale": lambda: Preprocessor.fit(X, np.array([0, 1, 0, 1, 0, 1]), scale=np.float64(-4.5)),
        "bad hidden": lambda: MLPTrainer(hidden=(np.int64(0),)),
        "depth plan": lambda: plan.check(CKKSParams(8192, (60, 40, 60), 40, "n8192")),
        "depth plan (refresh)": lambda: plan.check(CKKSParams(8192, (60, 40, 60), 40, "n8192"), refresh=True),
        "insecure params": lambda: CKKSParams(8192, tuple(np.int64(60) for _ in range(5)), 40, "x").check_security(False),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_error_messages_print_plain_numbers(case):
    msg = _message(_cases()[case])
    assert "np." not in msg and "float64" not in msg and "int64" not in msg, msg


def test_plain_converts_inside_containers():
    from hetrain._format import plain

    v = plain({"a": [np.float64(4.5), (np.int64(2), np.array([1.5]))], np.str_("k"): {np.int32(3)}})
    assert repr(v) == "{'a': [4.5, (2, [1.5])], 'k': {3}}"
    assert plain("text") == "text" and plain(None) is None


def test_fit_sim_output_has_no_numpy_repr(capsys, tmp_path):
    data = tmp_path / "iris.csv"
    assert main(["datasets", "export", "iris", "--out", str(data)]) == 0
    rc = main(["fit", "--data", str(data), "--model", "mlr", "--iterations", "2", "--sigmoid", "deg3:16", "--backend", "sim",
               "--out", str(tmp_path / "m.json"), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "np." not in out + err and "float64" not in out + err
    rc = main(["evaluate", "--model", str(tmp_path / "m.json"), "--data", str(data)])
    out, err = capsys.readouterr()
    assert rc == 0 and "np." not in out + err
