"""The One-Euro filter (Casiez et al., CHI 2012): an adaptive low-pass filter for noisy live signals.

Its cut-off rises with the signal's speed, so a still signal is steady and a fast change is
followed at once. Two things are smoothed with it: the face tracker's crop box (``adasr.faces``)
and, on the sender, the motion vector (``realtime.smoothing``); both use this one filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Shortest step between two timestamped samples, in seconds: a repeated or backwards time counts as this.
MIN_STEP_S = 1e-3


@dataclass(frozen=True)
class OneEuroParams:
    """One-Euro filter parameters, in the units of the values filtered (callers often normalise them first)."""

    min_cutoff_hz: float = 1.5
    """Cut-off when still: lower = steadier, more lag on slow motion."""
    beta: float = 0.3
    """Speed coefficient: cut-off grows by beta × |speed in units per second|; higher = less lag when moving."""
    d_cutoff_hz: float = 1.0
    """Cut-off of the speed estimate itself."""

    def __post_init__(self) -> None:
        if not (self.min_cutoff_hz > 0 and self.d_cutoff_hz > 0 and self.beta >= 0):
            raise ValueError(f"One-Euro parameters must be positive (beta ≥ 0), got {self}")


def _alpha(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of a first-order low-pass filter with this cut-off for a step of dt seconds."""
    tau = 1.0 / (2.0 * math.pi * np.maximum(cutoff_hz, 1e-9))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over a vector; time comes from the caller, never from a clock.

    Give each sample either its timestamp (``__call__``, e.g. capture times) or the step since the
    previous sample (``step``). The first sample after creation or ``reset`` passes through unchanged.
    """

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
        if self._t is None or not self._continues(x):
            self._t = t_s
            return self._start(x)
        dt = max(t_s - self._t, MIN_STEP_S)
        self._t = self._t + dt
        return self._update(x, dt)

    def step(self, x: np.ndarray, dt: float) -> np.ndarray:
        """Filter sample ``x`` taken ``dt`` seconds (> 0) after the previous one."""
        x = np.asarray(x, dtype=np.float64)
        if not self._continues(x):
            return self._start(x)
        return self._update(x, dt)

    def _continues(self, x: np.ndarray) -> bool:
        """Whether ``x`` continues the filtered series (there is one, of the same shape)."""
        return self._x is not None and self._x.shape == x.shape

    def _start(self, x: np.ndarray) -> np.ndarray:
        """Begin a new series at ``x``, at rest."""
        self._x, self._dx = x.copy(), np.zeros_like(x)
        return x.copy()

    def _update(self, x: np.ndarray, dt: float) -> np.ndarray:
        """One filter step: the speed estimate, then the value, each through its low-pass filter."""
        assert self._x is not None and self._dx is not None
        p = self.params
        self._dx = self._dx + _alpha(p.d_cutoff_hz, dt) * ((x - self._x) / dt - self._dx)
        cutoff = p.min_cutoff_hz + p.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        return self._x.copy()
