"""The three deployable networks of DESIGN.md, as modules with fixed tensor inputs and outputs.

1. ``SourceEncoder`` (once per call): source (+ its expression vector) → f_s, x_c and the source's own motion.
2. ``MotionExtractor`` (every frame, sender): face crop (+ the tracker's expression vector, for a model with
   an expression mapper: ``adasr.expression_signal``) → yaw, pitch, roll (degrees), t, δ.
3. ``Renderer`` (every frame, receiver): f_s, x_s, x_d (+ the expression rig's anchors and ratio change) → frame.

They share weights with ``AdaSRNetworks``; every backend (PyTorch, ONNX Runtime, TensorRT) runs
exactly these graphs. The keypoint transform stays outside, in ``adasr.keypoints``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from adasr.expression_rig import NUM_ANCHORS, ExpressionRig
from adasr.expression_signal import NUM_FEATURES
from adasr.keypoints import bins_to_degrees
from adasr.networks import AdaSRNetworks
from adasr.warp import WarpFn, grid_sample_3d


class MotionTensors(NamedTuple):
    """yaw, pitch, roll [B] in degrees; t [B, 3]; delta [B, K, 3]."""

    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    delta: torch.Tensor


class SourceTensors(NamedTuple):
    """f_s [B, C, D, h, w]; x_c [B, K, 3]; and the source's motion (as MotionTensors' fields)."""

    f_s: torch.Tensor
    x_c: torch.Tensor
    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    delta: torch.Tensor


def motion_inputs(image: torch.Tensor, expression: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The motion extractor's (and source encoder's) graph inputs: the image, and the expression vector for a
    model with an expression mapper (its graphs take both; the released design's take the image alone)."""
    return (image,) if expression is None else (image, expression)


class MotionExtractor(nn.Module):
    """Image [B, 3, S, S] in [0, 1] → MotionTensors (angles decoded from their 66 bins)."""

    def __init__(self, networks: AdaSRNetworks) -> None:
        super().__init__()
        self.he_estimator = networks.he_estimator

    def forward(self, image: torch.Tensor, expression: torch.Tensor | None = None) -> MotionTensors:
        """``expression`` [B, E]: the tracker's expression vector, for a model with an expression mapper."""
        he = self.he_estimator(image, expression)
        delta = he.exp.view(he.exp.shape[0], -1, 3)  # B, K, 3
        return MotionTensors(bins_to_degrees(he.yaw), bins_to_degrees(he.pitch), bins_to_degrees(he.roll), he.t, delta)


class SourceEncoder(nn.Module):
    """Source image [B, 3, S, S] in [0, 1] → SourceTensors."""

    def __init__(self, networks: AdaSRNetworks) -> None:
        super().__init__()
        self.kp_detector = networks.kp_detector
        self.generator = networks.generator
        self.motion = MotionExtractor(networks)

    def forward(self, image: torch.Tensor, expression: torch.Tensor | None = None) -> SourceTensors:
        return SourceTensors(self.generator.encode(image), self.kp_detector(image), *self.motion(image, expression))


class Renderer(nn.Module):
    """f_s [B, C, D, h, w], x_s and x_d [B, K, 3], the portrait's rig anchors [B, N, 2] and the face ratios' change
    [B, E] (``adasr.expression_rig``) → frame [B, 3, S, S] in [0, 1].

    ``warp`` selects the 3-D warp implementation (the TensorRT export passes its own).
    """

    def __init__(self, networks: AdaSRNetworks, warp: WarpFn = grid_sample_3d) -> None:
        super().__init__()
        self.generator = networks.generator
        self.rig = ExpressionRig()
        self.warp = warp

    def forward(self, f_s: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor, anchors: torch.Tensor,
                ratio_change: torch.Tensor) -> torch.Tensor:
        rig = self.rig(anchors, ratio_change)
        return self.generator.render(f_s, kp_source, kp_driving, self.warp, rig).prediction


def example_calls(networks: AdaSRNetworks, size: int) -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    """Each deployable network, by its graph's name, with inputs of the shapes it takes (a random image, the neutral
    expression for a model with an expression mapper, driving keypoints near the source's, the expression rig at
    rest): for counting and timing their work, which the values do not change."""
    features = networks.cfg.he_estimator.expression_inputs
    inputs = motion_inputs(torch.rand(1, 3, size, size), torch.zeros(1, features) if features else None)
    encoder, extractor, renderer = SourceEncoder(networks), MotionExtractor(networks), Renderer(networks)
    with torch.inference_mode():
        src = encoder(*inputs)
    rig_at_rest = (torch.zeros(1, NUM_ANCHORS, 2), torch.zeros(1, NUM_FEATURES))
    return {"source_encoder": (encoder, inputs), "motion_extractor": (extractor, inputs),
            "renderer": (renderer, (src.f_s, src.x_c, src.x_c + 0.01, *rig_at_rest))}
