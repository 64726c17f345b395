"""WebRTC plumbing both peers share: the peer connection, the two data channels, ICE host addresses.

The call needs no third-party server: no STUN or TURN by default (``iceServers=[]``), host
candidates only; ``TransportOptions.ice`` (``realtime.ice.IceOptions``) adds the user's STUN and
TURN servers for calls across NATs. Which host addresses are offered is a choice aioice 0.13 does
not expose: its ``Connection.gather_candidates`` calls the module function ``aioice.ice.get_host_addresses``,
which lists every interface *except* loopback (RFC 8445 §5.1.1.1 forbids loopback candidates).
Two peers on one machine with no network, as in the demo and the tests, therefore need loopback
put back. ``gather_host_addresses`` wraps that one function once per process; the wrapper reads
a context variable, so the choice applies only to the ``setLocalDescription`` it surrounds
(aiortc gathers inside it, in tasks that inherit the context) and other connections in the same
process keep aioice's default.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import aioice.ice
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.stats import RTCTransportStats

from realtime.errors import CallError
from realtime.ice import IceOptions, apply_turn_tls, check_gathered

logger = logging.getLogger(__name__)

#: Label of the unreliable, unordered channel that carries MOTION.
MOTION_LABEL = "adasr-motion"
#: Label of the reliable, ordered channel that carries the source transfer and control messages.
CONTROL_LABEL = "adasr-control"
#: Host addresses that keep a call on this machine.
LOOPBACK = ("127.0.0.1",)


@dataclass(frozen=True)
class TransportOptions:
    """How a peer connects."""

    ice_hosts: tuple[str, ...] | None = None
    """Addresses offered as ICE host candidates; None: aioice's default (every non-loopback interface).
    ``LOOPBACK`` keeps the call on this machine."""
    ice: IceOptions = IceOptions()
    """STUN and TURN servers, relay-only; none by default, so no third party is contacted."""
    connect_timeout_s: float = 30.0
    """How long signaling plus ICE/DTLS/SCTP set-up may take before the call is given up."""


_ICE_HOSTS: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("adasr_ice_hosts", default=None)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """aioice's host address list, or the addresses the surrounding ``gather_host_addresses`` chose."""
    chosen = _ICE_HOSTS.get()
    if chosen is None:
        return _original_get_host_addresses(use_ipv4, use_ipv6)
    out = []
    for address in chosen:
        version = ipaddress.ip_address(address).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            out.append(address)
    return out


@contextlib.contextmanager
def gather_host_addresses(addresses: tuple[str, ...] | None) -> Iterator[None]:
    """Within this block, ICE gathering offers exactly ``addresses`` (None: aioice's default)."""
    if addresses is not None:
        for address in addresses:
            ipaddress.ip_address(address)  # ValueError on a typo, before anything is gathered
    if aioice.ice.get_host_addresses is not _get_host_addresses:
        aioice.ice.get_host_addresses = _get_host_addresses
    token = _ICE_HOSTS.set(tuple(addresses) if addresses is not None else None)
    try:
        yield
    finally:
        _ICE_HOSTS.reset(token)


def create_peer_connection(options: TransportOptions) -> RTCPeerConnection:
    """An RTCPeerConnection with only the ICE servers the options name (none by default)."""
    return RTCPeerConnection(options.ice.configuration())


async def set_local_description(pc: RTCPeerConnection, description: RTCSessionDescription,
                                options: TransportOptions) -> None:
    """``setLocalDescription`` (which gathers candidates) with the options' host addresses and TURN trust;
    CallError when a relay-only call got no relay candidate."""
    apply_turn_tls(pc, options.ice)
    with gather_host_addresses(options.ice_hosts):
        await pc.setLocalDescription(description)
    check_gathered(pc, options.ice)


