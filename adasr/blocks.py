"""Shared layers of the face-vid2vid family, written from the released architecture's description.

Submodule names (``conv``, ``norm``, ``conv1``…) are those of the released state dicts, so official
checkpoints load strictly. Every block that runs a conv straight into a batch norm lists the pair
in ``FOLDABLE``; ``adasr.folding`` uses that list to fold the norm into the conv for inference.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

NormKind = Literal["batch", "none"]


def batch_norm_2d(channels: int, kind: NormKind = "batch") -> nn.Module:
    return nn.BatchNorm2d(channels, affine=True) if kind == "batch" else nn.Identity()


def batch_norm_3d(channels: int, kind: NormKind = "batch") -> nn.Module:
    return nn.BatchNorm3d(channels, affine=True) if kind == "batch" else nn.Identity()


class SameBlock2d(nn.Module):
    """conv → BN → ReLU (or LeakyReLU 0.01), resolution kept."""

    FOLDABLE: ClassVar[tuple[tuple[str, str], ...]] = (("conv", "norm"),)

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, lrelu: bool = False,
                 norm: NormKind = "batch") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        self.norm = batch_norm_2d(out_ch, norm)
        self.act: nn.Module = nn.LeakyReLU(0.01) if lrelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """conv 3×3 → BN → ReLU → avg-pool 2: halves H and W."""

    FOLDABLE: ClassVar[tuple[tuple[str, str], ...]] = (("conv", "norm"),)

    def __init__(self, in_ch: int, out_ch: int, norm: NormKind = "batch") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm = batch_norm_2d(out_ch, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class DownBlock3d(nn.Module):
    """conv3d 3×3×3 → BN → ReLU → avg-pool (1, 2, 2): halves H and W, keeps depth."""

    FOLDABLE: ClassVar[tuple[tuple[str, str], ...]] = (("conv", "norm"),)

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), (1, 2, 2))


class UpBlock3d(nn.Module):
    """nearest ×(1, 2, 2) → conv3d 3×3×3 → BN → ReLU: doubles H and W, keeps depth."""

    FOLDABLE: ClassVar[tuple[tuple[str, str], ...]] = (("conv", "norm"),)

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv(relu(BN(conv(relu(BN(x)))))).

    Only ``norm2`` follows a conv directly, so only it folds.
    """

    FOLDABLE: ClassVar[tuple[tuple[str, str], ...]] = (("conv1", "norm2"),)

    def __init__(self, channels: int, norm: NormKind = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm1 = batch_norm_3d(channels, norm)
        self.norm2 = batch_norm_3d(channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return x + out


class AntiAliasDownsample(nn.Module):
    """Gaussian blur (σ = (1/scale − 1)/2) then keep every (1/scale)-th pixel from index 0.

    The kernel is the buffer ``weight`` [C, 1, k, k] that official checkpoints store as
    ``down.weight``; zero padding of k//2 on each side.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, size, size).clone())
        self.groups = channels
        self.pad = size // 2
        self.step = int(round(1 / scale))

    weight: torch.Tensor  # a registered buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(F.pad(x, (self.pad,) * 4), self.weight, groups=self.groups)
        return out[:, :, :: self.step, :: self.step]


def grid_axis(n: int, like: torch.Tensor) -> torch.Tensor:
    """The n normalised coordinates of one grid axis, −1 to 1 with both ends included (``like``'s dtype and device)."""
    return torch.linspace(-1, 1, n, dtype=like.dtype, device=like.device)


def make_coordinate_grid(spatial_size: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Normalised grid in [-1, 1] (endpoints included), last axis ordered (x=W, y=H[, z=D]).

    (H, W) → [H, W, 2]; (D, H, W) → [D, H, W, 3]. Same dtype and device as ``like``.
    """
    mesh = torch.meshgrid(*(grid_axis(n, like) for n in spatial_size), indexing="ij")
    return torch.stack(mesh[::-1], dim=-1)


def kp_to_gaussian(kp: torch.Tensor, spatial_size: tuple[int, int, int], variance: float) -> torch.Tensor:
    """Keypoints [B, K, 3] → isotropic 3-D Gaussians on the normalised grid, [B, K, D, H, W].

    An isotropic Gaussian is the product of one per axis, so three short exps replace one over the
    whole grid (the renderer's per-frame dense motion runs this twice).
    """
    factors = []
    for axis, n in enumerate(reversed(spatial_size)):  # x over W, y over H, z over D
        factors.append(torch.exp(-0.5 * (grid_axis(n, kp) - kp[:, :, axis, None]) ** 2 / variance))  # B, K, n
    along_x, along_y, along_z = factors
    return along_z[..., :, None, None] * (along_y[..., :, None] * along_x[..., None, :])[:, :, None]


class SPADE(nn.Module):
    """Spatially-adaptive norm: InstanceNorm(x)·(1 + γ(seg)) + β(seg).

    As released, seg is resized to x by nearest neighbour and γ, β are convolved at x's resolution;
    ``coarse``: γ and β are convolved at seg's own resolution and resized bilinearly to x's.
    """

    def __init__(self, channels: int, label_nc: int, hidden: int, coarse: bool = False) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)
        self.coarse = coarse

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        if seg.shape[-2:] != x.shape[-2:] and not self.coarse:
            seg = F.interpolate(seg, size=x.shape[-2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return normalized * (1 + resize_to(self.mlp_gamma(actv), x)) + resize_to(self.mlp_beta(actv), x)


def resize_to(map_: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``map_`` resized bilinearly to ``like``'s height and width (as is when they already match)."""
    if map_.shape[-2:] == like.shape[-2:]:
        return map_
    return F.interpolate(map_, size=like.shape[-2:], mode="bilinear", align_corners=False)


def spectral(conv: nn.Conv2d, enabled: bool) -> nn.Conv2d:
    """Old-style spectral norm (keys weight_orig/u/v, as the released checkpoint stores them)."""
    return nn.utils.spectral_norm(conv) if enabled else conv


class SPADEResnetBlock(nn.Module):
    """Two SPADE → LeakyReLU(0.2) → conv steps, plus a (learned when widths differ) shortcut."""

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int, spectral_norm: bool = True,
                 coarse_modulation: bool = False) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral(nn.Conv2d(fin, fmiddle, 3, padding=1), spectral_norm)
        self.conv_1 = spectral(nn.Conv2d(fmiddle, fout, 3, padding=1), spectral_norm)
        if self.learned_shortcut:
            self.conv_s = spectral(nn.Conv2d(fin, fout, 1, bias=False), spectral_norm)
        self.norm_0 = SPADE(fin, label_nc, hidden, coarse_modulation)
        self.norm_1 = SPADE(fmiddle, label_nc, hidden, coarse_modulation)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, hidden, coarse_modulation)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx



def tapped_features(layers: Iterable[nn.Module], x: torch.Tensor, taps: Container[int]) -> list[torch.Tensor]:
    """Run ``x`` through ``layers`` in order; the outputs of the layers whose index is in ``taps``.

    The feature pyramid every pretrained perceptual network gives the losses.
    """
    out, kept = x, []
    for i, layer in enumerate(layers):
        out = layer(out)
        if i in taps:
            kept.append(out)
    return kept
