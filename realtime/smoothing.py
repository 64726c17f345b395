"""Temporal smoothing of the motion vector on the sender, before quantising.

The motion extractor's output jitters from frame to frame even on a still face; sent as is, the
jitter shows as a shimmering render and costs quantiser codes. A One-Euro filter (Casiez et al.,
CHI 2012) removes it with little lag: a low-pass filter whose cut-off rises with the signal's
speed, so a still head is steady and a fast turn is followed at once.

The vector mixes units (angles in degrees, translation and expression offsets in keypoint units),
so each group is divided by a typical magnitude first; the filter parameters are then unit-free
and shared by all 51 numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: yaw, pitch, roll come first in ``Motion.to_vector``; then t[3]; then δ[3K].
_ANGLES, _POSE = 3, 6


@dataclass(frozen=True)
class OneEuroParams:
    """One-Euro filter parameters, applied to values divided by their group's scale."""

    min_cutoff_hz: float = 1.5
    """Cut-off when still: lower = steadier, more lag on slow motion."""
    beta: float = 0.3
    """Speed coefficient: cut-off grows by beta × |speed in scales per second|; higher = less lag when moving."""
    d_cutoff_hz: float = 1.0
    """Cut-off of the speed estimate itself."""

    def __post_init__(self) -> None:
        if not (self.min_cutoff_hz > 0 and self.d_cutoff_hz > 0 and self.beta >= 0):
            raise ValueError(f"One-Euro parameters must be positive (beta ≥ 0), got {self}")


@dataclass(frozen=True)
class SmoothingOptions:
    """How the sender smooths motion; ``enabled=False`` sends the extractor's raw output."""

    enabled: bool = True
    """Smooth at all."""
    filter: OneEuroParams = OneEuroParams()
    """Filter parameters (unit-free, see the scales)."""
    angle_scale_deg: float = 1.0
    """Typical magnitude of yaw, pitch and roll, in degrees."""
    translation_scale: float = 0.01
    """Typical magnitude of the translation t, in keypoint units."""
    expression_scale: float = 0.01
    """Typical magnitude of the expression offsets δ, in keypoint units."""

    def scales(self, size: int) -> np.ndarray:
        """Per-number scale for a vector of ``size`` = 6 + 3K numbers."""
        out = np.full(size, self.expression_scale, dtype=np.float64)
        out[:_ANGLES] = self.angle_scale_deg
        out[_ANGLES:_POSE] = self.translation_scale
        return out


def _alpha(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of a first-order low-pass filter with this cut-off for a step of dt seconds."""
    tau = 1.0 / (2.0 * math.pi * np.maximum(cutoff_hz, 1e-9))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over a vector; time comes from the caller (capture timestamps), not a clock."""

    def __init__(self, params: OneEuroParams = OneEuroParams()) -> None:
        self.params = params
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def reset(self) -> None:
        """Forget the history: the next sample passes through unchanged."""
        self._x = self._dx = self._t = None

    def __call__(self, x: np.ndarray, t_s: float) -> np.ndarray:
        """Filter sample ``x`` taken at ``t_s`` seconds; a non-increasing time is treated as 1 ms later."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._dx is None or self._t is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t_s
            return x.copy()
        dt = max(t_s - self._t, 1e-3)
        self._t = self._t + dt
        p = self.params
        self._dx = self._dx + _alpha(p.d_cutoff_hz, dt) * ((x - self._x) / dt - self._dx)
        cutoff = p.min_cutoff_hz + p.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        return self._x.copy()


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
