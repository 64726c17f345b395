"""Delayed SCTP acknowledgements for the unreliable motion channel: a two-way call within 64 kbps.

aiortc's SCTP answers every packet that carries DATA with a SACK of its own (a ~85-byte datagram on
the wire with the DTLS and UDP/IP headers). On a two-way call each side receives the other's face,
30 MOTION packets a second, and would send 30 SACKs a second for them: about 20 kbps of its uplink,
as much as the voice. RFC 4960 §6.2 lets a receiver delay a SACK (up to 500 ms; at least every
second packet *for bulk data*). ``delay_acks`` applies that to what needs no prompt answer: while
only unordered data (MOTION, never retransmitted: ``maxRetransmits=0``) arrives in order, the SACK
waits up to ``delay_s`` or ``max_packets`` packets; ordered data (the reliable control channel: the
source upload, where the sender's window grows with every SACK), a gap, a duplicate or a FORWARD
TSN is acknowledged at once, as aiortc does.

This wraps two private methods of one ``RTCSctpTransport`` instance; an aiortc without them keeps
its own behaviour (a debug line says so).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiortc.rtcsctptransport import SCTP_DATA_UNORDERED, DataChunk, RTCSctpTransport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AckOptions:
    """How long a SACK for unordered data may wait."""

    delay_s: float = 0.3
    """Longest wait (RFC 4960: under 500 ms; the peer's retransmission timer is ≥ 1 s)."""
    max_packets: int = 12
    """Acknowledge at once when this many packets wait for their SACK."""

    def __post_init__(self) -> None:
        if not 0.0 < self.delay_s < 0.5 or self.max_packets < 1:
            raise ValueError(f"delay_s must be in (0, 0.5) s and max_packets ≥ 1, got {self}")


class DelayedAcks:
    """The SACK policy of one SCTP association (see the module docstring)."""

    def __init__(self, transport: RTCSctpTransport, options: AckOptions = AckOptions()) -> None:
        self.transport = transport
        self.options = options
        self.sent = 0
        """SACKs sent."""
        self.delayed = 0
        """Packets whose SACK waited (acknowledged together with later ones)."""
        self._send_now = transport._send_sack
        self._receive_chunk = transport._receive_data_chunk
        self._receive_forward_tsn = transport._receive_forward_tsn_chunk
        self._waiting = 0
        self._urgent = False
        self._timer: asyncio.TimerHandle | None = None
        transport._receive_data_chunk = self._on_data_chunk  # type: ignore[method-assign]
        transport._receive_forward_tsn_chunk = self._on_forward_tsn  # type: ignore[method-assign]
        transport._send_sack = self._on_sack_due  # type: ignore[method-assign]

    async def _on_data_chunk(self, chunk: DataChunk) -> None:
        if not chunk.flags & SCTP_DATA_UNORDERED:
            self._urgent = True
        await self._receive_chunk(chunk)

    async def _on_forward_tsn(self, chunk: Any) -> None:
        self._urgent = True  # the peer abandoned data: it waits for this answer to move on
        await self._receive_forward_tsn(chunk)

    async def _on_sack_due(self) -> None:
        """Called by aiortc after each packet that needs acknowledging."""
        self._waiting += 1
        t = self.transport
        if (self._urgent or self._waiting >= self.options.max_packets or t._sack_misordered
                or t._sack_duplicates):
            await self._acknowledge()
            return
        self.delayed += 1
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.options.delay_s, lambda: asyncio.ensure_future(self._on_timer()))

    async def _on_timer(self) -> None:
        self._timer = None
        if self.transport._sack_needed and self.transport.state == "connected":
            await self._acknowledge()

    async def _acknowledge(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting = 0
        self._urgent = False
        self.sent += 1
        await self._send_now()


def delay_acks(transport: Any, options: AckOptions = AckOptions()) -> DelayedAcks | None:
    """Give ``transport`` (a peer connection's ``sctp``) delayed SACKs for unordered data; None where aiortc's
    internals are not where they used to be, or there is no SCTP transport."""
    needed = ("_send_sack", "_receive_data_chunk", "_receive_forward_tsn_chunk", "_sack_misordered",
              "_sack_duplicates", "_sack_needed")
    if not isinstance(transport, RTCSctpTransport) or not all(hasattr(transport, name) for name in needed):
        logger.debug("aiortc's SCTP internals are not where they used to be: SACKs stay immediate")
        return None
    return DelayedAcks(transport, options)
