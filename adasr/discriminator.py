"""Multi-scale patch discriminator (training only): hinge GAN and feature matching.

Each scale has conv 4×4 blocks (no padding, spectral norm, instance norm after the first,
LeakyReLU 0.2, avg-pool 2 except the last) and a 1×1 conv to patch logits.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from adasr.blocks import spectral
from adasr.config import DiscriminatorConfig


class DiscriminatorOutput(NamedTuple):
    """Per-block feature maps (for feature matching) and the patch logits [B, 1, h, w]."""

    features: list[torch.Tensor]
    prediction: torch.Tensor


class DiscBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, norm: bool, pool: bool, sn: bool) -> None:
        super().__init__()
        self.conv = spectral(nn.Conv2d(in_ch, out_ch, 4), sn)
        self.norm = nn.InstanceNorm2d(out_ch, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        return F.avg_pool2d(out, 2) if self.pool else out


class PatchDiscriminator(nn.Module):
    """One scale: [B, 3, H, W] → DiscriminatorOutput."""

    def __init__(self, cfg: DiscriminatorConfig, image_channel: int = 3) -> None:
        super().__init__()
        be, mf, n = cfg.block_expansion, cfg.max_features, cfg.num_blocks
        self.down_blocks = nn.ModuleList(
            DiscBlock(image_channel if i == 0 else min(mf, be * 2**i), min(mf, be * 2 ** (i + 1)),
                      norm=i != 0, pool=i != n - 1, sn=cfg.sn)
            for i in range(n))
        self.conv = spectral(nn.Conv2d(min(mf, be * 2**n), 1, 1), cfg.sn)

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        features = []
        for block in self.down_blocks:
            x = block(x)
            features.append(x)
        return DiscriminatorOutput(features, self.conv(x))


def scale_key(scale: float) -> str:
    """Module key of a scale as the released checkpoints spell it: 1 → '1', 0.5 → '0-5'."""
    return f"{scale:g}".replace(".", "-")


class MultiScaleDiscriminator(nn.Module):
    """One PatchDiscriminator per scale; takes the image pyramid in the order of ``cfg.scales``."""

    def __init__(self, cfg: DiscriminatorConfig, image_channel: int = 3) -> None:
        super().__init__()
        self.scales = list(cfg.scales)
        self.discs = nn.ModuleDict({scale_key(s): PatchDiscriminator(cfg, image_channel) for s in self.scales})

    def forward(self, pyramid: Sequence[torch.Tensor]) -> list[DiscriminatorOutput]:
        if len(pyramid) != len(self.scales):
            raise ValueError(f"expected {len(self.scales)} images (scales {self.scales}), got {len(pyramid)}")
        return [self.discs[scale_key(s)](img) for s, img in zip(self.scales, pyramid)]
