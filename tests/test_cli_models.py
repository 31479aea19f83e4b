"""`hetrain --version` and `hetrain models` (issue 17 item 1)."""
import hetrain
from hetrain import ckks
from hetrain.cli.main import main
from hetrain.models.base import get_trainer, registry
from hetrain.protocol import TrainedModel


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:  # argparse's version action exits 0
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"hetrain {hetrain.__version__}"


def test_models_lists_every_trainer_layout_preset_and_backend(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    get_trainer("mlr")
    lines = out.splitlines()
    for name, cls in registry.items():
        line = next(ln for ln in lines if ln.split()[:1] == [name])
        assert "capabilities:" in line and all(c in line for c in cls.capabilities)
    for layout in ("auto", "dvr", "diagonal"):
        assert any(ln.split()[:1] == [layout] for ln in lines)
    for name, p in ckks.PRESETS.items():
        line = next(ln for ln in lines if ln.split()[:1] == [name])
        assert f"N={p.poly_modulus_degree}" in line and f"{p.levels} levels" in line
    for backend in ckks.BACKENDS:
        assert any(ln.split()[:1] == [backend] for ln in lines)
    assert "INSECURE" in next(ln for ln in lines if ln.split()[:1] == ["sim"])


def test_mlr_summary_names_its_default_packing(capsys):
    """`hetrain models` once called mlr's packing "Volley Revolver" while its default is blocked."""
    from hetrain.models.mlr import DEFAULTS

    assert main(["models"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.split()[:1] == ["mlr"])
    summary = line.split(" [capabilities:")[0]
    assert f"{DEFAULTS['layout']} packing" in summary
    assert "and Volley Revolver packing" not in summary


def test_fit_explains_its_figures_in_plain_words(capsys, tmp_path):
    import numpy as np

    from hetrain.data import load_builtin

    X, y = load_builtin("iris")
    data = tmp_path / "iris.csv"
    np.savetxt(data, np.column_stack([y, X]), delimiter=",")
    assert main(["fit", "--data", str(data), "--out", str(tmp_path / "m.json"), "--backend", "sim", "--iterations",
                 "2", "--sigmoid", "deg3:16", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    check = next(ln for ln in out if ln.startswith("check: "))
    diff = float(out[-1].split("=")[1])
    bound = TrainedModel.load(tmp_path / "m.json").info["twin_bound"]
    assert f"to {diff:.1e} (an honest run of this job stays within {bound:.1e}):" in check
    assert "did not change the result" in check
    assert any(ln.startswith("depth: the training used") for ln in out)
    assert any("INSECURE" in ln for ln in out if ln.startswith("note: "))
