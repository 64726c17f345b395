"""The send rate that follows what the receiver renders, read from its STATS.

A receiver slower than the sender renders the newest motion and drops the rest (latest wins): every
dropped frame cost the sender a capture and a motion extraction for nothing, and the receiver a
decode. The receiver's STATS carry its cumulative rendered and dropped counts, so the sender can
measure the rate at which it renders while it drops, and send at that rate. Times are passed in
(µs on one monotonic clock), so the rule is tested without a clock.
"""

from __future__ import annotations

from realtime.messages import CallStats

#: Never send slower than this (a receiver stalled for a moment is not a receiver rendering 0 fps).
MIN_FPS = 1.0
#: While the receiver keeps up with a lowered rate, try this much more at each measurement.
PROBE_UP = 1.25


class RenderRateFollower:
    """Measures the receiver's render rate over at least ``interval_s`` and proposes a send rate."""

    def __init__(self, ceiling_fps: float, interval_s: float = 1.0) -> None:
        self.ceiling_fps = ceiling_fps
        """The capture's own rate: never proposed above."""
        self.interval_s = interval_s
        self.rate: float | None = None
        """The rate proposed last (None: the capture's own)."""
        self._last: tuple[int, int, int] | None = None

    def update(self, now_us: int, peer: CallStats) -> float | None:
        """The receiver's latest STATS: the send rate to use from now on, or None to keep the current one
        (``ceiling_fps`` when the limit should be lifted)."""
        if self._last is None:
            self._last = (now_us, peer.frames_rendered, peer.frames_dropped)
            return None
        since_us, rendered, dropped = self._last
        elapsed_s = (now_us - since_us) / 1e6
        if elapsed_s < self.interval_s:
            return None
        self._last = (now_us, peer.frames_rendered, peer.frames_dropped)
        if peer.frames_dropped > dropped:  # saturated: it renders this fast
            if peer.frames_rendered == rendered:
                return None  # a stall (a source being decoded, a paused machine) says nothing about its speed
            proposed = max(MIN_FPS, (peer.frames_rendered - rendered) / elapsed_s)
        elif self.rate is not None:  # keeping up with a lowered rate: try a little more
            proposed = self.rate * PROBE_UP
        else:
            return None
        proposed = min(proposed, self.ceiling_fps)
        if proposed >= self.ceiling_fps and self.rate is None:
            return None
        current = self.rate if self.rate is not None else self.ceiling_fps
        if abs(proposed - current) < 0.05 * current:
            return None
        self.rate = None if proposed >= self.ceiling_fps else proposed
        return proposed
