"""Preprocessing: 3 channels, 224x224 bilinear (torchvision tensor Resize), ImageNet normalisation."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from hetrain.features.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_model_input  # noqa: E402


def _reference(rgb_uint8: np.ndarray, size: int = 224) -> torch.Tensor:
    """ToTensor -> Resize((size, size)) on a tensor (bilinear, antialias) -> Normalize, spelled out."""
    x = torch.from_numpy(rgb_uint8).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def test_greyscale_is_stacked_to_three_identical_channels():
    grey = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    x = to_model_input(grey)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    torch.testing.assert_close(x, _reference(np.repeat(grey[..., None], 3, axis=-1)))
    # undo the normalisation: the three channels hold the same resized grey image
    raw = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(raw[:, 0], raw[:, 1])
    torch.testing.assert_close(raw[:, 0], raw[:, 2])


def test_colour_and_downscaling_match_reference():
    rgb = np.random.default_rng(1).integers(0, 256, (1, 300, 260, 3), dtype=np.uint8)
    torch.testing.assert_close(to_model_input(rgb), _reference(rgb))


def test_mixed_sizes_from_a_folder_and_constant_image_values():
    images = [np.full((10, 12), 255, np.uint8), np.zeros((30, 20, 3), np.uint8)]
    x = to_model_input(images, size=32)
    assert x.shape == (2, 3, 32, 32)
    for c, (m, s) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD)):
        torch.testing.assert_close(x[0, c], torch.full((32, 32), (1 - m) / s))  # white
        torch.testing.assert_close(x[1, c], torch.full((32, 32), (0 - m) / s))  # black


def test_float_pixels_in_unit_range_equal_uint8():
    grey = np.random.default_rng(2).integers(0, 256, (1, 28, 28), dtype=np.uint8)
    torch.testing.assert_close(to_model_input(grey.astype(np.float32) / 255), to_model_input(grey))
