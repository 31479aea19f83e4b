"""Pixels -> model input: 3 channels, 224x224 bilinear resize, ImageNet normalisation.

Matches torchvision's ``ToTensor()`` -> ``Resize((224, 224))`` -> ``Normalize(mean, std)`` on
tensors: values scaled to [0, 1] first, then bilinear interpolation with ``align_corners=False``
and antialiasing (torchvision's default; it only changes anything when shrinking), then
per-channel normalisation. Greyscale is resized once and then stacked to three channels, which
gives the same numbers as stacking first because each channel is resized on its own.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224


def to_model_input(pixels: np.ndarray | list[np.ndarray], size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 (0-255) or float (0-1) images, as one (B,H,W[,3]) array or a list of (H,W[,3]) arrays
    -> (B,3,size,size) float32."""
    if isinstance(pixels, np.ndarray):
        return _batch_to_input(pixels, size)
    # Images of different sizes (a folder) are resized one by one, then stacked.
    return torch.cat([_batch_to_input(p[None], size) for p in pixels])


def _batch_to_input(batch: np.ndarray, size: int) -> torch.Tensor:
    if not batch.flags.writeable:  # idx buffers and PIL arrays are read-only; torch warns on those
        batch = batch.copy()
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(torch.float32)
    if batch.dtype == np.uint8:  # float pixels are already in [0, 1]
        x = x.div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # -> (B, C, H, W), C in {1, 3}
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()
