"""Refusals name options that WOULD fit, and following them works (issue 10 item 3). sim backend."""
from __future__ import annotations

import re

import numpy as np
import pytest

from hetrain.circuits.approx import IntervalError
from hetrain.cli.main import main
from hetrain.data import load_builtin
from hetrain.models import advice
from hetrain.models.base import DepthPlanError
from hetrain.protocol import fit


def _alternatives(msg: str) -> list[list[str]]:
    """Each advised alternative (`--flag value ...`) as an argv fragment."""
    alts = re.findall(r"`(--[^`]+)`", msg)
    assert alts, msg
    return [a.split() for a in alts]


def _config(argv: list[str]) -> tuple[dict, dict]:
    """argv fragment -> (trainer config, fit keyword options)."""
    cfg, kw = {}, {}
    for flag, value in zip(argv[::2], argv[1::2]):
        key = flag[2:].replace("-", "_")
        if key in ("iterations",):
            cfg[key] = int(value)
        elif key == "learning_rate":
            cfg[key] = float(value)
        elif key == "sigmoid":
            cfg[key] = value
        elif key == "scale":
            kw[key] = float(value)
        else:
            kw[key] = value
    return cfg, kw


@pytest.fixture(scope="module")
def bc_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("bc") / "bc.csv"
    assert main(["datasets", "export", "breast_cancer", "--out", str(path)]) == 0
    return path


def test_breast_cancer_interval_advice_is_followed_by_the_cli(bc_csv, tmp_path, capsys):
    base = ["fit", "--data", str(bc_csv), "--backend", "sim", "--refresh", "none", "--quiet"]
    rc = main([*base, "--out", str(tmp_path / "m.json"), "--iterations", "3", "--sigmoid", "deg3:16"])
    err = capsys.readouterr().err
    assert rc != 0 and "outside the sigmoid approximation's interval" in err
    assert "Scale the inputs down" not in err and "np.float64" not in err
    assert "--scale does not help" in err  # and it is true: the span is the same at any scale
    alts = _alternatives(err)
    assert all("--scale" not in a for a in alts)
    for i, alt in enumerate(alts):
        argv = [*base, "--out", str(tmp_path / f"m{i}.json"), "--iterations", "3", "--sigmoid", "deg3:16"]
        for flag, value in zip(alt[::2], alt[1::2]):  # the advised flags replace the user's
            if flag in argv:
                argv[argv.index(flag) + 1] = value
            else:
                argv += [flag, value]
        assert main(argv) == 0, (alt, capsys.readouterr().err)
        assert (tmp_path / f"m{i}.json").exists()


def test_scale_does_not_help_mlr():
    """What the message says: --scale 0.5 / 0.25 (the old advice) still leave the span outside."""
    X, y = load_builtin("breast_cancer")
    for scale in (0.5, 0.25):
        with pytest.raises(IntervalError) as e:
            fit(X, y, "mlr", {"iterations": 3, "sigmoid": "deg3:16"}, preset="auto", backend="sim",
                scale=scale, progress=False)
        assert max(abs(v) for v in e.value.span) > 16


@pytest.mark.parametrize("kind", ["learning_rate", "iterations"])
def test_each_kind_of_interval_advice_works(kind):
    """Advice restricted to one kind (learning rate, iterations) is also true."""
    from hetrain.protocol.planning import check_job
    from hetrain.protocol.preprocess import Preprocessor

    X, y = load_builtin("breast_cancer")
    pre = Preprocessor.fit(X, y)
    Xp, Y = pre.transform(X), pre.one_hot(y)
    config = {"iterations": 3, "sigmoid": "deg3:16", "learning_rate": 4.0}
    build = lambda cfg, Xc, p: check_job("mlr", cfg, Xc, Y, preset=p)  # noqa: E731
    text = advice.interval_advice(build, Xp, config, kinds=[kind], scale_invariant=True)
    alts = _alternatives(text)
    cfg, kw = _config(alts[0])
    assert set(cfg) >= {kind}
    result = fit(X, y, "mlr", {**config, **cfg}, preset="auto", backend="sim", progress=False, **kw)
    assert np.isfinite(result.twin_max_abs_diff)


def test_depth_advice_is_true(bc_csv):
    X, y = load_builtin("breast_cancer")
    with pytest.raises(DepthPlanError) as e:
        fit(X, y, "mlr", {"iterations": 4}, preset="n16384", backend="sim", progress=False)
    msg = str(e.value)
    assert "4 iterations need 13 levels but n16384 offers 7" in msg and "np." not in msg
    alts = _alternatives(msg)
    assert any("--iterations" in a for a in alts) and any("--preset" in a for a in alts)
    for alt in alts:
        cfg, kw = _config(alt)
        kw.setdefault("preset", "n16384")
        result = fit(X, y, "mlr", {"iterations": 4, **cfg}, backend="sim", progress=False, **kw)
        assert result.plan.fits


def test_mlp_depth_advice_names_refresh_and_it_works():
    X, y = load_builtin("breast_cancer")
    with pytest.raises(DepthPlanError) as e:  # refresh "auto" would refresh: the premise is refresh none
        fit(X, y, "mlp", {"iterations": 3}, preset="auto", backend="sim", progress=False, refresh="none")
    alts = _alternatives(str(e.value))
    assert ["--refresh", "client"] in alts
    for alt in alts:
        cfg, kw = _config(alt)
        kw.setdefault("refresh", "none")  # the advised --refresh client replaces it
        result = fit(X, y, "mlp", {"iterations": 3, **cfg}, preset="auto", backend="sim", progress=False, **kw)
        assert np.isfinite(result.twin_max_abs_diff)


def test_mlp_interval_advice_is_true():
    X, y = load_builtin("breast_cancer")
    config = {"iterations": 3, "sigmoid": "deg3:8", "learning_rate": 32.0}
    with pytest.raises(IntervalError) as e:
        fit(X, y, "mlp", config, preset="auto", backend="sim", progress=False)
    alts = _alternatives(str(e.value))
    for alt in alts:
        cfg, kw = _config(alt)
        result = fit(X, y, "mlp", {**config, **cfg}, preset="auto", backend="sim", progress=False, **kw)
        assert np.isfinite(result.twin_max_abs_diff)


def test_interval_check_runs_before_any_key(monkeypatch):
    from hetrain import ckks

    def no_keys(*a, **k):
        raise AssertionError("a key was made before the interval check")

    monkeypatch.setattr(ckks, "create_engine", no_keys)
    X, y = load_builtin("breast_cancer")
    with pytest.raises(IntervalError):
        fit(X, y, "mlr", {"iterations": 3, "sigmoid": "deg3:16"}, preset="auto", backend="sim", progress=False)
    with pytest.raises(DepthPlanError):
        fit(X, y, "mlr", {"iterations": 4}, preset="n16384", backend="sim", progress=False)
