"""The VideoRoom plugin's requests and events, as Janus 1.x speaks them.

A publisher: ``join`` (``ptype: publisher``) answers with its feed id, a private id and the feeds
already published; ``publish`` with an SDP offer answers with Janus's SDP answer. A subscriber, on
a handle of its own: ``join`` (``ptype: subscriber``, the feeds wanted) answers with Janus's SDP
offer; ``start`` carries our answer. Afterwards the publisher handle receives the room's news as
events: ``publishers`` (new feeds), ``unpublished`` and ``leaving`` (feeds gone).

Janus lets a participant who gives a PIN into a room that has none, so a room someone else created
open first would take us in silently: ``require_pin`` asks Janus whether the room checks PINs.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, replace
from typing import Any

from aiortc import RTCSessionDescription

from realtime.janus.api import JanusError, JanusHandle, JanusSession, JsonObject
from realtime.messages import MAX_FEED_ID
from realtime.peer_text import escaped

logger = logging.getLogger(__name__)

#: The plugin's package name, for ``attach``.
VIDEOROOM = "janus.plugin.videoroom"
#: VideoRoom error codes used here (``janus_videoroom.c``).
NO_SUCH_ROOM = 426
ROOM_EXISTS = 427
NO_SUCH_FEED = 428
UNAUTHORIZED = 433


@dataclass(frozen=True)
class RoomOptions:
    """Which room to join, as whom, and how to create it."""

    room: int
    """The room's numeric id."""
    display: str
    """This participant's name, shown to the others (``Feed.display``)."""
    pin: str | None = None
    """The room's PIN: needed to join a room that has one; set on a room we create."""
    secret: str | None = None
    """The room's secret (needed to edit or destroy it): set on a room we create."""
    admin_key: str | None = None
    """The VideoRoom's ``admin_key``, when Janus requires one to create rooms."""
    create: bool = True
    """Create the room when it does not exist (else joining a missing room fails)."""
    max_publishers: int = 6
    """Publishers at once in a room we create."""

    def __post_init__(self) -> None:
        if not 0 < self.room < 2**53:
            raise ValueError(f"a room id is a positive integer (JSON-safe), got {self.room}")
        if self.max_publishers < 1:
            raise ValueError(f"max_publishers must be ≥ 1, got {self.max_publishers}")


@dataclass(frozen=True)
class Feed:
    """A published feed of the room: one other participant."""

    id: int
    """Janus's id of the feed (the publisher's id in the room)."""
    display: str
    """The name its publisher gave, escaped (may be empty; not unique, not authenticated)."""


@dataclass(frozen=True)
class Joined:
    """What ``join`` as a publisher answered."""

    feed_id: int
    """Our own id in the room (the feed others subscribe to)."""
    private_id: int | None
    """Ties our subscriptions to our publisher presence (Janus uses it for its events)."""
    publishers: tuple[Feed, ...]
    """Feeds already published when we joined."""


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _feed_id(value: Any) -> int | None:
    """A feed id as the rest of the call can use it (SOURCE_REQUEST carries it): an integer in [1, 2⁵³), else None.
    A publisher picks its own id, so the check is here, where Janus hands it over."""
    ident = _integer(value)
    if ident is not None and 1 <= ident <= MAX_FEED_ID:
        return ident
    if value is not None:
        logger.warning("ignoring a feed with the id %s: feed ids are integers in [1, 2^53)", escaped(repr(value), 40))
    return None


def feeds_in(data: JsonObject) -> tuple[Feed, ...]:
    """The feeds a ``joined`` answer or a ``publishers`` event lists (malformed entries and unusable ids skipped)."""
    entries = data.get("publishers")
    feeds = []
    for entry in entries if isinstance(entries, list) else []:
        ident = _feed_id(entry.get("id")) if isinstance(entry, dict) else None
        if ident is not None:
            display = entry.get("display")
            feeds.append(Feed(ident, escaped(display) if isinstance(display, str) else ""))
    return tuple(feeds)


def departed_feed(data: JsonObject) -> int | None:
    """The feed an ``unpublished`` or ``leaving`` event withdraws (None for other events and for our own,
    which Janus reports as ``"ok"``)."""
    for key in ("unpublished", "leaving"):
        value = data.get(key)
        ident = _feed_id(value) if value != "ok" else None
        if ident is not None:
            return ident
    return None


