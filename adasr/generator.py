"""Occlusion-aware SPADE generator: appearance encoder (f_s), dense motion, 3-D warp, decoder.

Split along the product's seam: ``encode`` depends only on the source and runs once per call;
``render`` runs every frame from the cached f_s and the two keypoint sets. Attribute names are
those of the released state dict (``first``, ``down_blocks``, ``second``, ``resblocks_3d``…).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from adasr.blocks import DownBlock2d, ResBlock3d, SameBlock2d
from adasr.config import ModelConfig
from adasr.dense_motion import DenseMotionNetwork
from adasr.expression_rig import RigField, field_on_grid, paint_cavity, volume_flow
from adasr.detail_path import (DetailEncoder, DetailFlow, catmull_rom, catmull_rom_weights, pack_detail,
                               sample_border, unpack_detail, with_photo_differences)
from adasr.spade_decoder import SPADEDecoder
from adasr.warp import WarpFn, grid_sample_3d


class RenderOutput(NamedTuple):
    """prediction [B, 3, S, S] in [0, 1]; occlusion [B, 1, h, w] | None; mask [B, K+1, D, h', w'];
    deformation [B, D, h', w', 3]; decoder_input [B, ic, h, w] (the occluded feature); blend_mask [B, 1, S, S]: the
    source blend's weight on the warped photo (None without the blend)."""

    prediction: torch.Tensor
    occlusion: torch.Tensor | None
    mask: torch.Tensor
    deformation: torch.Tensor
    decoder_input: torch.Tensor
    blend_mask: torch.Tensor | None = None


