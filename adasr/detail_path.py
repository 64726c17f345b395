"""The lite generator's detail path: a full-resolution appearance map, warped by the 3-D motion's 2-D shadow.

face-vid2vid warps appearance only at S/4 (64² for 256), so the decoder must re-invent everything
finer: the soft face of the first lite model. This path encodes a full-resolution map of the source
once, warps it every frame with the 2-D flow implied by the 3-D deformation (a learned softmax over
depth picks which depth slice's motion each pixel follows), masks it with its own occlusion map and
adds it to the decoder after its last up block. With driving = source the flow is the identity and
the map comes back pixel for pixel, so the renderer can give the source back. The source photo blended
into the output can be resampled Catmull-Rom from bilinear samples of it and its second differences
(``second_differences``, ``catmull_rom``): bilinear sampling between pixel centres blurs the photo.

The map travels inside f_s, reshaped to S/4 × S/4 planes as extra volume channels, so the SourceState,
the ONNX graphs and the wire format keep their single appearance tensor.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from adasr.blocks import make_coordinate_grid

#: Side ratio between the image and the feature volume (two ×2 down blocks).
PACK = 4


def pack_detail(detail: torch.Tensor, depth: int) -> torch.Tensor:
    """[B, N, S, S] → [B, N·16/depth, depth, S/4, S/4], to ride in f_s.

    A plain reshape: the packed volume has no spatial meaning, so unpacking costs nothing per frame
    (a pixel shuffle took 1.1 ms of the renderer's time in ONNX Runtime).
    """
    b, n, h, w = detail.shape
    return detail.reshape(b, n * PACK * PACK // depth, depth, h // PACK, w // PACK)


def unpack_detail(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pack_detail``: [B, E, D, S/4, S/4] → [B, E·D/16, S, S]."""
    b, e, d, h, w = packed.shape
    return packed.reshape(b, e * d // (PACK * PACK), h * PACK, w * PACK)


def pixel_centre_grid(size: int, like: torch.Tensor) -> torch.Tensor:
    """Identity sampling grid [S, S, 2] for ``grid_sample(align_corners=False)``: pixel centres in (−1, 1)."""
    axis = (torch.arange(size, dtype=like.dtype, device=like.device) * 2 + 1) / size - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y], dim=-1)


