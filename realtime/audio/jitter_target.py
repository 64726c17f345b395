"""How long the voice must wait before it plays: a percentile of the measured arrival jitter, plus a packet.

As WebRTC's NetEq does, the delay follows the network instead of a fixed count of packets. Each
packet's transit (arrival time minus its RTP time) is compared with the fastest transit of the
recent window; the difference is its jitter. The target delay is a high percentile of the recent
jitter plus one packet (so the next packet, which carries the FEC copy of a lost one, is usually
there in time). The window forgets: when the network calms, the percentile falls and so does the
target.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JitterOptions:
    """The adaptive jitter buffer's settings."""

    percentile: float = 95.0
    """Which percentile of the recent jitter the delay covers."""
    window: int = 75
    """Packets the statistics remember (3 s of 40 ms packets): a jitter burst (or the call's noisy start) is
    forgotten within seconds."""
    max_target_s: float = 0.5
    """Longest target delay: beyond it a voice would be too late for a conversation anyway."""
    shrink_after_s: float = 0.5
    """A delay over the target by more than a packet, for this long, is cut even within speech (else only in a
    quiet packet, where it cannot be heard)."""

    def __post_init__(self) -> None:
        if not 50.0 <= self.percentile <= 100.0 or self.window < 2 or self.max_target_s <= 0:
            raise ValueError(f"invalid jitter options {self}")


#: The shipped settings.
DEFAULT_JITTER = JitterOptions()


class JitterTarget:
    """Arrival statistics of one voice → the delay its playout should keep (seconds past the fastest transit)."""

    def __init__(self, options: JitterOptions = DEFAULT_JITTER, clock_rate: int = 48_000) -> None:
        self.options = options
        self.clock_rate = clock_rate
        self._transits: deque[float] = deque(maxlen=options.window)

    def arrived(self, rtp_time: int, arrival_s: float) -> None:
        """A packet with (unwrapped) RTP timestamp ``rtp_time`` arrived at local ``arrival_s``."""
        self._transits.append(arrival_s - rtp_time / self.clock_rate)

    @property
    def fastest_transit_s(self) -> float | None:
        """The fastest transit of the window: the local time of RTP time 0 on the quickest path."""
        return min(self._transits) if self._transits else None

    def jitter_s(self) -> float:
        """The configured percentile of the recent jitter (0 before two packets)."""
        if len(self._transits) < 2:
            return 0.0
        transits = np.asarray(self._transits)
        return float(np.percentile(transits - transits.min(), self.options.percentile))

    def target_s(self, packet_s: float) -> float:
        """Delay to keep past the fastest transit: the jitter percentile plus one packet, within the bound."""
        return min(self.jitter_s() + packet_s, self.options.max_target_s)