async def ensure_room(handle: JanusHandle, options: RoomOptions) -> bool:
    """Make sure the room exists; returns whether we created it. Two participants that create it at once
    are fine: the loser sees ``ROOM_EXISTS``."""
    reply = await handle.message({"request": "exists", "room": options.room})
    if reply.data.get("exists") is True:
        return False
    if not options.create:
        raise JanusError("join", f"room {options.room} does not exist (and creating it was not asked for)",
                         NO_SUCH_ROOM)
    body: JsonObject = {"request": "create", "room": options.room, "permanent": False,
                        "publishers": options.max_publishers, "audiocodec": "opus"}
    for key in ("pin", "secret", "admin_key"):
        if getattr(options, key) is not None:
            body[key] = getattr(options, key)
    try:
        await handle.message(body)
    except JanusError as error:
        if error.code == ROOM_EXISTS:
            return False
        raise
    return True


async def require_pin(session: JanusSession, options: RoomOptions) -> None:
    """JanusError unless the room checks PINs: a subscription with a wrong PIN (on a handle of its own, to a feed
    that does not exist) must be refused as unauthorised. Janus answers a room without a PIN by looking for the
    feed instead. Only for a room we did not create, when we were given a PIN."""
    probe = await session.attach(VIDEOROOM, lambda event: None)
    try:
        await join_as_subscriber(probe, replace(options, pin=secrets.token_hex(16)), secrets.randbelow(2**52) + 1,
                                 None)
    except JanusError as error:
        if error.code == UNAUTHORIZED:
            return
        if error.code != NO_SUCH_FEED:
            raise
    finally:
        try:
            await probe.detach()
        except JanusError as error:
            logger.debug("detaching the PIN probe: %s", error)
    raise JanusError("join", f"room {options.room} has no PIN, yet we were given one: someone created it open "
                     "before us (anyone may join and watch); not joining (use another room id)")


async def join_as_publisher(handle: JanusHandle, options: RoomOptions) -> Joined:
    """``join`` as a publisher: our feed id and the feeds already there."""
    body: JsonObject = {"request": "join", "ptype": "publisher", "room": options.room, "display": options.display}
    if options.pin is not None:
        body["pin"] = options.pin
    data = (await handle.message(body)).data
    feed_id = _feed_id(data.get("id"))
    if data.get("videoroom") != "joined" or feed_id is None:
        raise JanusError("join", f"unexpected answer {data!r}")
    return Joined(feed_id, _integer(data.get("private_id")), feeds_in(data))


def _description(jsep: JsonObject | None, kind: str, request: str) -> RTCSessionDescription:
    if jsep is None or jsep.get("type") != kind or not isinstance(jsep.get("sdp"), str):
        raise JanusError(request, f"Janus sent no SDP {kind} (got {jsep!r})")
    return RTCSessionDescription(sdp=jsep["sdp"], type=kind)


async def publish(handle: JanusHandle, offer: RTCSessionDescription) -> RTCSessionDescription:
    """``publish`` our offer (data channel, audio); returns Janus's answer."""
    reply = await handle.message({"request": "publish"}, {"type": offer.type, "sdp": offer.sdp})
    return _description(reply.jsep, "answer", "publish")


async def join_as_subscriber(handle: JanusHandle, options: RoomOptions, feed: int,
                             private_id: int | None) -> RTCSessionDescription:
    """``join`` as a subscriber of one feed; returns Janus's offer (the feed's audio and data)."""
    body: JsonObject = {"request": "join", "ptype": "subscriber", "room": options.room, "streams": [{"feed": feed}]}
    if private_id is not None:
        body["private_id"] = private_id
    if options.pin is not None:
        body["pin"] = options.pin
    reply = await handle.message(body)
    return _description(reply.jsep, "offer", "join")


async def start(handle: JanusHandle, answer: RTCSessionDescription) -> None:
    """``start`` the subscription with our answer."""
    await handle.message({"request": "start"}, {"type": answer.type, "sdp": answer.sdp})