class Channel(Protocol):
    """What the sender and receiver need from a data channel (an RTCDataChannel, or a test double)."""

    @property
    def bufferedAmount(self) -> int: ...  # noqa: N802 (the WebRTC name)

    @property
    def readyState(self) -> str: ...  # noqa: N802

    def send(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class Impairment:
    """What an ``InProcessChannel`` does to messages, as a bad network would (for tests and the soak run)."""

    loss: float = 0.0
    """Probability that a message is dropped."""
    reorder: float = 0.0
    """Probability that a message is held back and delivered after 1..``reorder_depth`` later ones."""
    reorder_depth: int = 3
    """How many later messages at most overtake a held-back one."""
    duplicate: float = 0.0
    """Probability that a delivered message is delivered twice."""
    seed: int = 0
    """Seed of the random choices, so a failing run can be replayed."""

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.reorder_depth < 1:
            raise ValueError(f"reorder_depth must be ≥ 1, got {self.reorder_depth}")


class InProcessChannel:
    """A data channel inside one process: ``send`` hands the message to ``deliver`` on the event loop.

    The local webcam joins the call's own Sender and Receiver with these (one process, no network,
    the same code path as a call); with an ``Impairment`` it is the lossy, reordering network of the
    resilience tests. Delivery is scheduled with ``call_soon``, never made inside ``send``, so a
    receiver's handler runs as it would for a real channel: later, on the loop.
    """

    def __init__(self, deliver: Callable[[bytes], None], label: str = "in-process",
                 impairment: Impairment | None = None) -> None:
        self.deliver = deliver
        self.label = label
        self.impairment = impairment
        self._random = random.Random(impairment.seed if impairment else 0)
        self._held: list[list[Any]] = []  # [messages still to overtake, data]
        self._state = "open"
        self.sent = 0
        """Messages handed to ``send``."""
        self.delivered = 0
        """Deliveries scheduled (duplicates included)."""
        self.lost = 0
        """Messages dropped by the impairment."""
        self.reordered = 0
        """Messages held back and delivered late."""
        self.duplicated = 0
        """Messages delivered twice."""

    @property
    def readyState(self) -> str:  # noqa: N802 (the WebRTC name)
        return self._state

    @property
    def bufferedAmount(self) -> int:  # noqa: N802
        return 0

    def close(self) -> None:
        """Stop delivering: later ``send`` calls are ignored, as on a closed data channel."""
        self._state = "closed"
        self._held.clear()

    def send(self, data: bytes) -> None:
        """Deliver ``data`` (later, on the running loop), after the impairment had its say."""
        if self._state != "open":
            return
        self.sent += 1
        imp = self.impairment
        due = [entry for entry in self._held if entry[0] <= 1]
        for entry in self._held:
            entry[0] -= 1
        self._held = [entry for entry in self._held if entry[0] > 0]
        if imp is not None and self._random.random() < imp.loss:
            self.lost += 1
        elif imp is not None and self._random.random() < imp.reorder:
            self.reordered += 1
            self._held.append([self._random.randint(1, imp.reorder_depth), data])
        else:
            self._schedule(data)
        for _, late in due:
            self._schedule(late)

    def _schedule(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        copies = 2 if self.impairment is not None and self._random.random() < self.impairment.duplicate else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            loop.call_soon(self._deliver_if_open, data)
            self.delivered += 1

    def _deliver_if_open(self, data: bytes) -> None:
        if self._state == "open":
            self.deliver(data)


@dataclass
class CallChannels:
    """The two data channels of a call."""

    motion: RTCDataChannel
    """Unreliable, unordered: MOTION only."""
    control: RTCDataChannel
    """Reliable, ordered: source transfer, RESET_REFERENCE, GOODBYE, STATS (both directions)."""


def create_channels(pc: RTCPeerConnection) -> CallChannels:
    """The offerer's two channels; call before creating the offer (the SDP must carry SCTP)."""
    control = pc.createDataChannel(CONTROL_LABEL, ordered=True)
    motion = pc.createDataChannel(MOTION_LABEL, ordered=False, maxRetransmits=0)
    return CallChannels(motion=motion, control=control)


def listen_channels(pc: RTCPeerConnection) -> asyncio.Future[CallChannels]:
    """The two channels the peer opens on ``pc`` (its face's motion and control), once both have arrived.

    Each side of a call sends on the channels it opened and receives on the ones its peer opened: the caller
    opens its pair before the offer, a callee that shows its face opens its own once connected
    (realtime/PROTOCOL.md, "Two-way calls"). Listen before the peer can open them."""
    found: dict[str, RTCDataChannel] = {}
    both: asyncio.Future[CallChannels] = asyncio.get_running_loop().create_future()

    @pc.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        if channel.label in (MOTION_LABEL, CONTROL_LABEL) and channel.label not in found:
            found[channel.label] = channel
        else:
            logger.warning("ignoring unexpected data channel %r", channel.label)
        if len(found) == 2 and not both.done():
            both.set_result(CallChannels(motion=found[MOTION_LABEL], control=found[CONTROL_LABEL]))

    return both


async def accept_channels(pc: RTCPeerConnection, timeout_s: float) -> CallChannels:
    """The answerer's side: wait until the offerer's two channels have arrived."""
    incoming = listen_channels(pc)
    try:
        return await asyncio.wait_for(incoming, timeout_s)
    except asyncio.TimeoutError:
        raise CallError(f"the peer did not open its data channels within {timeout_s:.0f} s") from None


async def wait_open(channel: RTCDataChannel, timeout_s: float) -> None:
    """Wait until ``channel`` is open (ICE, DTLS and SCTP are up), or raise CallError."""
    if channel.readyState == "open":
        return
    opened = asyncio.Event()
    channel.on("open", opened.set)
    if channel.readyState == "open":
        return
    try:
        await asyncio.wait_for(opened.wait(), timeout_s)
    except asyncio.TimeoutError:
        raise CallError(f"data channel {channel.label!r} did not open within {timeout_s:.0f} s: the peers "
                        "could not connect (check --ice-host and that both can reach each other over UDP; behind "
                        "NATs or firewalls, give both a --stun and a --turn server)") from None


def _dtls_transport(pc: RTCPeerConnection) -> Any | None:
    sctp = pc.sctp
    return None if sctp is None else sctp.transport


def dtls_transport_stats(pc: RTCPeerConnection) -> RTCTransportStats | None:
    """The DTLS transport's own counters (bytes and packets, both ways: UDP payloads, SCTP, SRTP and the
    handshake), read from ``RTCDtlsTransport._get_stats`` (aiortc's public ``getStats`` covers media
    transceivers only). None when aiortc does not expose them or the connection has no data channel."""
    transport = _dtls_transport(pc)
    try:
        report = transport._get_stats()  # type: ignore[union-attr]
        return next(iter(report.values()))
    except Exception:  # an aiortc without these internals: the measurement is optional
        logger.debug("DTLS transport counters unavailable", exc_info=True)
        return None


def dtls_tx_counters(pc: RTCPeerConnection) -> tuple[int, int] | None:
    """(bytes, packets) the DTLS transport has sent: UDP payloads, SCTP and handshake included."""
    stats = dtls_transport_stats(pc)
    return None if stats is None else (int(stats.bytesSent), int(stats.packetsSent))


def dtls_cipher(pc: RTCPeerConnection) -> str | None:
    """OpenSSL name of the cipher suite the DTLS session negotiated, None when unknown."""
    transport = _dtls_transport(pc)
    try:
        name = transport._ssl.get_cipher_name()  # type: ignore[union-attr]
        return str(name) if name else None
    except Exception:
        logger.debug("DTLS cipher unavailable", exc_info=True)
        return None
