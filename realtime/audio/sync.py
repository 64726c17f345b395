"""When the sender captured the sound being played: RTP timestamps → the sender's wall clock.

Every 0.5–1.5 s aiortc's RTP sender emits an RTCP sender report pairing the wall-clock time
(``time.time()`` as NTP) at which it last sent a packet with that packet's RTP timestamp. With it,
any received frame's timestamp maps to the sender's clock, with no clock synchronisation between
the peers. aiortc keeps neither half where a caller can read it: its ``getStats`` reports only the
NTP time, and the decoded frames' ``pts`` is the RTP timestamp minus the first one received (a
private ``TimestampMapper``). ``SenderClock`` therefore wraps the receiver's RTCP handler (an
instance attribute, so only this receiver is touched) and reads the mapper's origin.

A report's time is the moment a packet was handed to the network, a little after its capture, and
a busy sender hands some late: of the last few reports, the earliest relative to its timestamp is
used. ``captured_at`` then steps back over what the sender waited for before sending a packet: one
frame of capture and the encoder's lookahead (``realtime.audio.voice`` sends each packet as soon
as its frame is captured).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.rtp import RtcpSrPacket

from realtime.audio.opus import OPUS_LOOKAHEAD_SAMPLES, SAMPLE_RATE

logger = logging.getLogger(__name__)

#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET_S = 2_208_988_800
_WRAP = 1 << 32


def ntp_to_unix(ntp: int) -> float:
    """A 64-bit NTP timestamp (32.32 fixed point) → Unix seconds."""
    return (ntp >> 32) - NTP_UNIX_OFFSET_S + (ntp & 0xFFFFFFFF) / _WRAP


def rtp_difference(a: int, b: int) -> int:
    """``a − b`` for 32-bit RTP timestamps that may have wrapped (the shorter way round)."""
    return (a - b + (1 << 31)) % _WRAP - (1 << 31)


@dataclass(frozen=True)
class SenderReport:
    """One RTCP sender report, as received."""

    sent_s: float
    """Sender's wall clock (Unix seconds) when it sent the packet with ``rtp_timestamp``."""
    rtp_timestamp: int
    """That packet's RTP timestamp."""
    extended_rtp: int
    """``rtp_timestamp`` unwrapped: counted from the first report, never wrapping."""
    received_s: float
    """This receiver's wall clock when the report arrived."""


class SenderClock:
    """Maps the ``pts`` of frames decoded from one remote audio track to the sender's wall clock."""

    def __init__(self, receiver: RTCRtpReceiver, clock_rate: int = SAMPLE_RATE, window: int = 8,
                 rtp_of: Callable[[int], int | None] | None = None) -> None:
        self.receiver = receiver
        self.clock_rate = clock_rate
        self.rtp_of = rtp_of
        """A frame's ``pts`` → its RTP timestamp, for frames not numbered by aiortc (the adaptive jitter buffer's);
        None: aiortc's numbering (the RTP timestamp minus the first one received)."""
        self._recent: deque[SenderReport] = deque(maxlen=window)
        self.reports = 0
        """Sender reports received."""
        handle = receiver._handle_rtcp_packet

        async def handle_and_note(packet: Any) -> None:
            if isinstance(packet, RtcpSrPacket):
                self.note(packet.sender_info.ntp_timestamp, packet.sender_info.rtp_timestamp)
            await handle(packet)

        receiver._handle_rtcp_packet = handle_and_note  # type: ignore[method-assign]

    def note(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """Record a sender report (the receiver's RTCP handler calls this)."""
        latest = self._recent[-1] if self._recent else None
        extended = 0 if latest is None else latest.extended_rtp + rtp_difference(rtp_timestamp, latest.rtp_timestamp)
        self._recent.append(SenderReport(ntp_to_unix(ntp_timestamp), rtp_timestamp, extended, time.time()))
        self.reports += 1

    @property
    def latest(self) -> SenderReport | None:
        return self._recent[-1] if self._recent else None

    def _origin(self) -> int | None:
        """The first RTP timestamp received: ``pts`` counts from it (aiortc's private ``TimestampMapper``)."""
        try:
            origin = self.receiver._RTCRtpReceiver__timestamp_mapper._origin  # type: ignore[attr-defined]
        except AttributeError:
            logger.debug("aiortc's timestamp mapper is not where it used to be", exc_info=True)
            return None
        return None if origin is None else int(origin)

    def _rtp_timestamp(self, pts: int) -> int | None:
        if self.rtp_of is not None:
            return self.rtp_of(pts)
        origin = self._origin()
        return None if origin is None else (pts + origin) % _WRAP

    def sent_at(self, pts: int) -> float | None:
        """Sender's wall clock when the packet of ``pts`` left it; None before the first report."""
        latest, rtp = self.latest, self._rtp_timestamp(pts)
        if latest is None or rtp is None:
            return None
        base = min(self._recent, key=lambda r: r.sent_s - r.extended_rtp / self.clock_rate)
        extended = latest.extended_rtp + rtp_difference(rtp, latest.rtp_timestamp)
        return base.sent_s + (extended - base.extended_rtp) / self.clock_rate

    def captured_at(self, pts: int, frame_samples: int) -> float | None:
        """Sender's wall clock when the sample at ``pts`` was captured (a frame of ``frame_samples`` was sent
        once its last sample and the encoder's lookahead were in); None before the first report."""
        sent = self.sent_at(pts)
        return None if sent is None else sent - (frame_samples + OPUS_LOOKAHEAD_SAMPLES) / self.clock_rate
