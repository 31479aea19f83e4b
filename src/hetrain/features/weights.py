"""Load a torchvision-format state dict into the RegNet module, with errors a user can act on."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hetrain.features.errors import WeightsError

HOW_TO_GET_WEIGHTS = (
    "hetrain downloads nothing. On a machine with torchvision and internet, run:\n"
    "    python -c \"import torch, torchvision; torch.save(torchvision.models.regnet_x_400mf("
    "weights='IMAGENET1K_V1').state_dict(), 'regnet_x_400mf.pth')\"\n"
    "then copy regnet_x_400mf.pth here and pass it with --weights regnet_x_400mf.pth "
    "(or use --backbone torchscript/onnx with an exported model file)"
)
_SHOW = 5  # how many offending keys an error lists


def read_state_dict(path: str | Path | None) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (plain, or wrapped in 'state_dict'/'model')."""
    if path is None:
        raise WeightsError(f"no weights file given for regnet_x_400mf. {HOW_TO_GET_WEIGHTS}")
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}. {HOW_TO_GET_WEIGHTS}")
    try:
        # weights_only: never run pickled code from a weights file
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file (pickle, zip, runtime)
        raise WeightsError(f"cannot read {path} as a PyTorch state dict (torch.save of model.state_dict()): {exc}") from exc
    for wrapper in ("state_dict", "model"):  # common training-checkpoint layouts
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}  # DataParallel prefix


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> nn.Module:
    """Strictly load `state` into `model`, ignoring the classifier ``fc.*`` and tolerating absent
    BatchNorm ``num_batches_tracked`` counters (older checkpoints lack them; eval ignores them)."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: {tuple(state[k].shape)} in file, {tuple(v.shape)} expected"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {missing[:_SHOW]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:_SHOW]}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches, e.g. {wrong[:_SHOW]}")
    if problems:
        raise WeightsError(
            f"{source} does not fit torchvision's regnet_x_400mf: " + "; ".join(problems)
            + ". Expected the state dict of torchvision.models.regnet_x_400mf()."
        )
    state = {**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}, **state}
    model.load_state_dict(state, strict=True)
    return model.eval()
