"""Temporal smoothing of the motion vector on the sender, before quantising.

The motion extractor's output jitters from frame to frame even on a still face; sent as is, the
jitter shows as a shimmering render and costs quantiser codes. A One-Euro filter
(``adasr.one_euro``) removes it with little lag: a low-pass filter whose cut-off rises with the
signal's speed, so a still head is steady and a fast turn is followed at once.

The vector mixes units (angles in degrees, translation and expression offsets in keypoint units),
so each group is divided by a typical magnitude first; the filter parameters are then unit-free
and shared by all 51 numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adasr import motion_layout
from adasr.one_euro import OneEuroFilter, OneEuroParams


@dataclass(frozen=True)
class SmoothingOptions:
    """How the sender smooths motion; ``enabled=False`` sends the extractor's raw output."""

    enabled: bool = True
    """Smooth at all."""
    filter: OneEuroParams = field(default_factory=OneEuroParams)
    """Filter parameters (unit-free, see the scales)."""
    angle_scale_deg: float = 1.0
    """Typical magnitude of yaw, pitch and roll, in degrees."""
    translation_scale: float = 0.01
    """Typical magnitude of the translation t, in keypoint units."""
    expression_scale: float = 0.01
    """Typical magnitude of the expression offsets δ, in keypoint units."""

    def scales(self, size: int) -> np.ndarray:
        """Per-number scale for a vector of ``size`` = 6 + 3K numbers."""
        out = np.empty(size, dtype=np.float64)
        out[motion_layout.ANGLES] = self.angle_scale_deg
        out[motion_layout.TRANSLATION] = self.translation_scale
        out[motion_layout.EXPRESSION] = self.expression_scale
        return out


class MotionSmoother:
    """Smooths motion vectors (``Motion.to_vector`` order) group-normalised, per ``SmoothingOptions``."""

    def __init__(self, options: SmoothingOptions = SmoothingOptions()) -> None:
        self.options = options
        self._filter = OneEuroFilter(options.filter)
        self._scales: np.ndarray | None = None

    def reset(self) -> None:
        """Start afresh (after the face was lost, or a reference reset)."""
        self._filter.reset()

    def __call__(self, vector: np.ndarray, t_s: float) -> np.ndarray:
        """Smoothed float32 copy of ``vector`` sampled at ``t_s`` seconds."""
        vec = np.asarray(vector, dtype=np.float64).reshape(-1)
        if not self.options.enabled:
            return vec.astype(np.float32)
        if self._scales is None or self._scales.size != vec.size:
            self._scales = self.options.scales(vec.size)
            self._filter.reset()
        return (self._filter(vec / self._scales, t_s) * self._scales).astype(np.float32)
