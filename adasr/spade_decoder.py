"""SPADE decoder (the "decoder" of AdaSR's encoder–decoder): occluded feature → RGB image.

Every SPADE layer is modulated by the same occluded feature, resized by nearest neighbour, so
appearance detail reaches every resolution; AdaSR trains this path to restore high frequencies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adasr.blocks import SPADEResnetBlock
from adasr.config import SPADEDecoderConfig
from adasr.detail_path import DetailFusion, SourceBlend


class SPADEDecoder(nn.Module):
    """[B, ic, h, w] → [B, 3, 4h, 4w] in [0, 1]: fc, middle blocks, two ×2 up blocks, conv, sigmoid.

    With one up block (lite) the last ×2 is a bilinear resize.

    With ``detail_channels`` (lite), a warped full-resolution detail map joins after the last up block;
    with ``blend_source`` the warped source photo is blended into the output through a learned mask.
    """

    def __init__(self, cfg: SPADEDecoderConfig, spectral_norm: bool = True, detail_channels: int = 0,
                 blend_source: bool = False) -> None:
        super().__init__()
        mid, ic, oc = cfg.middle_channels, cfg.in_channels, cfg.out_channels  # 512, 256, 64 as released
        self.fc = nn.Conv2d(ic, mid, 3, padding=1)
        self.num_middle_blocks = cfg.num_middle_blocks
        for i in range(cfg.num_middle_blocks):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(mid, mid, cfg.label_nc, cfg.spade_hidden, spectral_norm))
        self.up_0 = SPADEResnetBlock(mid, cfg.up_channels, cfg.label_nc, cfg.spade_hidden, spectral_norm,
                                     cfg.coarse_modulation)
        self.up_1 = SPADEResnetBlock(cfg.up_channels, oc, cfg.label_nc, cfg.spade_hidden, spectral_norm,
                                     cfg.coarse_modulation) if cfg.num_up_blocks == 2 else None
        self.conv_img = nn.Conv2d(oc, 3, 3, padding=1)
        self.detail_fusion = DetailFusion(oc, detail_channels) if detail_channels else None
        self.source_blend = SourceBlend(oc) if blend_source else None

    def forward(self, feature: torch.Tensor, detail: torch.Tensor | None = None,
                warped_source: torch.Tensor | None = None,
                photo_floor: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frame [B, 3, 4h, 4w] and, with the source blend, its mask on the photo [B, 1, 4h, 4w] (else None);
        ``warped_source`` [B, 3, 4h, 4w]: the source photo under the motion, for the source blend; ``photo_floor``
        [B, 1, 4h, 4w]: the mask's least value (where the expression rig moved the lids)."""
        seg = feature
        x = self.fc(feature)  # B, mid, h, w
        for i in range(self.num_middle_blocks):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)  # B, up, 2h, 2w
        if self.up_1 is not None:
            x = self.up_1(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)  # B, oc, 4h, 4w
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if self.detail_fusion is not None and detail is not None:
            x = self.detail_fusion(x, detail)
        x = F.leaky_relu(x, 0.2)
        if self.source_blend is not None and warped_source is not None:
            return self.source_blend(x, self.conv_img, warped_source, photo_floor)
        return torch.sigmoid(self.conv_img(x)), None  # B, 3, 4h, 4w
