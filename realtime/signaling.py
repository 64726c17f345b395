"""Signaling: how two peers exchange their offer and answer before WebRTC takes over.

Any object with aiortc's signaling interface (``connect``, ``send``, ``receive``, ``close``) will
do; the call code only uses ``offer`` and ``answer`` below. Two come with the package:

* ``tcp_signaling``: aiortc's ``TcpSocketSignaling``, for ``adasr send`` / ``adasr receive`` as two
  processes on one machine. The side that sends first (the sender, which makes the offer) listens, the
  receiver connects; the receiver retries until the sender is up. It has no authentication (whoever
  connects first gets the offer, portrait included, and takes the call), so it is refused on any
  address but loopback: between machines, the HTTP ``/offer`` endpoint with its token is the way.
* ``InProcessSignaling.pair()``: two ends joined by queues, for the demo and the tests.

An HTTP ``/offer`` endpoint fits the same seam: its client ``send``s the offer as a POST and
``receive``s the answer from the response; the server runs ``answer`` on a one-shot signaling
object built from the request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiortc import RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.signaling import BYE, TcpSocketSignaling

from realtime.errors import CallError
from realtime.transport import TransportOptions, set_local_description

logger = logging.getLogger(__name__)


class Signaling(Protocol):
    """aiortc's signaling interface."""

    async def connect(self) -> None: ...

    async def send(self, descr: Any) -> None: ...

    async def receive(self) -> Any: ...

    async def close(self) -> None: ...


class RetryingTcpSignaling(TcpSocketSignaling):
    """TcpSocketSignaling whose connecting side retries until the listening side is up."""

    def __init__(self, host: str, port: int, retry_for_s: float = 30.0) -> None:
        super().__init__(host, port)
        self.retry_for_s = retry_for_s

    async def _connect(self, server: bool) -> None:
        if server or self._writer is not None:
            await super()._connect(server)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for_s
        while True:
            try:
                await super()._connect(False)
                return
            except OSError as exc:
                if loop.time() > deadline:
                    raise CallError(f"no sender listening on {self._host}:{self._port} for signaling "
                                    f"({exc.strerror or exc}); start `adasr send` first") from None
                await asyncio.sleep(0.2)


def tcp_signaling(host: str, port: int, retry_for_s: float = 30.0) -> Signaling:
    """Signaling over one TCP connection (the offerer listens on host:port, the answerer connects); loopback only."""
    if not is_loopback(host):
        raise CallError(f"TCP signaling has no authentication and stays on this machine: --signaling-host must be a "
                        f"loopback address (127.0.0.1, ::1, localhost), got {host!r}; between machines use "
                        "`adasr receive` (HTTP, with a token) and `adasr send --url`")
    return RetryingTcpSignaling(host, port, retry_for_s)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface (a literal address, or ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip()).is_loopback
    except ValueError:
        return False


class InProcessSignaling:
    """One end of an in-memory signaling pair (both peers in one event loop)."""

    def __init__(self, inbox: asyncio.Queue[Any], outbox: asyncio.Queue[Any]) -> None:
        self._inbox, self._outbox = inbox, outbox

    @classmethod
    def pair(cls) -> tuple[InProcessSignaling, InProcessSignaling]:
        """Two connected ends."""
        a: asyncio.Queue[Any] = asyncio.Queue()
        b: asyncio.Queue[Any] = asyncio.Queue()
        return cls(a, b), cls(b, a)

    async def connect(self) -> None:
        """Nothing to connect."""

    async def send(self, descr: Any) -> None:
        await self._outbox.put(descr)

    async def receive(self) -> Any:
        return await self._inbox.get()

    async def close(self) -> None:
        await self._outbox.put(BYE)


async def _receive_description(signaling: Signaling, expected: str, timeout_s: float) -> RTCSessionDescription:
    """Next session description of type ``expected``, skipping trickled candidates (ours are in the SDP)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise CallError(f"no {expected} from the peer within {timeout_s:.0f} s of signaling")
        try:
            obj = await asyncio.wait_for(signaling.receive(), remaining)
        except asyncio.TimeoutError:
            continue
        if obj is None or obj is BYE:
            raise CallError(f"the peer closed signaling before sending its {expected}")
        if isinstance(obj, RTCSessionDescription):
            if obj.type != expected:
                raise CallError(f"signaling delivered an {obj.type}, expected an {expected}")
            return obj
        if isinstance(obj, RTCIceCandidate):
            continue
        logger.warning("ignoring unexpected signaling object %r", type(obj).__name__)


async def offer(pc: RTCPeerConnection, signaling: Signaling, options: TransportOptions) -> None:
    """Offerer: create and send the offer (candidates included), apply the answer."""
    await signaling.connect()
    await set_local_description(pc, await pc.createOffer(), options)
    await signaling.send(pc.localDescription)
    await pc.setRemoteDescription(await _receive_description(signaling, "answer", options.connect_timeout_s))


async def answer(pc: RTCPeerConnection, signaling: Signaling, options: TransportOptions,
                 before_answer: Callable[[], None] | None = None) -> None:
    """Answerer: wait for the offer, apply it, send the answer (candidates included). ``before_answer`` runs
    between the two: where an answerer adds its own tracks to the transceivers the offer made."""
    await signaling.connect()
    await pc.setRemoteDescription(await _receive_description(signaling, "offer", options.connect_timeout_s))
    if before_answer is not None:
        before_answer()
    await set_local_description(pc, await pc.createAnswer(), options)
    await signaling.send(pc.localDescription)
