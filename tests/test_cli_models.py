"""`hetrain --version` and `hetrain models` (issue 17 item 1)."""
import hetrain
from hetrain import ckks
from hetrain.cli.main import main
from hetrain.models.base import get_trainer, registry


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
