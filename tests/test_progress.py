"""protocol/progress.py: one display for a whole fit, plain lines off a terminal, live validation."""
from __future__ import annotations

import io
import re

import pytest

from hetrain.cli.main import main
from hetrain.data import load_builtin
from hetrain.protocol import fit
from hetrain.protocol.progress import RunProgress


@pytest.fixture(scope="module")
def wine_fit_lines():
    """A sim fit of mini-batch mlr on wine (client refresh, validation per epoch): the display's lines."""
    X, y = load_builtin("wine")
    stream, out = io.StringIO(), io.StringIO()
    display = RunProgress(stream=stream, tty=False, out=out)
    result = fit(X, y, "mlr", backend="sim", progress=display, log=display.write, seed=0)
    return stream.getvalue().splitlines(), result


def test_phases_appear_in_order(wine_fit_lines):
    lines, _ = wine_fit_lines
    starts = [ln.split(":")[0] for ln in lines if ln.endswith("started") or ": started (" in ln]
    assert starts == ["keygen", "encrypt", "train", "decrypt"]
    dones = [ln.split(":")[0] for ln in lines if re.match(r"\w+: done in [\d.]+ s", ln)]
    assert dones == ["keygen", "encrypt", "train", "decrypt"]


def test_validation_lines_appear_during_training(wine_fit_lines):
    lines, result = wine_fit_lines
    start = lines.index("train: started")
    end = next(i for i, ln in enumerate(lines) if ln.startswith("train: done"))
    epochs = [ln for ln in lines[start:end] if re.match(r"epoch \d+: validation accuracy [\d.]+", ln)]
    history = [h for h in result.model.info["history"] if h["kind"] == "epoch"]
    # every epoch the server asked the client to evaluate shows while training, with the run's state
    assert len(epochs) >= len(history) - 1 >= 1
    assert all(re.search(r"step \d+/\d+, elapsed \d+:\d\d, ETA \d+:\d\d", ln) for ln in epochs)
    first = history[0]
    assert epochs[0].startswith(f"epoch 1: validation accuracy {first['val_accuracy']:.4f}")
    assert "refreshes" in lines[end]


def test_encryption_counter_never_exceeds_its_total(wine_fit_lines):
    lines, _ = wine_fit_lines
    done = next(ln for ln in lines if ln.startswith("encrypt: done"))
    n, total = map(int, re.search(r"(\d+)/(\d+) ciphertexts", done).groups())
    assert n == total > 0


def test_a_phase_total_follows_a_count_that_passes_it():
    stream = io.StringIO()
    with RunProgress(stream=stream, tty=False) as p, p.phase("encrypt", total=3, unit="ct") as ph:
        seen = []
        for _ in range(5):
            ph.advance()
            seen.append((ph.n, ph.total))
    assert all(n <= total for n, total in seen) and seen[-1] == (5, 5)
    assert "encrypt: done in" in stream.getvalue() and "5/5 ct" in stream.getvalue()


def test_terminal_bars_carry_epoch_and_validation():
    stream = io.StringIO()
    with RunProgress(stream=stream, tty=True) as p, p.phase("train", unit="steps"):
        p.step(1, 4, "epoch 1 batch 1/1")
        p.epoch_result({"epoch": 1, "step": 1, "val_accuracy": 0.5, "val_loss": 0.7, "best": True})
        p.refreshed()
        p.step(2, 4, "epoch 2 batch 1/1")
    text = stream.getvalue()
    assert "epoch 1: validation accuracy 0.5000, loss 0.7000 (best so far)" in text
    assert "epoch 2, val acc 0.5000, refreshes 1" in text and "2/4" in text


def test_quiet_draws_nothing():
    stream = io.StringIO()
    with RunProgress(quiet=True, stream=stream) as p, p.phase("train", total=2):
        p.step(1, 2, "epoch 1 batch 1/1")
        p.epoch_result({"epoch": 1, "step": 1, "val_accuracy": 0.5, "val_loss": 0.7})
    assert stream.getvalue() == ""


def test_cli_fit_prints_plain_progress_lines_on_stderr(capsys, tmp_path):
    csv = tmp_path / "iris.csv"
    assert main(["datasets", "export", "iris", "--out", str(csv)]) == 0
    capsys.readouterr()
    rc = main(["fit", "--data", str(csv), "--backend", "sim", "--out", str(tmp_path / "m.json")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "keygen: started" in err and "train: done in" in err and "epoch 1: validation accuracy" in err
    assert "estimate (n16384): keys" in out and out.index("estimate") < out.index("backend=sim")
    rc = main(["fit", "--data", str(csv), "--backend", "sim", "--out", str(tmp_path / "q.json"), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0 and "train:" not in err and "keygen:" not in err and "epoch 1: validation" not in err
