"""ICE across NATs: the user's STUN and TURN servers, relay-only calls, and which path a call took.

A call between two homes or offices rarely connects on host candidates alone: STUN finds each
peer's public address (server-reflexive candidates), TURN relays the media when no direct path
exists (relay candidates). ``IceOptions`` is what the user gives (``--stun``, ``--turn``,
``--turn-user``, ``--turn-password`` or the environment, ``--turn-ca``, ``--relay-only``);
``configuration`` turns it into aiortc's ``RTCConfiguration``.

What aiortc 1.16 (aioice 0.13) does with that, and what this module does about it:

* It uses only the first ``stun:`` and the first ``turn:``/``turns:`` URL and silently skips
  ``stuns:``, ``turn:`` with a transport other than udp/tcp and ``turns:`` over anything but tcp:
  one URL each, checked here, so nothing the user typed is ignored without a word.
* ``iceTransportPolicy=RELAY`` makes aioice gather relay candidates only: relay-only needs no
  filtering of ours.
* ``turns:`` verifies the server against the system's CAs; with a private CA (a self-signed
  coturn) it gathers no candidate at all and says nothing. aioice accepts an ``ssl.SSLContext``
  where aiortc passes ``True``, so ``apply_turn_tls`` hands it one that trusts ``--turn-ca``
  before gathering.
* A TURN server that refuses the credentials, or cannot be reached, also just yields no relay
  candidate: ``check_gathered`` turns that into an error (relay-only) or a warning.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransport, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.rtcicetransport import parse_stun_turn_uri

from realtime.errors import CallError
from realtime.settings import TURN_PASSWORD_ENV, TURN_USER_ENV

logger = logging.getLogger(__name__)


#: Candidate types from the most direct path to the least (RFC 8445 §5.1.1).
CANDIDATE_TYPES = ("host", "prflx", "srflx", "relay")

_URL_SEPARATORS = re.compile(r"[\s,;]")


@dataclass(frozen=True)
class IceOptions:
    """The STUN and TURN servers a peer uses; none by default (host candidates only, no third party contacted)."""

    stun: str | None = None
    """One ``stun:HOST[:PORT]`` URL (port 3478 by default)."""
    turn: str | None = None
    """One ``turn:HOST[:PORT][?transport=udp|tcp]`` or ``turns:HOST[:PORT]`` (TLS over TCP, port 5349) URL."""
    turn_user: str | None = None
    """TURN user name (long-term credentials)."""
    turn_password: str | None = None
    """TURN password."""
    turn_ca: Path | None = None
    """PEM file of the CA (or the self-signed certificate) a ``turns:`` server is verified against;
    None: the system's CAs."""
    relay_only: bool = False
    """Gather relay candidates only: every byte goes through the TURN server (hides both peers' addresses)."""

    def __post_init__(self) -> None:
        if self.stun is not None:
            scheme = _parse(self.stun, "--stun", "stun:HOST[:PORT]")["scheme"]
            if scheme != "stun":
                raise CallError(f"--stun must be a stun: URL (aiortc does not speak {scheme}:), got {self.stun!r}")
        if self.turn is not None:
            parsed = _parse(self.turn, "--turn", "turn:HOST[:PORT] or turns:HOST[:PORT]")
            if parsed["scheme"] not in ("turn", "turns"):
                raise CallError(f"--turn must be a turn: or turns: URL, got {self.turn!r}")
            allowed = ("udp", "tcp") if parsed["scheme"] == "turn" else ("tcp",)
            if parsed["transport"] not in allowed:
                raise CallError(f"--turn {self.turn!r}: aiortc supports {parsed['scheme']}: over "
                                f"{' or '.join(allowed)} only (?transport={parsed['transport']} would be ignored)")
            if not self.turn_user or self.turn_password is None:
                raise CallError(f"--turn needs a user and a password: --turn-user and --turn-password "
                                f"(or ${TURN_USER_ENV} and ${TURN_PASSWORD_ENV})")
        if self.turn_ca is not None:
            if not self.is_turns:
                raise CallError("--turn-ca only applies to a turns: URL (TURN over TLS)")
            if not Path(self.turn_ca).is_file():
                raise CallError(f"--turn-ca {str(self.turn_ca)!r} is not a file")
        if self.relay_only and self.turn is None:
            raise CallError("--relay-only needs a TURN server: --turn URL")

    @classmethod
    def with_environment(cls, **fields: Any) -> IceOptions:
        """Options from ``fields``, the TURN user and password taken from the environment where not given."""
        if fields.get("turn_user") is None:
            fields["turn_user"] = os.environ.get(TURN_USER_ENV) or None
        if fields.get("turn_password") is None:
            fields["turn_password"] = os.environ.get(TURN_PASSWORD_ENV)
        return cls(**fields)

    @property
    def is_turns(self) -> bool:
        """Whether the TURN server is reached over TLS."""
        return self.turn is not None and self.turn.strip().lower().startswith("turns:")

    def configuration(self) -> RTCConfiguration:
        """aiortc's configuration: these servers only (an empty list, not aiortc's default Google STUN server)."""
        servers = []
        if self.stun is not None:
            servers.append(RTCIceServer(urls=self.stun.strip()))
        if self.turn is not None:
            servers.append(RTCIceServer(urls=self.turn.strip(), username=self.turn_user,
                                        credential=self.turn_password))
        policy = RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)

    def turn_tls_context(self) -> ssl.SSLContext | None:
        """The TLS context a ``turns:`` server is verified with when ``turn_ca`` names a private CA, else None."""
        if not self.is_turns or self.turn_ca is None:
            return None
        try:
            return ssl.create_default_context(cafile=str(self.turn_ca))
        except (ssl.SSLError, OSError) as exc:
            raise CallError(f"--turn-ca {str(self.turn_ca)!r} is not a PEM certificate ({exc})") from None


