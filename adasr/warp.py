"""The 3-D warp of a feature volume by a dense grid, with a plain and an exportable form.

Callers pass the warp function explicitly, so an export for TensorRT (whose ONNX parser has no 5-D
GridSample) swaps in an equivalent built from supported operators without changing module state.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

WarpFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def grid_sample_3d(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear sample of [N, C, D, H, W] at grid [N, Do, Ho, Wo, 3] (x, y, z in [-1, 1]).

    Zero padding and ``align_corners=False``: the released model's defaults.
    """
    return F.grid_sample(volume, grid.to(volume.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
