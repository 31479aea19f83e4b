"""Client-side transfer learning: images -> frozen CNN -> feature CSV for the trainers.

Needs the optional extra (``pip install 'hetrain[features]'``: torch, pillow, onnxruntime).
Nothing here imports torch until it is used, so ``import hetrain.features`` always works.

    from hetrain.features import load_backbone, open_images, extract_to_csv
    backbone = load_backbone("regnet_x_400mf", "regnet_x_400mf.pth")
    extract_to_csv(open_images("mnist_test_10k.npz"), backbone, "features.csv")
"""
from __future__ import annotations

import importlib

# public name -> submodule that defines it (loaded on first access: PEP 562)
_LAZY = {
    "regnet_x_400mf": "regnet",
    "RegNetFeatures": "regnet",
    "load_backbone": "backbones",
    "Backbone": "backbones",
    "BACKBONES": "backbones",
    "open_images": "images",
    "ImageSet": "images",
    "to_model_input": "preprocess",
    "extract_to_csv": "extract",
    "iter_features": "extract",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _LAZY[name] in ("regnet", "backbones", "preprocess", "extract"):
        from hetrain.features.errors import require

        require("torch", "feature extraction")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
