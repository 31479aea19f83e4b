"""RegNet_X_400MF in plain PyTorch, module for module as in torchvision.

torchvision cannot be installed here, so this file rebuilds its ``RegNet`` for the X_400MF
setting with the same module names, so that a torchvision state dict
(``torchvision.models.regnet_x_400mf(weights=...).state_dict()``) loads unchanged.
Only the classification layer ``fc`` is left out: the model ends with average pooling and
flatten and returns the 400 features used as the client's transfer-learning input.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

# torchvision: BlockParams.from_init_params(depth=22, w_0=24, w_a=24.48, w_m=2.54, group_width=16)
# expands to these per-stage settings (computed from the quantised linear width rule).
STEM_WIDTH = 32
STAGE_WIDTHS = (32, 64, 160, 400)
STAGE_DEPTHS = (1, 2, 7, 12)
GROUP_WIDTH = 16
BOTTLENECK_MULTIPLIER = 1.0
STAGE_STRIDE = 2
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
FEATURE_DIM = STAGE_WIDTHS[-1]


def _conv_bn(w_in: int, w_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: conv (no bias, 'same' padding) -> BN [-> ReLU].

    Children are numbered 0, 1, 2 so the state-dict keys read ``<name>.0.weight``, ``<name>.1.*``.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(w_in, w_out, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(w_out, eps=BN_EPS, momentum=BN_MOMENTUM),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BottleneckTransform(nn.Sequential):
    """1x1 -> grouped 3x3 (carries the stride) -> 1x1, named a, b, c (RegNetX: no SE)."""

    def __init__(self, w_in: int, w_out: int, stride: int, group_width: int, bottleneck_multiplier: float) -> None:
        w_b = int(round(w_out * bottleneck_multiplier))
        groups = w_b // group_width
        super().__init__(
            OrderedDict(
                a=_conv_bn(w_in, w_b, 1),
                b=_conv_bn(w_b, w_b, 3, stride=stride, groups=groups),
                c=_conv_bn(w_b, w_out, 1, relu=False),
            )
        )


class ResBottleneckBlock(nn.Module):
    """relu(proj(x) + f(x)); the 1x1 projection exists only when the shape changes."""

    def __init__(self, w_in: int, w_out: int, stride: int, group_width: int, bottleneck_multiplier: float) -> None:
        super().__init__()
        self.proj = None
        if w_in != w_out or stride != 1:
            self.proj = _conv_bn(w_in, w_out, 1, stride=stride, relu=False)
        self.f = BottleneckTransform(w_in, w_out, stride, group_width, bottleneck_multiplier)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            x = self.proj(x) + self.f(x)
        else:
            x = x + self.f(x)
        return self.activation(x)


class AnyStage(nn.Sequential):
    """`depth` blocks named ``block{stage}-{i}``; only the first one changes width and stride."""

    def __init__(self, w_in: int, w_out: int, stride: int, depth: int, stage_index: int) -> None:
        super().__init__()
        for i in range(depth):
            block = ResBottleneckBlock(
                w_in if i == 0 else w_out, w_out, stride if i == 0 else 1, GROUP_WIDTH, BOTTLENECK_MULTIPLIER
            )
            self.add_module(f"block{stage_index}-{i}", block)


class RegNetFeatures(nn.Module):
    """RegNet_X_400MF without ``fc``: (N, 3, H, W) float images -> (N, 400) features."""

    feature_dim = FEATURE_DIM

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, STEM_WIDTH, 3, stride=2)
        stages = []
        w_in = STEM_WIDTH
        for i, (w_out, depth) in enumerate(zip(STAGE_WIDTHS, STAGE_DEPTHS), start=1):
            stages.append((f"block{i}", AnyStage(w_in, w_out, STAGE_STRIDE, depth, stage_index=i)))
            w_in = w_out
        self.trunk_output = nn.Sequential(OrderedDict(stages))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's ResNet-style initialisation, so an unloaded model behaves like theirs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.trunk_output(x)
        x = self.avgpool(x)
        return x.flatten(start_dim=1)


def regnet_x_400mf() -> RegNetFeatures:
    """A randomly initialised RegNet_X_400MF feature extractor (eval mode; load weights next)."""
    return RegNetFeatures().eval()


def parameter_count(model: nn.Module) -> int:
    """Number of learnable parameters (buffers excluded), as torchvision's `num_params` counts."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["RegNetFeatures", "regnet_x_400mf", "parameter_count", "FEATURE_DIM"]
