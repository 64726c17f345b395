"""TensorRT-friendly replacements for PyTorch operators that TensorRT's ONNX parser rejects.

TensorRT's ``GridSample`` accepts 4-D input only, but the renderer warps a 3-D feature volume
with a 5-D (trilinear) ``grid_sample``. :func:`grid_sample_3d_trt` computes exactly the same
thing from a 4-D ``GridSample`` and a few element-wise ops, so the exported renderer parses.

Why the formulation is exact
----------------------------
With ``align_corners=False`` the continuous voxel coordinates of a grid point
``(gx, gy, gz)`` are ``x = ((gx + 1) W - 1) / 2`` and likewise ``y`` (with ``H``) and
``z`` (with ``D``). Trilinear sampling with zero padding is a sum over the 8 neighbouring
voxels of ``volume[d, i, j] * wz(d) * wy(i) * wx(j)``, where a neighbour outside the volume
contributes nothing. The weight factorises, so the sum regroups as

    out = sum_d  hat(z - d) * bilinear_zero_padded(plane_d, x, y),   d = 0 .. D-1,

with ``hat(t) = max(0, 1 - |t|)``:

* ``hat(z - d)`` is ``1 - frac(z)`` for ``d = floor(z)``, ``frac(z)`` for ``d = floor(z) + 1``
  and 0 for every other integer ``d`` — linear interpolation along depth. A depth neighbour
  outside ``[0, D-1]`` simply has no term in the sum, which is zero padding in depth, for any
  ``z`` however far outside the volume.
* ``bilinear_zero_padded(plane_d, x, y)`` is exactly a 4-D ``grid_sample`` of plane ``d`` at
  ``(gx, gy)`` with the same ``align_corners=False`` / ``padding_mode='zeros'``: zero padding
  in H and W comes from that op itself.

All ``D`` planes are sampled at once by viewing the volume as ``[N, C*D, H, W]`` (the planes
become channels, which share one 2-D grid per point). The cost is ``D`` 2-D samples per output
point instead of 2, and an intermediate of ``N x C x D x points`` elements; in exchange the
graph uses only GridSample (4-D), Reshape, Slice, Sub, Abs, Mul, Relu and ReduceSum, keeps
every grid coordinate in ``[-1, 1]``-sized ranges (good for fp16) and needs no gathers,
scatters or loops. (Stacking the planes into one tall 2-D image would sample only 2 planes, but
its normalised coordinates span ``D*(H+2)`` rows, which fp16 cannot resolve to a pixel.)

The depth distance is computed as ``(D/2) * |gz - c_d|`` with ``c_d = (2d + 1)/D - 1`` the
normalised centre of plane ``d``; this equals ``|z - d|`` but never forms the large voxel
coordinate ``z`` (up to ``~D``), whose fp16 spacing would be coarser than the input's.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["grid_sample_3d_trt"]


def _plane_centres(depth: int, like: Tensor) -> Tensor:
    """Normalised (align_corners=False) coordinate of each depth plane's centre, shape [1,1,D,1]."""
    index = torch.arange(depth, dtype=torch.float32, device=like.device)
    centres = (2.0 * index + 1.0) / float(depth) - 1.0
    return centres.to(like.dtype).reshape(1, 1, depth, 1)


def _check_inputs(volume: Tensor, grid: Tensor) -> None:
    """Fail early with the shapes: a wrong layout would otherwise surface as a reshape error."""
    if torch.jit.is_tracing():  # shapes are fixed by the example inputs; checks would only warn
        return
    if volume.dim() != 5 or grid.dim() != 5 or grid.shape[-1] != 3:
        raise ValueError(
            f"expected volume [N,C,D,H,W] and grid [N,Do,Ho,Wo,3], got {tuple(volume.shape)} "
            f"and {tuple(grid.shape)}"
        )
    if volume.shape[0] != grid.shape[0]:
        raise ValueError(f"batch sizes differ: volume {volume.shape[0]}, grid {grid.shape[0]}")
    if volume.dtype != grid.dtype:
        raise ValueError(f"volume and grid dtypes differ: {volume.dtype} vs {grid.dtype}")


def grid_sample_3d_trt(volume: Tensor, grid: Tensor) -> Tensor:
    """Trilinear ``grid_sample`` of a 5-D volume, built from 4-D GridSample so TensorRT parses it.

    Equal (to rounding) to ``F.grid_sample(volume, grid, mode='bilinear',
    padding_mode='zeros', align_corners=False)``.

    Args:
        volume: ``[N, C, D, H, W]`` feature volume (float32 or float16).
        grid: ``[N, Do, Ho, Wo, 3]`` sampling grid, last axis ``(x->W, y->H, z->D)`` in
            normalised coordinates; values outside ``[-1, 1]`` sample zeros as in PyTorch.

    Returns:
        ``[N, C, Do, Ho, Wo]``, the dtype of ``volume``.
    """
    _check_inputs(volume, grid)
    # Sizes as Python ints: they become constants in the exported graph, except the batch,
    # which is left to -1 so an export with a dynamic batch axis still reshapes correctly.
    # Under the TorchScript tracer int() warns that the value is frozen: that is the intent.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        c, d, h, w = (int(s) for s in volume.shape[1:])
        do, ho, wo = (int(s) for s in grid.shape[1:4])
    points = do * ho * wo

    # Every depth plane as a channel: one 2-D sample per point serves all D planes.
    planes = volume.reshape(-1, c * d, h, w)
    xy = grid[..., 0:2].reshape(-1, do * ho, wo, 2)
    sampled = F.grid_sample(planes, xy, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.reshape(-1, c, d, points)

    # Linear interpolation along depth with zero padding == triangular "hat" weights per plane.
    gz = grid[..., 2:3].reshape(-1, 1, 1, points)
    weights = torch.relu(1.0 - (0.5 * d) * torch.abs(gz - _plane_centres(d, grid)))
    out = (sampled * weights).sum(dim=2)
    return out.reshape(-1, c, do, ho, wo)
