"""`hetrain features` end to end: CSV layout of the reference feature file, errors without traceback,
and a core install (no torch) that still imports and explains how to get the extra."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hetrain.cli import features as cli
from hetrain.errors import HetrainUserError

REFERENCE_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "regnet_x_400mf_mnist_train_first256.csv"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_registered_in_dispatcher():
    from hetrain.cli.main import COMMANDS

    assert COMMANDS["features"][0] == "features"


def test_core_install_without_torch_imports_and_explains():
    # torch blocked in a fresh interpreter: importing hetrain and the CLI module must still work,
    # and running the command must ask for the extra.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import hetrain, hetrain.features, hetrain.cli.features as c, argparse\n"
        "from hetrain.errors import HetrainUserError\n"
        "p = argparse.ArgumentParser(); c.add_arguments(p)\n"
        "try:\n"
        "    c.run(p.parse_args(['--images', 'x', '--out', 'y']))\n"
        "except HetrainUserError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'hetrain[features]'" in out.stdout


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from hetrain.features import regnet_x_400mf

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "regnet_x_400mf.pth"
    torch.save(regnet_x_400mf().state_dict(), path)
    return path


def test_npz_to_csv_has_reference_layout(tmp_path, weights, capsys):
    rng = np.random.default_rng(0)
    labels = np.array([5, 0, 4], np.uint8)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), labels=labels)
    out = tmp_path / "features.csv"
    rc = cli.run(_args("--images", str(tmp_path / "d.npz"), "--weights", str(weights), "--out", str(out),
                       "--batch-size", "2", "--quiet"))
    assert rc == 0 and "wrote 3 rows" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["5.0", "0.0", "4.0"]
    table = np.loadtxt(out, delimiter=",", dtype=np.float32)
    assert table.shape == (3, 401) and (table[:, 1:] >= 0).all()
    if REFERENCE_CSV.exists():  # same column count and label format as the file the trainers read
        ref = REFERENCE_CSV.read_text().splitlines()[0].split(",")
        assert len(ref) == 401 and ref[0].endswith(".0")
    assert not (tmp_path / "features.csv.part").exists()


def test_folder_prints_label_mapping_and_limit(tmp_path, weights, capsys):
    pil = pytest.importorskip("PIL.Image")
    for name in ("cat", "dog"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        pil.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "imgs" / name / "a.jpg")
    out = tmp_path / "f.csv"
    cli.run(_args("--images", str(tmp_path / "imgs"), "--weights", str(weights), "--out", str(out),
                  "--size", "64", "--limit", "1", "--quiet"))
    assert "cat->0, dog->1" in capsys.readouterr().err
    assert out.read_text().count("\n") == 1


def test_user_errors_are_hetrain_errors(tmp_path, weights):
    pytest.importorskip("torch")
    np.savez(tmp_path / "d.npz", images=np.zeros((1, 8, 8), np.uint8), labels=np.zeros(1, np.uint8))
    cases = [
        ("--images", str(tmp_path / "d.npz"), "--out", str(tmp_path / "o.csv")),  # no weights
        ("--images", str(tmp_path / "nope"), "--weights", str(weights), "--out", str(tmp_path / "o.csv")),
        ("--images", str(tmp_path / "d.npz"), "--weights", str(weights), "--out", str(tmp_path / "o.csv"),
         "--limit", "0"),
        ("--images", str(tmp_path / "d.npz"), "--random-weights", "--weights", str(weights),
         "--out", str(tmp_path / "o.csv")),
        ("--images", str(tmp_path / "d.npz"), "--random-weights", "--device", "nonsense",
         "--out", str(tmp_path / "o.csv")),
    ]
    for argv in cases:
        with pytest.raises(HetrainUserError):
            cli.run(_args(*argv))
    assert not (tmp_path / "o.csv").exists()
