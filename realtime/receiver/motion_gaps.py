"""Gaps in the motion stream: a stall reported while it lasts, counted once, measured when it ends.

A bad network is expected: while no motion arrives the last pose holds (a virtual camera keeps
repeating it) and the receiver says so. Plain state, no clock of its own: the caller passes the
time (µs on one monotonic clock) of each arrival and of each look (``check``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass
class GapCounters:
    """What the gap watch saw."""

    motion_stalled: bool = False
    """No motion for longer than ``motion_gap_s`` right now: the last pose holds."""
    motion_gaps: int = 0
    """Gaps in motion longer than ``motion_gap_s``."""
    longest_gap_s: float = 0.0
    """Longest time between two accepted MOTION packets."""


class MotionGapWatch:
    """Arrivals in, stalls out: ``check`` says when a stall begins, ``arrived`` ends it."""

    def __init__(self, gap_s: float, stats: GapCounters | None = None) -> None:
        if not gap_s > 0:
            raise ValueError(f"gap_s must be > 0, got {gap_s}")
        self.gap_s = gap_s
        self.stats = stats if stats is not None else GapCounters()
        self._last_us: int | None = None

    def arrived(self, now_us: int) -> None:
        """A motion arrived: a stall ``check`` reported ends here; a gap it missed (no look in time) is counted now."""
        s = self.stats
        if self._last_us is not None:
            gap_s = (now_us - self._last_us) / 1e6
            s.longest_gap_s = max(s.longest_gap_s, gap_s)
            if gap_s > self.gap_s:
                if not s.motion_stalled:
                    s.motion_gaps += 1
                logger.info("motion resumed after a %.2f s gap", gap_s)
        s.motion_stalled = False
        self._last_us = now_us

    def check(self, now_us: int) -> bool:
        """Look at the time: True when a stall begins now (once per gap; nothing before the first motion)."""
        s = self.stats
        if self._last_us is None or s.motion_stalled or now_us - self._last_us <= self.gap_s * 1e6:
            return False
        s.motion_stalled = True
        s.motion_gaps += 1
        return True
