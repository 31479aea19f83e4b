"""`hetrain report`: the HTML (plots present, numbers equal to the model file's), png-dir, bad input,
old model files, and the plain-words lines of the summary."""
from __future__ import annotations

import html
import re
import sys

import pytest
from toykit import ToyTrainer  # noqa: F401  (registers "toy-centroid")

from hetrain.cli.main import main
from hetrain.data import load_builtin
from hetrain.errors import HetrainUserError
from hetrain.protocol import fit
from hetrain.protocol.files import load_model, save_model
from hetrain.protocol.report import format_summary, twin_words
from jobkit import run_cli  # noqa: E402

SECTIONS = ("Training curve", "Time per phase", "Operations by kind", "Levels used", "Bytes moved", "Twin check")


def run(capsys, *argv):
    return run_cli(capsys, *argv)


def table(text: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in re.findall(r"<td data-key='([^']+)'>([^<]*)</td>", text)}


def captions(text: str) -> list[str]:
    return re.findall(r"<img alt='([^']+)' src='data:image/png;base64,[A-Za-z0-9+/=]+'>", text)


@pytest.fixture(scope="module")
def sim_model(tmp_path_factory):
    X, y = load_builtin("wine")
    path = tmp_path_factory.mktemp("report") / "wine.json"
    fit(X, y, "mlr", backend="sim", progress=False, seed=0).model.save(path)
    return path


def test_report_from_a_sim_fit_has_every_plot_and_the_model_files_numbers(capsys, tmp_path, sim_model):
    out = tmp_path / "r.html"
    rc, text, err = run(capsys, "report", sim_model, "--out", out)
    assert rc == 0, err
    assert f"report written to {out}: 6 plot(s)" in text
    page = out.read_text()
    assert captions(page) == list(SECTIONS)
    assert page.count("<figcaption>") == 6
    rec = load_model(sim_model)["info"]
    run_ = rec["run"]
    cells = table(page)
    assert float(cells["twin.max_abs_diff"]) == pytest.approx(run_["twin"]["max_abs_diff"], rel=1e-5)
    assert float(cells["twin.bound"]) == pytest.approx(run_["twin"]["bound"], rel=1e-5)
    for kind, op in run_["operations"].items():
        assert int(cells[f"operations.{kind}.count"]) == op["count"]
    for phase, seconds in run_["times_s"].items():
        if seconds is not None:
            assert float(cells[f"times_s.{phase}"]) == pytest.approx(seconds, rel=1e-5)
    assert int(cells["security.total_bits"]) == sum(rec["params"]["coeff_bits"])
    assert cells["security.secure_128"] == "yes" and cells["params.name"] == rec["params"]["name"]
    epochs = [h for h in rec["history"] if h["kind"] == "epoch"]
    assert int(cells["history.epochs"]) == len(epochs)
    assert float(cells["history.best_accuracy"]) == pytest.approx(max(h["val_accuracy"] for h in epochs), rel=1e-5)
    assert int(cells["levels.per_step"]) == run_["levels"]["per_step"] and "INSECURE" in page


def test_report_from_a_seal_fit(capsys, tmp_path):
    csv, model = tmp_path / "iris.csv", tmp_path / "m.json"
    assert main(["datasets", "export", "iris", "--out", str(csv)]) == 0
    rc, _, err = run(capsys, "fit", "--data", csv, "--model", "toy-centroid", "--iterations", 1, "--backend", "seal",
                     "--preset", "n8192", "--out", model, "--quiet")
    assert rc == 0, err
    rc, text, err = run(capsys, "report", model, "--out", tmp_path / "r.html")
    assert rc == 0, err
    page = (tmp_path / "r.html").read_text()
    # a full-batch trainer keeps no per-step history: that section says so, the others are drawn
    assert captions(page) == [s for s in SECTIONS if s != "Training curve"]
    assert "not recorded in this model file" in page and "not recorded in" in text
    run_ = load_model(model)["info"]["run"]
    cells = table(page)
    assert int(cells["bytes.upload_keys"]) == run_["bytes"]["upload_keys"] > 0
    assert int(cells["bytes.upload_keys.galois_keys"]) == run_["key_parts"]["galois_keys"]
    assert int(cells["levels.needed"]) == run_["levels"]["needed"]
    assert cells["backend"] == "seal" and "INSECURE" not in page