class OcclusionAwareSPADEGenerator(nn.Module):
    """The generator of the released checkpoint (key ``generator``)."""

    def __init__(self, cfg: ModelConfig, spectral_norm: bool = True) -> None:
        super().__init__()
        g = cfg.generator
        norm = g.appearance_norm
        self.dense_motion_network = DenseMotionNetwork(g.dense_motion_params, cfg.num_kp, cfg.feature_channel,
                                                       g.estimate_occlusion_map)
        self.first = SameBlock2d(cfg.image_channel, g.block_expansion, kernel_size=3, norm=norm)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(min(g.max_features, g.block_expansion * 2**i),
                        min(g.max_features, g.block_expansion * 2 ** (i + 1)), norm=norm)
            for i in range(g.num_down_blocks))
        width = min(g.max_features, g.block_expansion * 2**g.num_down_blocks)
        self.second = nn.Conv2d(width, g.max_features, 1)
        self.reshape_channel, self.reshape_depth = g.reshape_channel, g.reshape_depth
        self.resblocks_3d = nn.Sequential()
        for i in range(g.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(g.reshape_channel, norm=norm))
        self.third = SameBlock2d(g.max_features, width, kernel_size=3, lrelu=True)
        self.fourth = nn.Conv2d(width, width, 1)
        self.decoder = SPADEDecoder(g.decoder, spectral_norm, g.detail_channels, g.blend_source)
        self.feature_channel = cfg.feature_channel
        self.detail_encoder = DetailEncoder(g.block_expansion + cfg.image_channel, g.detail_channels) \
            if g.detail_channels else None
        self.detail_flow = DetailFlow(self.dense_motion_network.hourglass.out_channels, g.reshape_depth,
                                      g.dense_motion_params.occlusion_kernel_size) if g.detail_channels else None
        self.photo_differences = g.photo_differences_channels  # 0 unless the photo is warped Catmull-Rom
        self.detail_channels = g.detail_channels

    @property
    def blend_source(self) -> bool:
        """Whether f_s carries the source photo for the decoder's source blend."""
        return self.decoder.source_blend is not None

    def encode(self, source: torch.Tensor) -> torch.Tensor:
        """Source image [B, 3, S, S] in [0, 1] → appearance feature volume f_s [B, C, D, S/4, S/4].

        With a detail path, C also counts the packed full-resolution detail map's channels (and, with
        ``blend_source``, the source RGB after them, then its second differences for a cubic warp).
        """
        first = self.first(source)  # B, be, S, S
        out = first
        for block in self.down_blocks:
            out = block(out)  # B, ·, S/4, S/4 after both
        out = self.second(out)  # B, C·D, S/4, S/4
        b, _, h, w = out.shape
        volume = self.resblocks_3d(out.view(b, self.reshape_channel, self.reshape_depth, h, w))
        if self.detail_encoder is None:
            return volume
        detail = self.detail_encoder(first, source)
        if self.blend_source:
            detail = torch.cat([detail, source], dim=1)
        f_s = torch.cat([volume, pack_detail(detail, self.reshape_depth)], dim=1)
        if self.photo_differences:
            f_s = with_photo_differences(f_s, self.feature_channel, self.detail_channels)
        return f_s

    def render(self, f_s: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
               warp: WarpFn = grid_sample_3d, rig: RigField | None = None) -> RenderOutput:
        """Cached f_s and keypoints x_s, x_d [B, K, 3] → the driven frame and intermediates; ``rig``: the
        expression rig's field (``adasr.expression_rig``), composed with the learned warp."""
        packed_detail = f_s[:, self.feature_channel:]
        f_s = f_s[:, :self.feature_channel]
        motion = self.dense_motion_network(f_s, kp_source, kp_driving, warp)
        b, c, d, h, w = f_s.shape
        deformation = motion.deformation
        if deformation.shape[1:4] != (d, h, w):
            deformation = F.interpolate(deformation.permute(0, 4, 1, 2, 3), size=(d, h, w),
                                        mode="trilinear").permute(0, 2, 3, 4, 1)  # B, D, h, w, 3
        if rig is not None:  # one flow for every depth: the slices' x, y differ by far less than a rig cell
            # without the lids: an eye is two of the volume's cells; they move in the full-resolution photo
            deformation = deformation + volume_flow(rig, deformation[:, d // 2, :, :, :2])[:, None]
        out = warp(f_s, deformation).reshape(b, c * d, h, w)  # B, C·D, h, w
        out = self.fourth(self.third(out))  # B, ic, h, w
        occlusion = motion.occlusion
        if occlusion is not None:
            if occlusion.shape[2:] != out.shape[2:]:
                occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear")
            out = out * occlusion
        size = h * 2 ** len(self.down_blocks)
        if self.detail_flow is None:
            prediction, _ = self.decoder(out)
            if rig is not None:
                pixels = F.interpolate(motion.deformation[:, d // 2, :, :, :2].permute(0, 3, 1, 2), size=(size, size),
                                       mode="bilinear").permute(0, 2, 3, 1)
                prediction = paint_cavity(prediction, field_on_grid(rig, pixels).cavity)
            return RenderOutput(prediction, occlusion, motion.mask, motion.deformation, out)
        grid, detail_occlusion = self.detail_flow(motion.features, motion.deformation, size)
        on_grid = field_on_grid(rig, grid) if rig is not None else None
        if on_grid is not None:
            grid = grid + on_grid.flow
        warped = sample_border(unpack_detail(packed_detail), grid)
        if self.blend_source:
            photo_channels = 3 + self.photo_differences
            detail, warped_source = warped[:, :-photo_channels] * detail_occlusion, warped[:, -photo_channels:]
            if self.photo_differences:
                # a cubic overshoots at sharp edges; the photo, and so the frame, stays in [0, 1]
                warped_source = catmull_rom(warped_source, *catmull_rom_weights(grid, size)).clamp(0, 1)
            prediction, blend_mask = self.decoder(out, detail, warped_source,
                                                  on_grid.cover if on_grid is not None else None)
        else:
            prediction, blend_mask = self.decoder(out, warped * detail_occlusion)
        if on_grid is not None:
            prediction = paint_cavity(prediction, on_grid.cavity)
        return RenderOutput(prediction, occlusion, motion.mask, motion.deformation, out, blend_mask)

    def forward(self, source: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                rig: RigField | None = None) -> RenderOutput:
        return self.render(self.encode(source), kp_source, kp_driving, rig=rig)
