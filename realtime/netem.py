"""A bad network on purpose: loss, delay and jitter applied to a peer connection's outgoing datagrams.

The kernel's netem is not everywhere (not on this project's machine), and tests must not need root:
the impairment sits in the process instead, around the one function every packet of a connection
leaves through. aiortc's ``RTCIceTransport._send`` (aioice's ``Connection.send``) carries DTLS, SCTP
(the face's channels) and SRTP (the voice) alike: ``impair`` replaces it on one connection with a
function that drops each datagram with probability ``loss`` and hands the others on after ``delay``
plus a uniformly random share of ``jitter``; datagrams whose delays cross arrive reordered, as on a
real jittery path. ICE's own connectivity checks go around it (aioice sends them directly), so the
connection stays up as a lossy path would keep it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkImpairment:
    """What the network does to each datagram one side sends."""

    loss: float = 0.0
    """Probability that a datagram is dropped."""
    delay_ms: float = 0.0
    """Delay every datagram takes."""
    jitter_ms: float = 0.0
    """A further delay, uniform in [0, jitter_ms] per datagram (so datagrams overtake each other)."""
    seed: int = 0
    """Seed of the random choices, so a run can be replayed."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0 or self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"loss must be in [0, 1) and the delays ≥ 0, got {self}")

    @property
    def label(self) -> str:
        """E.g. ``2 % loss, 30 ms jitter``."""
        return f"{self.loss * 100:g} % loss, {self.delay_ms:g} ms delay, {self.jitter_ms:g} ms jitter"


@dataclass
class LinkCounters:
    """What the impairment did to one side's datagrams."""

    sent: int = 0
    dropped: int = 0


Send = Callable[[bytes], Awaitable[None]]


class ImpairedLink:
    """One connection's outgoing datagrams through a ``LinkImpairment``."""

    def __init__(self, send: Send, impairment: LinkImpairment) -> None:
        self._send = send
        self.impairment = impairment
        self.counters = LinkCounters()
        self._random = random.Random(impairment.seed)
        self._pending: set[asyncio.Task[None]] = set()

    async def send(self, data: bytes) -> None:
        """Drop ``data``, or send it after its delay (the caller does not wait for it, as with a real network)."""
        imp, counters = self.impairment, self.counters
        counters.sent += 1
        if self._random.random() < imp.loss:
            counters.dropped += 1
            return
        delay_s = (imp.delay_ms + self._random.uniform(0.0, imp.jitter_ms)) / 1000.0
        if delay_s <= 0:
            await self._send(data)
            return
        task = asyncio.ensure_future(self._later(data, delay_s))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _later(self, data: bytes, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            await self._send(data)
        except Exception:  # noqa: BLE001 (the connection closed meanwhile: the datagram is lost, as it would be)
            logger.debug("a delayed datagram could not be sent", exc_info=True)


def impair(pc: Any, impairment: LinkImpairment) -> ImpairedLink:
    """Impair every datagram ``pc`` (an open RTCPeerConnection, bundled: one ICE transport) sends from now on."""
    sctp = pc.sctp
    ice = sctp.transport.transport if sctp is not None else None
    if ice is None or not hasattr(ice, "_send"):
        raise RuntimeError("this peer connection has no ICE transport to impair (aiortc's internals moved?)")
    link = ImpairedLink(ice._send, impairment)
    ice._send = link.send
    return link
