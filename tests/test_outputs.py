"""Outputs written after long work are checked before it starts and never lost at the end
(hetrain.outputs; issue 10, item 4): fit, demo, datasets export, features."""
from __future__ import annotations

import builtins
import errno
import os
import tempfile

import pytest

from hetrain import ckks
from hetrain.cli.main import main
from hetrain.protocol import TrainedModel

FAST_FIT = ["--backend", "sim", "--quiet", "--model", "mlr", "--sigmoid", "deg3:16", "--iterations", "1"]


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "wine.csv"
    assert main(["datasets", "export", "wine", "--out", str(p)]) == 0
    return p


@pytest.fixture
def no_keys(monkeypatch):
    """Fails the test if any key is made (the output must be refused before)."""
    def refuse(*a, **kw):
        raise AssertionError("a key was made before the output was checked")
    monkeypatch.setattr(ckks, "create_engine", refuse)


@pytest.fixture
def fallback(tmp_path, monkeypatch):
    """The fallback location (first choice: the temporary directory) inside this test's folder."""
    d = tmp_path / "fallback"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


class _FullFile:
    """A file on a full disk: it opens, every write fails with ENOSPC."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def full_disk(monkeypatch):
    """Every write into a directory given to ``fill(dir)`` fails with ENOSPC, whether it goes through
    ``open(...).write`` or ``os.write`` (as on a full disk, whatever the implementation)."""
    full: list[str] = []
    real_write, real_open = os.write, builtins.open

    def inside(path) -> bool:
        path = os.path.abspath(os.fspath(path))
        return any(path.startswith(d + os.sep) for d in full)

    def write(fd, data):
        if inside(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    def open_(file, mode="r", *a, **kw):
        f = real_open(file, mode, *a, **kw)
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and inside(file):
            return _FullFile(f)
        return f
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(builtins, "open", open_)
    return lambda d: full.append(str(d))


def _one_line_error(capsys, command):
    err = capsys.readouterr().err
    assert err.startswith(f"hetrain {command}: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("where, message", [
    ("dir", "is a directory"),
    ("missing/m.json", "does not exist"),
    ("/proc/hetrain-model.json", "cannot write"),  # a read-only location, even for root
    ("/dev/full", "not a regular file"),
])
def test_fit_refuses_an_unwritable_out_before_any_key(capsys, tmp_path, data, no_keys, where, message):
    (tmp_path / "dir").mkdir()
    out = where if where.startswith("/") else str(tmp_path / where)
    assert main(["fit", "--data", str(data), "--out", out, *FAST_FIT]) == 1
    assert message in _one_line_error(capsys, "fit")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_fit_refuses_a_read_only_directory(capsys, tmp_path, data, no_keys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    assert main(["fit", "--data", str(data), "--out", str(ro / "m.json"), *FAST_FIT]) == 1
    assert "Permission denied" in _one_line_error(capsys, "fit")


@pytest.mark.parametrize("refresh", ["none", "client"])
def test_fit_keeps_the_model_when_the_disk_fills_at_the_end(capsys, tmp_path, data, fallback, full_disk, refresh):
    outdir = tmp_path / "out"
    outdir.mkdir()
    full_disk(outdir)
    args = FAST_FIT if refresh == "none" else [a for a in FAST_FIT if a not in ("--iterations", "1")] + \
        ["--refresh", "client", "--epochs", "1", "--batch-size", "64"]
    assert main(["fit", "--data", str(data), "--out", str(outdir / "m.json"), *args]) == 1
    err = _one_line_error(capsys, "fit")
    assert "No space left on device" in err and f"saved to {fallback}" in err
    saved = list(fallback.glob("m-*.json"))
    assert len(saved) == 1 and str(saved[0]) in err
    assert TrainedModel.load(saved[0]).model == "mlr"  # the work is kept, whole
    assert list(outdir.iterdir()) == []  # no half file left where it failed


def test_fit_keeps_the_model_when_its_directory_goes_during_training(capsys, tmp_path, data, fallback, monkeypatch):
    from hetrain.protocol import steps

    outdir = tmp_path / "out"
    outdir.mkdir()
    real_fit = steps.fit

    def fit_then_remove(*a, **kw):
        result = real_fit(*a, **kw)
        outdir.rmdir()  # e.g. an unmounted or deleted directory: the check before training passed
        return result
    monkeypatch.setattr(steps, "fit", fit_then_remove)
    assert main(["fit", "--data", str(data), "--out", str(outdir / "m.json"), *FAST_FIT]) == 1
    err = _one_line_error(capsys, "fit")
    (saved,) = fallback.glob("m-*.json")
    assert str(saved) in err and TrainedModel.load(saved).model == "mlr"


def test_demo_refuses_its_out_before_any_work(capsys, tmp_path, no_keys):
    assert main(["demo", "--backend", "sim", "--quiet", "--out", str(tmp_path)]) == 1
    assert "is a directory" in _one_line_error(capsys, "demo")


def test_datasets_export_checks_both_outputs_first(capsys, tmp_path):
    out = tmp_path / "train.csv"
    assert main(["datasets", "export", "iris", "--out", str(out), "--test-out", str(tmp_path / "no" / "t.csv")]) == 1
    assert "does not exist" in _one_line_error(capsys, "datasets")
    assert not out.exists()
    assert main(["datasets", "export", "iris", "--out", "/dev/full"]) == 1
    _one_line_error(capsys, "datasets")


def test_datasets_export_falls_back_on_a_full_disk(capsys, tmp_path, fallback, full_disk):
    outdir = tmp_path / "out"
    outdir.mkdir()
    full_disk(outdir)
    assert main(["datasets", "export", "digits", "--out", str(outdir / "digits.csv")]) == 1
    err = _one_line_error(capsys, "datasets")
    (saved,) = fallback.glob("digits-*.csv")
    assert str(saved) in err and len(saved.read_text().splitlines()) == 1797
    assert list(outdir.iterdir()) == []


def test_features_refuses_its_out_before_any_work(capsys, tmp_path):
    pytest.importorskip("torch")
    assert main(["features", "--images", str(tmp_path / "none.npz"), "--random-weights", "--quiet",
                 "--out", str(tmp_path)]) == 1
    assert "is a directory" in _one_line_error(capsys, "features")


def test_output_removed_meanwhile_is_kept_elsewhere(tmp_path, fallback):
    from hetrain.errors import OutputError
    from hetrain.outputs import open_output

    d = tmp_path / "gone"
    d.mkdir()
    with pytest.raises(OutputError, match="saved to") as info:
        with open_output(d / "x.csv", "CSV file") as f:
            f.write("1,2\n")
            os.rename(d, tmp_path / "elsewhere")  # the temporary sibling moves with it: the rename fails
    (saved,) = fallback.glob("x-*.csv")
    assert saved.read_text() == "1,2\n" and str(saved) in str(info.value)