def sample_border(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of a square [B, N, S, S] at grid [B, S', S', 2], border padding, align_corners=False.

    Border padding clamps each sampling point to the outermost pixel centres; clamping the grid
    first and sampling with zero padding is the same function, and ONNX Runtime's CPU GridSample
    runs its zero-padding path ~4× faster than its border path (2.3 vs 9.6 ms for the renderer's
    11 × 256² warp on 2 cores). One scalar bound for both axes keeps the clamp a cheap element-wise op.
    """
    height, width = image.shape[-2:]
    if height != width:
        raise ValueError(f"sample_border takes square images, got {height}×{width}")
    return F.grid_sample(image, clamp_to_centres(grid, int(width)), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def clamp_to_centres(grid: torch.Tensor, size: int) -> torch.Tensor:
    """A sampling grid clamped to the outermost pixel centres of a square S × S image (normalised units)."""
    limit = 1.0 - 1.0 / size
    return grid.clamp(-limit, limit)


def second_differences(image: torch.Tensor) -> torch.Tensor:
    """[B, N, S, S] → [B, 3N, S, S]: the second differences across x, across y, and across both.

    Each is ``2p − left − right`` with replicated borders (the edge pixel repeats, as border padding
    does). Bilinear samples of these, weighted by ``catmull_rom_weights``, turn a bilinear sample of
    the image into a Catmull-Rom cubic one; computed once per source, they cost nothing per frame.
    """
    def across_x(p: torch.Tensor) -> torch.Tensor:
        padded = F.pad(p, (1, 1, 0, 0), mode="replicate")
        return 2 * p - padded[..., :-2] - padded[..., 2:]

    def across_y(p: torch.Tensor) -> torch.Tensor:
        padded = F.pad(p, (0, 0, 1, 1), mode="replicate")
        return 2 * p - padded[..., :-2, :] - padded[..., 2:, :]

    dx = across_x(image)
    return torch.cat([dx, across_y(image), across_y(dx)], dim=1)


def with_photo_differences(f_s: torch.Tensor, feature_channel: int, detail_channels: int) -> torch.Tensor:
    """f_s whose packed map ends with the photo [B, C, D, h, w] → f_s with the photo's packed
    ``second_differences`` appended (what a cubic source warp samples).

    They are derived from the photo alone, so they need not travel: a sender strips them from the
    state it sends and the receiver appends them again with this function, as the encoder does.
    """
    depth = f_s.shape[2]
    photo = unpack_detail(f_s[:, feature_channel:])[:, detail_channels:detail_channels + 3]
    return torch.cat([f_s, pack_detail(second_differences(photo), depth)], dim=1)


def catmull_rom_weights(grid: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid [B, S', S', 2] on an S × S image → the weights f(1 − f)/2 per axis [B, 1, S', S'].

    f is the fractional pixel position of each (clamped) sampling point; the weights vanish on pixel
    centres, so identity motion still gives the photo back exactly.
    """
    pixel = (clamp_to_centres(grid, size) + 1) * (size / 2) - 0.5
    fraction = pixel - torch.floor(pixel)
    weight = (fraction * (1 - fraction) * 0.5).permute(0, 3, 1, 2)  # B, 2, S', S'
    return weight[:, :1], weight[:, 1:]


def catmull_rom(samples: torch.Tensor, weight_x: torch.Tensor, weight_y: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [B, 4N, ·] of an image and its ``second_differences`` → Catmull-Rom samples [B, N, ·].

    Catmull-Rom in one dimension is linear interpolation plus f(1 − f)/2 times the linear
    interpolation of the second difference; the separable 2-D kernel multiplies out to the four
    terms below. A cubic GridSample would take one op, but ONNX Runtime's CPU kernel for it costs several
    times the extra bilinear channels (``benchmarks/photo_warp_cost.py`` times both).
    """
    image, across_x, across_y, across_both = samples.chunk(4, dim=1)
    return image + weight_x * across_x + weight_y * across_y + weight_x * weight_y * across_both


class DetailEncoder(nn.Module):
    """First encoder features and the source itself [B, be+3, S, S] → the detail map [B, N, S, S]."""

    def __init__(self, in_channels: int, detail_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, detail_channels, 3, padding=1)

    def forward(self, features: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([features, source], dim=1))


class DetailFlow(nn.Module):
    """Hourglass output and 3-D deformation → a 2-D sampling grid and an occlusion map at S × S.

    The displacement (not the absolute grid) is upsampled and added to the full-resolution identity,
    so a zero motion samples every pixel at its own centre.
    """

    def __init__(self, hourglass_channels: int, depth: int, kernel_size: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(hourglass_channels * depth, depth + 1, kernel_size, padding=kernel_size // 2)

    def forward(self, prediction: torch.Tensor, deformation: torch.Tensor, size: int) -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
        """prediction [B, c, D, h, w], deformation [B, D, h, w, 3] → grid [B, S, S, 2], occlusion [B, 1, S, S]."""
        _, d, h, w, _ = deformation.shape
        logits = self.head(prediction.flatten(1, 2))  # B, D+1, h, w
        weights = F.softmax(logits[:, :d], dim=1)  # B, D, h, w
        flow = (deformation[..., :2] * weights.unsqueeze(-1)).sum(dim=1)  # B, h, w, 2
        displacement = (flow - make_coordinate_grid((h, w), flow)).permute(0, 3, 1, 2)  # B, 2, h, w
        # both upsampled by one resize, not two (the same values; ONNX Runtime ran the one-channel one channels-last)
        fields = F.interpolate(torch.cat([displacement, torch.sigmoid(logits[:, d:])], dim=1), size=(size, size),
                               mode="bilinear", align_corners=False)  # B, 3, S, S
        return pixel_centre_grid(size, flow) + fields[:, :2].permute(0, 2, 3, 1), fields[:, 2:]


class DetailFusion(nn.Module):
    """Decoder features [B, oc, S, S] + warped detail [B, N, S, S] → features, as a residual.

    The last conv starts at zero, so a model warm-started from one without this path renders as before.
    """

    def __init__(self, channels: int, detail_channels: int) -> None:
        super().__init__()
        self.mix = nn.Conv2d(channels + detail_channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, channels, 3, padding=1)
        for parameter in self.out.parameters():
            nn.init.zeros_(parameter)

    def forward(self, x: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        return x + self.out(F.leaky_relu(self.mix(torch.cat([x, detail], dim=1)), 0.2))


class SourceBlend(nn.Module):
    """The warped source photo where it fits, the decoder's picture where it does not.

    ``out = m · warped_source + (1 − m) · decoded``; the mask m is a fourth output channel of the
    decoder's last conv (one conv at 256², not two: a 1-channel conv is the slowest kind on a CPU). Its
    weights start at zero (m = ½), so a model warm-started from one without the blend begins halfway.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mask = nn.Conv2d(channels, 1, 3, padding=1)
        for parameter in self.mask.parameters():
            nn.init.zeros_(parameter)

    def forward(self, features: torch.Tensor, to_image: nn.Conv2d, warped_source: torch.Tensor,
                floor: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """features [B, oc, S, S] → the blended frame [B, 3, S, S] and the mask m [B, 1, S, S] (training holds it
        up: ``blend_floor``); ``to_image`` is the decoder's RGB conv; ``floor`` [B, 1, S, S]: m's least value."""
        weight = torch.cat([to_image.weight, self.mask.weight])
        bias = torch.cat([cast(torch.Tensor, to_image.bias), cast(torch.Tensor, self.mask.bias)])
        logits = F.conv2d(features, weight, bias, padding=to_image.padding)
        decoded, mask = torch.sigmoid(logits[:, :-1]), torch.sigmoid(logits[:, -1:])
        if floor is not None:
            mask = torch.maximum(mask, floor)
        return decoded + mask * (warped_source - decoded), mask
