"""Canonical 3-D keypoint detector (x_c in the paper): image → K keypoints in [-1, 1]³.

2-D encoder on an anti-aliased ×0.25 copy of the image, 1×1 lift to a 3-D volume, 3-D decoder,
then a soft-argmax (softmax with temperature over every voxel, expectation of the grid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adasr.blocks import AntiAliasDownsample, DownBlock2d, UpBlock3d, make_coordinate_grid
from adasr.config import KPDetectorConfig


class KPHourglass(nn.Module):
    """2-D down blocks → lift (1×1 conv + reshape to depth) → 3-D up blocks."""

    def __init__(self, cfg: KPDetectorConfig, in_ch: int) -> None:
        super().__init__()
        be, mf, n = cfg.block_expansion, cfg.max_features, cfg.num_blocks
        self.down_blocks = nn.Sequential()
        for i in range(n):
            cin = in_ch if i == 0 else min(mf, be * 2**i)
            self.down_blocks.add_module(f"down{i}", DownBlock2d(cin, min(mf, be * 2 ** (i + 1))))
        self.conv = nn.Conv2d(min(mf, be * 2**n), cfg.reshape_channel, 1)
        self.up_blocks = nn.Sequential()
        for i in range(n):
            cin = min(mf, be * 2 ** (n - i))
            self.up_blocks.add_module(f"up{i}", UpBlock3d(cin, min(mf, be * 2 ** (n - i - 1))))
        self.reshape_depth = cfg.reshape_depth
        self.out_channels = be

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))  # B, reshape_channel, h, w
        b, c, h, w = out.shape
        out = out.view(b, c // self.reshape_depth, self.reshape_depth, h, w)  # B, C', D, h, w
        return self.up_blocks(out)  # B, block_expansion, D, 2^n·h, 2^n·w


class KPDetector(nn.Module):
    """x_c = E[grid] under softmax(heatmap / temperature): [B, 3, S, S] in [0, 1] → [B, K, 3]."""

    def __init__(self, cfg: KPDetectorConfig, num_kp: int = 15, image_channel: int = 3) -> None:
        super().__init__()
        self.predictor = KPHourglass(cfg, image_channel)
        self.kp = nn.Conv3d(self.predictor.out_channels, num_kp, 3, padding=1)
        self.temperature = cfg.temperature
        self.down = AntiAliasDownsample(image_channel, cfg.scale_factor) if cfg.scale_factor != 1 else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.down(image) if self.down is not None else image  # B, 3, S/4, S/4
        heat = self.kp(self.predictor(x))  # B, K, D, h, w
        prob = F.softmax(heat.flatten(2) / self.temperature, dim=2)  # B, K, D·h·w
        grid = make_coordinate_grid(tuple(heat.shape[2:]), heat).reshape(-1, 3)  # D·h·w, 3
        return prob @ grid  # B, K, 3
