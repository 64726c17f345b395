"""What a call costs on the wire: bytes counted where they leave, every header included.

Voice (SRTP/SRTCP) and data (DTLS records carrying SCTP: motion, control) share one bundled DTLS
transport. Its own counters (``dtls_tx_counters``) give every datagram; ``WireMeter`` also counts
the datagrams the transport's media path protects and sends (``RTCDtlsTransport._send_rtp``, wrapped
on this one transport), so voice and data are told apart by measurement, not by a model of their
headers. Each datagram costs 28 more bytes of UDP and IPv4 headers, added here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection

from realtime.stats import kbps
from realtime.transport import dtls_tx_counters

logger = logging.getLogger(__name__)

#: UDP + IPv4 headers per datagram (the transports count UDP payloads).
UDP_IP_BYTES = 28


@dataclass(frozen=True)
class WireCount:
    """Bytes and datagrams sent so far: all of them, and the voice's."""

    bytes: int
    datagrams: int
    media_bytes: int
    media_datagrams: int

    def __sub__(self, other: WireCount) -> WireCount:
        return WireCount(self.bytes - other.bytes, self.datagrams - other.datagrams,
                         self.media_bytes - other.media_bytes, self.media_datagrams - other.media_datagrams)

    @property
    def wire_bytes(self) -> int:
        """Everything, with UDP/IP headers."""
        return self.bytes + UDP_IP_BYTES * self.datagrams

    @property
    def media_wire_bytes(self) -> int:
        """The voice (RTP and RTCP), with UDP/IP headers."""
        return self.media_bytes + UDP_IP_BYTES * self.media_datagrams


class WireMeter:
    """Counts what ``pc`` sends from now on (make it once the connection is up)."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.pc = pc
        self.media_bytes = 0
        self.media_datagrams = 0
        transport: Any = pc.sctp.transport if pc.sctp is not None else None
        self._available = transport is not None and dtls_tx_counters(pc) is not None
        if not self._available:
            logger.debug("no DTLS transport counters: wire figures unavailable")
            return
        send_rtp = transport._send_rtp

        async def counted(data: bytes) -> None:
            before = _tx_bytes(transport)
            await send_rtp(data)
            self.media_bytes += _tx_bytes(transport) - before  # the protected size, as it left
            self.media_datagrams += 1

        transport._send_rtp = counted  # this one transport's instance attribute: no other connection is touched
        for transceiver in pc.getTransceivers():  # bundled media must share the data channels' transport
            if transceiver.sender.transport not in (None, transport):
                logger.warning("the voice does not share the data channels' transport: its bytes are not told apart")

    def read(self) -> WireCount | None:
        """Counters now; None where aiortc does not expose them."""
        counters = dtls_tx_counters(self.pc) if self._available else None
        if counters is None:
            return None
        return WireCount(counters[0], counters[1], self.media_bytes, self.media_datagrams)


def _tx_bytes(transport: Any) -> int:
    return int(next(iter(transport._get_stats().values())).bytesSent)


def wire_figures(sent: WireCount, seconds: float, frames: int, motion_message_bytes: float) -> dict[str, float]:
    """kbps on the wire over ``seconds`` in which ``frames`` motion frames were sent: the voice, the data channels
    (motion, control, SCTP; named ``motion``), the total; and the same at 30 fps.

    To scale to 30 fps, the data channels' bytes are split into what grows with the frame rate, one MOTION
    datagram of ``motion_message_bytes`` per frame (``WireOverhead``: every MOTION is one datagram), and the
    measured remainder, which does not (keepalive STATS and CLOCK, SCTP acknowledgements). The voice does not
    scale either.
    """
    if seconds <= 0:
        return {}
    audio = sent.media_wire_bytes * 8 / 1000 / seconds
    data_bytes = sent.wire_bytes - sent.media_wire_bytes
    data = data_bytes * 8 / 1000 / seconds
    fixed = max(data_bytes - frames * motion_message_bytes, 0.0) * 8 / 1000 / seconds
    motion_30 = kbps(motion_message_bytes, 30.0) + fixed
    return {
        "audio_kbps_wire": audio, "motion_kbps_wire": data, "total_kbps_wire": audio + data,
        "audio_kbps_wire_at_30fps": audio, "motion_kbps_wire_at_30fps": motion_30,
        "total_kbps_wire_at_30fps": audio + motion_30,
        "motion_wire_bytes_per_frame_measured": data_bytes / max(frames, 1),
        "control_kbps_wire": fixed,
        "audio_packets_per_s": sent.media_datagrams / seconds,
    }