def _parse(url: str, flag: str, form: str) -> dict[str, Any]:
    """aiortc's own reading of ``url``, refusing a list (aiortc would use the first URL and drop the rest)."""
    text = url.strip()
    if _URL_SEPARATORS.search(text):
        raise CallError(f"{flag} takes one URL (aiortc uses only the first STUN and the first TURN server), "
                        f"got {url!r}")
    try:
        return parse_stun_turn_uri(text)
    except ValueError as exc:
        raise CallError(f"{flag} must look like {form}, got {url!r} ({exc})") from None


def ice_transports(pc: RTCPeerConnection) -> Iterator[RTCIceTransport]:
    """The ICE transports of ``pc``'s data channels and media, each once (bundled media share one)."""
    seen: set[int] = set()
    dtls = [pc.sctp.transport] if pc.sctp is not None else []
    for transceiver in pc.getTransceivers():
        dtls += [transceiver.sender.transport, transceiver.receiver.transport]
    for transport in dtls:
        ice = transport.transport if transport is not None else None
        if ice is not None and id(ice) not in seen:
            seen.add(id(ice))
            yield ice


def apply_turn_tls(pc: RTCPeerConnection, options: IceOptions) -> None:
    """Before gathering: verify a ``turns:`` server with ``options.turn_ca`` instead of the system's CAs.

    aiortc hands aioice ``turn_ssl=True``; aioice passes that value to asyncio as ``ssl=``, which also
    takes an ``SSLContext``. Set on the aioice connection (``RTCIceGatherer._connection``, aiortc's
    only handle on it) of every transport, right before ``setLocalDescription`` gathers.
    """
    context = options.turn_tls_context()
    if context is None:
        return
    for transport in ice_transports(pc):
        transport.iceGatherer._connection.turn_ssl = context  # type: ignore[assignment]  # aioice annotates bool


def local_candidate_types(pc: RTCPeerConnection) -> dict[str, int]:
    """How many local candidates of each type the local description carries (after gathering)."""
    counts: dict[str, int] = {}
    description = pc.localDescription
    for line in (description.sdp if description is not None else "").splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if "typ" in fields[:-1]:
                kind = fields[fields.index("typ") + 1]
                counts[kind] = counts.get(kind, 0) + 1
    return counts


def check_gathered(pc: RTCPeerConnection, options: IceOptions) -> None:
    """After gathering: a TURN server that gave no relay candidate is an error when relay-only, else a warning.

    aioice drops a failed allocation (wrong credentials, unreachable server, untrusted certificate)
    without a word; relay-only would then time out with no candidate at all.
    """
    if options.turn is None or local_candidate_types(pc).get("relay"):
        return
    hint = (" or --turn-ca (the server's certificate is not trusted by the system's CAs)" if options.is_turns
            else "")
    message = (f"the TURN server {options.turn} gave no relay candidate: check that it is reachable, the "
               f"--turn-user/--turn-password{hint}")
    if options.relay_only:
        raise CallError(message + " (--relay-only: nothing else to try)")
    logger.warning("%s; trying the other candidates", message)


@dataclass(frozen=True)
class CandidatePair:
    """The types of the candidate pair ICE selected: how the call's packets actually travel."""

    local: str
    """This peer's candidate: host, srflx, prflx or relay."""
    remote: str
    """The other peer's candidate."""

    @property
    def kind(self) -> str:
        """The less direct of the two: ``relay`` when either end relays, then ``srflx``/``prflx``, else ``host``."""
        rank = {name: i for i, name in enumerate(CANDIDATE_TYPES)}
        return max((self.local, self.remote), key=lambda name: rank.get(name, len(CANDIDATE_TYPES)))


def selected_candidate_pair(pc: RTCPeerConnection) -> CandidatePair | None:
    """The selected (nominated) pair of ``pc``'s first connected ICE transport; None before ICE completes.

    aiortc's ``getStats`` has no candidate-pair entry; the pair is read from aioice's connection
    (``Connection._nominated``, component 1: RTP and data share it, rtcp-mux).
    """
    for transport in ice_transports(pc):
        try:
            pair = transport._connection._nominated.get(1)
        except AttributeError:  # an aiortc/aioice without these internals: the figure is optional
            logger.debug("selected candidate pair unavailable", exc_info=True)
            return None
        if pair is not None:
            return CandidatePair(local=str(pair.local_candidate.type), remote=str(pair.remote_candidate.type))
    return None
