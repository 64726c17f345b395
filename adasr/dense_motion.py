"""Dense motion network: (f_s, x_s, x_d) → mask-weighted deformation and occlusion map.

K sparse motions (pure translations x − x_d[k] + x_s[k], no Jacobians) plus the identity for the
background warp a compressed copy of f_s; with keypoint heatmaps they feed a 3-D hourglass whose
output gives a softmax mask over the K+1 motions and a sigmoid occlusion map.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from adasr.blocks import DownBlock3d, UpBlock3d, kp_to_gaussian, make_coordinate_grid
from adasr.config import DenseMotionConfig
from adasr.warp import WarpFn, grid_sample_3d

#: Variance of the keypoint Gaussians in normalised units (released value).
KP_VARIANCE = 0.01


class Hourglass3d(nn.Module):
    """3-D U-Net: DownBlock3d encoder, UpBlock3d decoder with skip concatenations, conv+BN+ReLU."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        be, mf = block_expansion, max_features
        self.encoder = nn.Module()
        self.encoder.down_blocks = nn.ModuleList(
            DownBlock3d(in_features if i == 0 else min(mf, be * 2**i), min(mf, be * 2 ** (i + 1)))
            for i in range(num_blocks))
        self.decoder = _HourglassDecoder(be, in_features, num_blocks, mf)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for block in cast(nn.ModuleList, self.encoder.down_blocks):
            skips.append(block(skips[-1]))
        return self.decoder(skips)


class _HourglassDecoder(nn.Module):
    FOLDABLE = (("conv", "norm"),)

    def __init__(self, be: int, in_features: int, num_blocks: int, mf: int) -> None:
        super().__init__()
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(num_blocks)):
            cin = (1 if i == num_blocks - 1 else 2) * min(mf, be * 2 ** (i + 1))
            self.up_blocks.append(UpBlock3d(cin, min(mf, be * 2**i)))
        self.out_channels = be + in_features
        self.conv = nn.Conv3d(self.out_channels, self.out_channels, 3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_channels, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class DenseMotion(NamedTuple):
    """deformation [B, D, h, w, 3] (x, y, z); occlusion [B, 1, h, w] or None; mask [B, K+1, D, h, w];
    features [B, c, D, h, w], the hourglass output that the heads read (lite's detail flow reads it too)."""

    deformation: torch.Tensor
    occlusion: torch.Tensor | None
    mask: torch.Tensor
    features: torch.Tensor


class DenseMotionNetwork(nn.Module):
    """f_s [B, C, D, h, w] with x_s, x_d [B, K, 3] → DenseMotion at (D, h·s, w·s), s = motion_scale.

    A motion_scale below 1 average-pools the compressed volume first: motion is smooth, so it can
    be estimated coarser than the appearance it moves.
    """

    FOLDABLE = (("compress", "norm"),)

    def __init__(self, cfg: DenseMotionConfig, num_kp: int, feature_channel: int, estimate_occlusion_map: bool) -> None:
        super().__init__()
        in_features = (num_kp + 1) * (cfg.compress + 1)
        self.hourglass = Hourglass3d(cfg.block_expansion, in_features, cfg.num_blocks, cfg.max_features)
        self.mask = nn.Conv3d(self.hourglass.out_channels, num_kp + 1, cfg.mask_kernel_size,
                              padding=cfg.mask_kernel_size // 2)
        self.compress = nn.Conv3d(feature_channel, cfg.compress, 1)
        self.norm = nn.BatchNorm3d(cfg.compress, affine=True)
        self.occlusion = (nn.Conv2d(self.hourglass.out_channels * cfg.reshape_depth, 1, cfg.occlusion_kernel_size,
                                    padding=cfg.occlusion_kernel_size // 2) if estimate_occlusion_map else None)
        self.pool = round(1 / cfg.motion_scale)

    def forward(self, f_s: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                warp: WarpFn = grid_sample_3d) -> DenseMotion:
        feature = F.relu(self.norm(self.compress(f_s)))  # B, c, D, h, w
        if self.pool != 1:
            feature = F.avg_pool3d(feature, (1, self.pool, self.pool))  # B, c, D, h/p, w/p
        b, c, d, h, w = feature.shape
        k1 = kp_source.shape[1] + 1
        identity = make_coordinate_grid((d, h, w), feature)  # D, h, w, 3
        # motion k is a translation x − x_d[k] + x_s[k]; the background's (k = 0) is none
        shifts = torch.cat([torch.zeros_like(kp_source[:, :1]), kp_source - kp_driving], dim=1)  # B, K+1, 3
        motions = identity + shifts[:, :, None, None, None, :]  # B, K+1, D, h, w, 3
        # the K+1 motions sample one volume: one warp with them stacked along the output depth, not a batch of K+1
        # copies of the volume (the same samples; the copies cost ONNX Runtime ~1 % of the renderer)
        deformed = warp(feature, motions.reshape(b, k1 * d, h, w, 3)).view(b, c, k1, d, h, w).transpose(1, 2)
        heat = kp_to_gaussian(kp_driving, (d, h, w), KP_VARIANCE) - kp_to_gaussian(kp_source, (d, h, w), KP_VARIANCE)
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1).unsqueeze(2)  # B, K+1, 1, D, h, w
        net_in = torch.cat([heat, deformed], dim=2).view(b, k1 * (c + 1), d, h, w)
        prediction = self.hourglass(net_in)  # B, out, D, h, w
        mask = F.softmax(self.mask(prediction), dim=1)  # B, K+1, D, h, w
        # Σ_k mask_k·(identity + shift_k) = identity + mask·shifts, as the mask sums to one: a small matmul
        deformation = identity + (mask.flatten(2).transpose(1, 2) @ shifts).view(b, d, h, w, 3)  # B, D, h, w, 3
        occlusion = None
        if self.occlusion is not None:
            occlusion = torch.sigmoid(self.occlusion(prediction.flatten(1, 2)))  # B, 1, h, w
        return DenseMotion(deformation, occlusion, mask, prediction)
