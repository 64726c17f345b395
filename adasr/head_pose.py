"""Head pose and expression estimator (the motion extractor): image (+ expression vector) → yaw, pitch, roll, t, δ.

A Hopenet-like ResNet-50 bottleneck stack with 66-bin angle heads. The released weights name
their heads crosswise: the output ``yaw`` comes from ``fc_roll`` and ``roll`` from ``fc_yaw``;
this module keeps that mapping so the released checkpoint means what it meant.

The lite preset adds ``ExpressionMapper``: the tracker's mouth and eye ratios → keypoint offsets, added to
the image's δ (the crop alone taught the small network pose, not expression).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from adasr.config import HEEstimatorConfig


class HeadPoseOutput(NamedTuple):
    """Raw outputs: angle logits [B, num_bins] each, t [B, 3], δ [B, K·3]."""

    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor


class ResBottleneck(nn.Module):
    """1×1 → 3×3 (stride) → 1×1 bottleneck at width/4; a 1×1 conv + BN skip when strided."""

    FOLDABLE: ClassVar[tuple[tuple[str, str], ...]] = (
        ("conv1", "norm1"), ("conv2", "norm2"), ("conv3", "norm3"), ("skip", "norm4"))

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        mid = channels // 4
        self.conv1 = nn.Conv2d(channels, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1)
        self.conv3 = nn.Conv2d(mid, channels, 1)
        self.norm1 = nn.BatchNorm2d(mid, affine=True)
        self.norm2 = nn.BatchNorm2d(mid, affine=True)
        self.norm3 = nn.BatchNorm2d(channels, affine=True)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(channels, channels, 1, stride=stride)
            self.norm4 = nn.BatchNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)


class ExpressionMapper(nn.Module):
    """Expression vector [B, E] → keypoint offsets [B, K·3]: two hidden layers, the last layer zero-initialised
    so that a model trained without it renders exactly as before until training moves it."""

    def __init__(self, inputs: int, hidden: int, num_kp: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(inputs, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                    nn.LeakyReLU(0.2), nn.Linear(hidden, 3 * num_kp))
        last = self.layers[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, expression: torch.Tensor) -> torch.Tensor:
        return self.layers(expression)


class HEEstimator(nn.Module):
    """[B, 3, S, S] in [0, 1] → HeadPoseOutput. Stem ×4 down, then stages at widths w1..w4."""

    FOLDABLE: ClassVar[tuple[tuple[str, str], ...]] = tuple((f"conv{i}", f"norm{i}") for i in range(1, 6))

    def __init__(self, cfg: HEEstimatorConfig, num_kp: int = 15, image_channel: int = 3) -> None:
        super().__init__()
        w1, w2, w3, w4 = cfg.widths
        n1, n2, n3, n4 = cfg.blocks
        self.conv1 = nn.Conv2d(image_channel, cfg.block_expansion, 7, stride=2, padding=3)
        self.norm1 = nn.BatchNorm2d(cfg.block_expansion, affine=True)
        self.conv2 = nn.Conv2d(cfg.block_expansion, w1, 1)
        self.norm2 = nn.BatchNorm2d(w1, affine=True)
        self.block1 = self._stack("b1", w1, n1)
        self.conv3 = nn.Conv2d(w1, w2, 1)
        self.norm3 = nn.BatchNorm2d(w2, affine=True)
        self.block2 = ResBottleneck(w2, stride=2)
        self.block3 = self._stack("b3", w2, n2 - 1)
        self.conv4 = nn.Conv2d(w2, w3, 1)
        self.norm4 = nn.BatchNorm2d(w3, affine=True)
        self.block4 = ResBottleneck(w3, stride=2)
        self.block5 = self._stack("b5", w3, n3 - 1)
        self.conv5 = nn.Conv2d(w3, w4, 1)
        self.norm5 = nn.BatchNorm2d(w4, affine=True)
        self.block6 = ResBottleneck(w4, stride=2)
        self.block7 = self._stack("b7", w4, n4 - 1)
        self.fc_roll = nn.Linear(w4, cfg.num_bins)
        self.fc_pitch = nn.Linear(w4, cfg.num_bins)
        self.fc_yaw = nn.Linear(w4, cfg.num_bins)
        self.fc_t = nn.Linear(w4, 3)
        self.fc_exp = nn.Linear(w4, 3 * num_kp)
        self.expression_inputs = cfg.expression_inputs
        self.expression_mapper = (ExpressionMapper(cfg.expression_inputs, cfg.expression_hidden, num_kp)
                                  if cfg.expression_inputs else None)

    @staticmethod
    def _stack(prefix: str, channels: int, count: int) -> nn.Sequential:
        stack = nn.Sequential()
        for i in range(count):
            stack.add_module(f"{prefix}_{i}", ResBottleneck(channels, stride=1))
        return stack

    def forward(self, image: torch.Tensor, expression: torch.Tensor | None = None) -> HeadPoseOutput:
        """``expression`` [B, expression_inputs]: required when the model has an expression mapper, else unused."""
        out = F.relu(self.norm1(self.conv1(image)))  # B, be, S/2, S/2
        out = F.max_pool2d(out, 3, stride=2, padding=1)  # B, be, S/4, S/4
        out = self.block1(F.relu(self.norm2(self.conv2(out))))  # B, w1, S/4
        out = self.block3(self.block2(F.relu(self.norm3(self.conv3(out)))))  # B, w2, S/8
        out = self.block5(self.block4(F.relu(self.norm4(self.conv4(out)))))  # B, w3, S/16
        out = self.block7(self.block6(F.relu(self.norm5(self.conv5(out)))))  # B, w4, S/32
        feat = out.mean(dim=(2, 3))  # B, w4
        # Crosswise on purpose: the released weights' 'yaw' head is the layer named fc_roll.
        exp = self.fc_exp(feat)
        if self.expression_mapper is not None:
            if expression is None or expression.shape != (image.shape[0], self.expression_inputs):
                got = None if expression is None else tuple(expression.shape)
                raise ValueError(f"this motion extractor needs an expression vector [B, {self.expression_inputs}], "
                                 f"got {got}")
            exp = exp + self.expression_mapper(expression.to(exp.dtype))
        return HeadPoseOutput(yaw=self.fc_roll(feat), pitch=self.fc_pitch(feat), roll=self.fc_yaw(feat),
                              t=self.fc_t(feat), exp=exp)
