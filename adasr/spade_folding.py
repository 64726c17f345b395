"""Inference-time rewrite of the SPADE decoder's blocks: the same numbers, less work per frame.

Every SPADE norm resizes the decoder's input (the segmentation map, S/4 × S/4) by nearest neighbour to its
block's resolution (×1, ×2, ×4) and runs a 3×3 conv on it. A 3×3 conv over a ×k nearest upsampling is a
3×3 conv at the low resolution with k² output positions per pixel, followed by a pixel shuffle: each
upsampled tap (a + dy) falls on low-resolution offset ⌊(a + dy) / k⌋, zero padding included. So the ×4
map (the renderer's largest tensor) is never built, and a block's two or three norms share one conv with
many output channels instead of three thin ones (under ×4 only 9 of the 16 sub-position kernels differ;
computing each once measured no faster in ONNX Runtime, so the conv stays dense). γ and β become one conv
each norm, with γ's ``1 +`` folded into its bias (a bilinear resize keeps it: its weights sum to one). With
``coarse_modulation`` (lite) the up blocks' γ and β are already computed at the map's resolution: nothing
to fold there, the convs are still shared. Exact up to float rounding; used by ``fold_for_inference``
(PyTorch and export).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from adasr.blocks import SPADE, SPADEResnetBlock, resize_to
from adasr.spade_decoder import SPADEDecoder


def subpixel_conv_weight(weight: torch.Tensor, k: int) -> torch.Tensor:
    """3×3 conv weight [O, C, 3, 3] applied after a ×k nearest upsampling → the equivalent low-resolution
    conv weight [O·k², C, 3, 3], output channels ordered as ``pixel_shuffle(·, k)`` expects (o, a, b)."""
    out_channels, in_channels = weight.shape[:2]
    folded = weight.new_zeros(out_channels, k, k, in_channels, 3, 3)
    for a in range(k):
        for b in range(k):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    folded[:, a, b, :, (a + dy) // k + 1, (b + dx) // k + 1] += weight[:, :, dy + 1, dx + 1]
    return folded.reshape(out_channels * k * k, in_channels, 3, 3)


def conv_bias(conv: nn.Conv2d) -> torch.Tensor:
    """The bias of a conv built with one (every conv these folds touch)."""
    if conv.bias is None:
        raise ValueError("conv without a bias")
    return conv.bias


def _modulation(norm: SPADE) -> nn.Conv2d:
    """γ and β of one norm as one conv [2·channels], with γ's ``1 +`` in its bias."""
    gamma, beta = norm.mlp_gamma, norm.mlp_beta
    conv = nn.Conv2d(gamma.in_channels, gamma.out_channels + beta.out_channels, 3, padding=1,
                     device=gamma.weight.device, dtype=gamma.weight.dtype)
    conv.weight.copy_(torch.cat([gamma.weight, beta.weight]))
    conv_bias(conv).copy_(torch.cat([conv_bias(gamma) + 1, conv_bias(beta)]))
    return conv


class FoldedSPADEResnetBlock(nn.Module):
    """A ``SPADEResnetBlock`` whose input runs at ``upsample``× the segmentation map: same output."""

    def __init__(self, block: SPADEResnetBlock, upsample: int) -> None:
        super().__init__()
        norms = [block.norm_0, block.norm_1] + ([block.norm_s] if block.learned_shortcut else [])
        shared = [cast(nn.Conv2d, norm.mlp_shared[0]) for norm in norms]
        self.upsample = upsample
        self.hidden = shared[0].out_channels
        with torch.no_grad():
            weight = torch.cat([subpixel_conv_weight(conv.weight, upsample) for conv in shared])
            self.shared = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1, device=weight.device,
                                    dtype=weight.dtype)  # where the model already is (a CUDA backend folds there)
            self.shared.weight.copy_(weight)
            conv_bias(self.shared).copy_(torch.cat([conv_bias(conv).repeat_interleave(upsample**2) for conv in shared]))
            self.modulations = nn.ModuleList(_modulation(norm) for norm in norms)
        self.conv_0, self.conv_1 = block.conv_0, block.conv_1
        self.conv_s = block.conv_s if block.learned_shortcut else None

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.shared(seg))
        if self.upsample > 1:
            hidden = F.pixel_shuffle(hidden, self.upsample)
        parts = hidden.split(self.hidden, dim=1)

        def norm(i: int, t: torch.Tensor) -> torch.Tensor:
            gamma, beta = self.modulations[i](parts[i]).chunk(2, dim=1)  # split before resizing: 4–16× fewer values
            gamma, beta = resize_to(gamma, t), resize_to(beta, t)
            return F.instance_norm(t, eps=1e-5) * gamma + beta

        x_s = self.conv_s(norm(2, x)) if self.conv_s is not None else x
        dx = self.conv_0(F.leaky_relu(norm(0, x), 0.2))
        return x_s + self.conv_1(F.leaky_relu(norm(1, dx), 0.2))


def fold_spade_blocks(decoder: SPADEDecoder) -> int:
    """Replace the SPADE blocks of a ``SPADEDecoder`` (eval mode, plain convs) in place; returns how many."""
    names = [f"G_middle_{i}" for i in range(decoder.num_middle_blocks)] + ["up_0", "up_1"]
    scales = [1] * decoder.num_middle_blocks + [2, 4]
    count = 0
    for name, scale in zip(names, scales):
        block = getattr(decoder, name)
        if isinstance(block, SPADEResnetBlock):
            coarse = block.norm_0.coarse  # γ, β at the map's resolution already: nothing to fold, still share
            setattr(decoder, name, FoldedSPADEResnetBlock(block, 1 if coarse else scale))
            count += 1
    return count