def test_png_dir(capsys, tmp_path, sim_model):
    rc, _, err = run(capsys, "report", sim_model, "--out", tmp_path / "pngs", "--format", "png-dir")
    assert rc == 0, err
    pngs = sorted(p.name for p in (tmp_path / "pngs").glob("*.png"))
    assert pngs == sorted(["curve.png", "times.png", "operations.png", "levels.png", "bytes.png", "twin.png"])
    assert all((tmp_path / "pngs" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "src='curve.png'" in (tmp_path / "pngs" / "index.html").read_text()


def test_bad_inputs_are_clear_errors(capsys, tmp_path, sim_model):
    rc, _, err = run(capsys, "report", tmp_path / "absent.json", "--out", tmp_path / "r.html")
    assert rc == 1 and "does not exist" in err and err.count("\n") == 1
    (tmp_path / "data.csv").write_text("1.0,2.0\n")
    rc, _, err = run(capsys, "report", tmp_path / "data.csv", "--out", tmp_path / "r.html")
    assert rc == 1 and "is not a hetrain model file" in err
    rc, _, err = run(capsys, "report", sim_model, "--out", tmp_path)
    assert rc == 1 and "is a directory" in err
    (tmp_path / "file").write_text("")
    rc, _, err = run(capsys, "report", sim_model, "--out", tmp_path / "file", "--format", "png-dir")
    assert rc == 1 and "--out" in err and "not a folder" in err


def test_an_old_model_without_history_or_run_gets_not_recorded_sections(capsys, tmp_path, sim_model):
    rec = load_model(sim_model)
    for key in ("history", "run"):
        rec["info"].pop(key)
    old = tmp_path / "old.json"
    save_model(old, rec)
    rc, text, err = run(capsys, "report", old, "--out", tmp_path / "r.html")
    assert rc == 0, err
    page = (tmp_path / "r.html").read_text()
    assert page.count("not recorded in this model file") == 5  # curve, times, operations, levels, bytes
    assert captions(page) == ["Twin check"]  # the model's info still has its twin difference
    assert "0 plot(s)" not in text and "not recorded in" in text


def test_without_matplotlib_the_error_names_the_install(monkeypatch, sim_model):
    from hetrain.protocol.model import TrainedModel
    from hetrain.protocol.report_html import build_sections

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(HetrainUserError, match=r"pip install matplotlib"):
        build_sections(TrainedModel.load(sim_model))


def test_summary_explains_depth_time_operations_and_twin_in_plain_words():
    stats = {"backend": "seal", "params": "n16384", "model": "mlp-dvr", "levels_needed": 121, "levels_available": 9,
             "levels_per_iteration": {"forward": 2, "backward": 3}, "rotation_steps": [1, 2],
             "server_train_s": 3.43, "server_wall_s": 14.51,
             "server_operations": {"rotate": {"count": 12, "seconds": 0.5}}, "twin_max_abs_diff": 2.8e-5,
             "twin_bound": 0.01, "verified": True}
    text = "\n".join(format_summary(stats))
    assert "depth: the run used 121 multiplicative levels in all (5 per iteration" in text
    assert "offers 9, so the state was refreshed in between (each refresh resets the count to 9)" in text
    assert "server train 3.43 s (the server process took 14.51 s in all, including starting and loading" in text
    assert "rotate=12 (0.50 s)" in text and "rotations and relinearisations switch keys" in text
    assert "the twin" not in text  # the twin line is its own: twin_words
    assert "differ from the same computation done in plaintext (NumPy) by at most 2.8e-05 (the check allows " \
           "1.0e-02): verified" in twin_words(stats)
    stats["levels_needed"] = 4
    assert "used 4 of the 9 multiplicative levels one modulus chain of n16384 offers" in "\n".join(format_summary(stats))


def test_a_traced_plans_levels_read_as_first_and_later_iterations():
    """models/trace.py plans give {"iteration 1": x, "each later iteration": y}: the summary says so
    instead of adding the two."""
    from hetrain.protocol.report import depth_words

    stats = {"params": "n16384", "levels_needed": 9, "levels_available": 9, "rotation_steps": None,
             "levels_per_iteration": {"iteration 1": 1, "each later iteration": 4}}
    assert "(1 in the first iteration, 4 in each later one)" in depth_words(stats)
    stats["levels_per_iteration"] = {"iteration 1": 4, "each later iteration": 4}
    assert "(4 per iteration)" in depth_words(stats)
