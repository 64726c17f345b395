"""One person in a VideoRoom: publish a data channel (and a voice), receive every other feed, per feed.

``RoomParticipant.join`` creates a Janus session, creates the room when allowed, joins as a
publisher and publishes one data channel (plus an audio track if given) over one
RTCPeerConnection. Every other feed, those already there and those announced later, gets a
subscription of its own: a VideoRoom handle and an RTCPeerConnection per remote feed, so whatever
arrives on it comes from that feed and no other (a publisher cannot pass its messages off as
another's), and a feed that leaves takes down only its own connection.

What the caller sees, through ``RoomCallbacks``, per remote feed: it joined (with its display
name; from then on it is in ``feeds``), each message on its data channel, each audio frame of its
voice, and that it left (unpublished, left the room, hung up, or its connection failed). It moves
bytes only; the call's message formats are layered on top. A caller that plays the voices itself
(through its own jitter buffer) takes each subscription's connection before Janus's offer is
applied instead (``RoomCallbacks.connecting``), and the participant leaves its tracks alone.
``send`` broadcasts to every subscriber; the participant is also a ``realtime.transport.Channel``,
so a sender can write to it.

Janus's behaviour this relies on, measured with Janus 1.1.2: a subscriber must open a data channel
of its own before answering Janus's offer, or Janus never forwards a message to it; Janus relays a
feed's messages on a channel it opens and labels with the feed's id (the publisher's label is not
passed on), reliable and ordered whatever the publisher chose, so a lost packet delays those behind
it. A participant that vanishes (killed, unplugged) is reported gone only when Janus times its
session out (``session_timeout``, 60 s by default): a caller that must react sooner watches for the
feed's silence itself. Janus forwards, it does not store: what a publisher sends before a
subscription is up never reaches that subscriber.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from realtime.errors import CallError
from realtime.peer_text import escaped
from realtime.janus.api import JanusError, JanusHandle, JanusSession, JanusOptions, JsonObject, plugin_reply
from realtime.janus.videoroom import (
    VIDEOROOM,
    Feed,
    RoomOptions,
    departed_feed,
    ensure_room,
    feeds_in,
    join_as_publisher,
    join_as_subscriber,
    publish,
    require_pin,
    start,
)
from realtime.transport import (
    TransportOptions,
    create_peer_connection,
    dtls_transport_stats,
    set_local_description,
    wait_open,
)

logger = logging.getLogger(__name__)

#: Label of our published data channel. Janus 1.1.2 does not pass it on: a subscriber receives a feed's messages
#: on a channel Janus opens and labels with the feed's id.
PUBLISHER_LABEL = "adasr"
#: Label of the data channel a subscriber opens towards Janus before answering (janus.js uses the same):
#: without one, Janus never sees the subscriber's data side ready and forwards nothing.
SUBSCRIBER_LABEL = "JanusDataChannel"


@dataclass(frozen=True)
class ParticipantOptions:
    """Where the room is and how this participant publishes."""

    janus: JanusOptions
    """Janus's HTTP API."""
    room: RoomOptions
    """Room, display name, PIN and secret."""
    transport: TransportOptions = TransportOptions()
    """ICE servers and host addresses, and the bound on each connection's set-up (``connect_timeout_s``)."""
    ordered: bool = True
    """Our leg of the published channel (to Janus) is ordered; Janus's legs to subscribers always are."""
    max_retransmits: int | None = None
    """Our leg's retransmissions (None: reliable; 0: unreliable)."""


@dataclass
class RemoteFeed:
    """Another participant as this one receives it."""

    id: int
    """Janus's feed id."""
    display: str
    """The display name its publisher gave (not authenticated, not unique)."""
    messages: int = 0
    """Data-channel messages received from it."""
    bytes: int = 0
    """Their payload bytes."""
    audio_frames: int = 0
    """Decoded audio frames the participant drained from it (none when the caller takes the voice:
    ``RoomCallbacks.connecting``)."""


def _ignore(*_: object) -> None:
    return None


def _reason(event: JsonObject) -> str:
    """A hang-up's reason as Janus gave it, escaped (it ends up in logs and on the terminal)."""
    return escaped(str(event.get("reason", "no reason given")))


@dataclass
class RoomCallbacks:
    """What the participant tells its owner, on the event loop. A callback that raises is logged, not fatal."""

    feed_joined: Callable[[RemoteFeed], None] = _ignore
    """A remote feed is connected: its messages and audio follow."""
    message: Callable[[RemoteFeed, bytes], None] = _ignore
    """A message from a feed's data channel (text arrives UTF-8 encoded)."""
    audio_frame: Callable[[RemoteFeed, AudioFrame], None] = _ignore
    """A decoded audio frame of a feed's voice (not called when ``connecting`` is given)."""
    connecting: Callable[[RemoteFeed, RTCPeerConnection], None] | None = None
    """A feed's subscription connection, made, before Janus's offer is applied (aiortc announces the feed's tracks
    then): the caller takes the feed's voice from it (``realtime.audio.reception.RemoteVoice``). None: the
    participant drains the voice itself, into ``audio_frame``."""
    feed_left: Callable[[RemoteFeed, str], None] = _ignore
    """A joined feed is gone (the reason in words); nothing more comes from it."""
    ended: Callable[[str], None] = _ignore
    """We were put out of the room without calling ``leave`` (the room was destroyed, Janus hung up our
    connection, the session to Janus was lost); call ``leave`` to release the rest."""


@dataclass
class ParticipantCounters:
    """What went through this participant."""

    messages_sent: int = 0
    """Messages handed to ``send``."""
    bytes_sent: int = 0
    """Their payload bytes."""
    messages_received: int = 0
    """Messages from every feed, those that left included."""
    bytes_received: int = 0
    """Their payload bytes."""
    subscriptions_failed: int = 0
    """Feeds announced that could not be subscribed to (logged)."""


@dataclass(eq=False)
class _Subscription:
    feed: RemoteFeed
    joined: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    handle: JanusHandle | None = None
    pc: RTCPeerConnection | None = None
    audio: MediaStreamTrack | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    """Its subscribing and audio tasks (cancelled when it is dropped)."""


class RoomParticipant:
    """One participant of a VideoRoom: ``await join()``, ``send``, ``await leave()`` (or ``async with``)."""

    def __init__(self, options: ParticipantOptions, callbacks: RoomCallbacks | None = None,
                 audio: MediaStreamTrack | None = None) -> None:
        self.options = options
        self.callbacks = callbacks or RoomCallbacks()
        self.audio = audio
        """The track published as our voice, if any."""
        self.feed_id: int | None = None
        """Our feed id in the room, once joined."""
        self.channel: RTCDataChannel | None = None
        """The published data channel, once joined."""
        self.counters = ParticipantCounters()
        self.end_reason: str | None = None
        """Why this participant is out of the room; None while it is in."""
        self.ended = asyncio.Event()
        """Set when ``end_reason`` is."""
        self._session: JanusSession | None = None
        self._private_id: int | None = None
        self._pc: RTCPeerConnection | None = None
        self._subscriptions: dict[int, _Subscription] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closers: set[asyncio.Task[None]] = set()
        self._wire_closed = [0, 0]  # bytes sent, received by connections already closed

    @property
    def feeds(self) -> dict[int, RemoteFeed]:
        """The remote feeds connected now, by feed id."""
        return {ident: sub.feed for ident, sub in self._subscriptions.items() if sub.joined}

    # -- the Channel protocol (realtime.transport), so a sender can write to the room ------------------

    @property
    def bufferedAmount(self) -> int:  # noqa: N802 (the WebRTC name)
        return 0 if self.channel is None else self.channel.bufferedAmount

    @property
    def readyState(self) -> str:  # noqa: N802
        return "connecting" if self.channel is None else self.channel.readyState

    def send(self, data: bytes) -> None:
        """Broadcast ``data`` on our data channel to every subscriber connected now."""
        if self.channel is None or self.channel.readyState != "open":
            raise CallError("not in the room: join first (or the connection to Janus is closed)")
        self.channel.send(data)
        self.counters.messages_sent += 1
        self.counters.bytes_sent += len(data)

    # -- joining and leaving ----------------------------------------------------------------------------

    async def __aenter__(self) -> RoomParticipant:
        await self.join()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.leave()

    async def join(self) -> None:
        """Create the session, the room when allowed, publish, and subscribe to the feeds already there.
        Returns once our data channel is open; on failure everything is torn down and the error raised."""
        room, transport = self.options.room, self.options.transport
        try:
            self._session = await JanusSession.create(self.options.janus, on_lost=self._end)
            publisher = await self._session.attach(VIDEOROOM, self._on_publisher_event)
            if not await ensure_room(publisher, room) and room.pin is not None:
                await require_pin(self._session, room)
            joined = await join_as_publisher(publisher, room)
            self.feed_id, self._private_id = joined.feed_id, joined.private_id
            self._pc = pc = create_peer_connection(transport)
            self.channel = pc.createDataChannel(PUBLISHER_LABEL, ordered=self.options.ordered,
                                                maxRetransmits=self.options.max_retransmits)
            if self.audio is not None:
                pc.addTrack(self.audio)
            await set_local_description(pc, await pc.createOffer(), transport)
            await pc.setRemoteDescription(await publish(publisher, pc.localDescription))
            await wait_open(self.channel, transport.connect_timeout_s)
            pc.on("connectionstatechange", self._on_publisher_state)
            for feed in joined.publishers:
                self._add_feed(feed)
        except BaseException:
            await self.leave()
            raise
        logger.info("joined room %s as feed %s (%r)", room.room, self.feed_id, room.display)

    async def leave(self) -> None:
        """Leave the room: destroy the session (Janus tells the others), close every connection, await every
        task. Idempotent."""
        self._end("left the room", notify=False)
        if self._session is not None:
            await self._session.destroy()
        for sub in list(self._subscriptions.values()):
            self._drop(sub, "we left", notify=False)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._closers, return_exceptions=True)
        if self._pc is not None:
            self._count_wire(self._pc)
            await self._pc.close()
            self._pc = None

    def _end(self, reason: str, *, notify: bool = True) -> None:
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self.ended.set()
        if notify:
            logger.warning("out of the room: %s", reason)
            self._call(self.callbacks.ended, reason)

    # -- the room's events --------------------------------------------------------------------------------

    def _on_publisher_event(self, event: JsonObject) -> None:
        kind = event.get("janus")
        if kind == "hangup":
            self._end(f"Janus hung up our connection ({_reason(event)})")
        elif kind == "event":
            try:
                data = plugin_reply(event, "event").data
            except JanusError as error:
                logger.warning("%s", error)
                return
            if data.get("videoroom") == "destroyed":
                self._end("the room was destroyed")
            for feed in feeds_in(data):
                self._add_feed(feed)
            gone = departed_feed(data)
            if gone is not None and gone in self._subscriptions:
                self._drop(self._subscriptions[gone],
                           "left the room" if "leaving" in data else "unpublished")

    def _on_publisher_state(self) -> None:
        if self._pc is not None and self._pc.connectionState == "failed":
            self._end("our connection to Janus failed")

    def _add_feed(self, feed: Feed) -> None:
        if self.end_reason is not None or feed.id == self.feed_id or feed.id in self._subscriptions:
            return
        sub = _Subscription(RemoteFeed(feed.id, feed.display))
        self._subscriptions[feed.id] = sub
        sub.tasks.append(self._spawn(self._subscribe(sub), f"subscribe to feed {feed.id}", self._tasks))

    async def _subscribe(self, sub: _Subscription) -> None:
        """Subscribe to one feed and wait until its data can flow; a failure drops this feed only."""
        assert self._session is not None
        transport = self.options.transport
        try:
            sub.handle = await self._session.attach(VIDEOROOM, lambda event: self._on_subscriber_event(sub, event))
            offer = await join_as_subscriber(sub.handle, self.options.room, sub.feed.id, self._private_id)
            sub.pc = pc = create_peer_connection(transport)
            if self.callbacks.connecting is not None:
                self._call(self.callbacks.connecting, sub.feed, pc)
            else:
                pc.on("track", lambda track: self._on_track(sub, track))
            pc.on("datachannel", lambda channel: self._listen(sub, channel))
            pc.on("connectionstatechange", lambda: self._on_subscription_state(sub))
            await pc.setRemoteDescription(offer)
            own = pc.createDataChannel(SUBSCRIBER_LABEL)
            self._listen(sub, own)
            own.on("open", lambda: self._mark_joined(sub))
            await set_local_description(pc, await pc.createAnswer(), transport)
            await start(sub.handle, pc.localDescription)
            await asyncio.wait_for(sub.ready.wait(), transport.connect_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # whatever went wrong, it costs this feed only
            expected = isinstance(error, (CallError, asyncio.TimeoutError))
            reason = str(error) or f"no data channel within {transport.connect_timeout_s:.0f} s"
            logger.warning("could not subscribe to feed %s (%r): %s", sub.feed.id, sub.feed.display, reason,
                           exc_info=not expected)
            self.counters.subscriptions_failed += 1
            self._drop(sub, reason)

    def _listen(self, sub: _Subscription, channel: RTCDataChannel) -> None:
        channel.on("message", lambda message: self._on_message(sub, message))

    def _mark_joined(self, sub: _Subscription) -> None:
        if sub.joined or self._subscriptions.get(sub.feed.id) is not sub:
            return
        sub.joined = True
        sub.ready.set()
        if sub.audio is not None:
            sub.tasks.append(self._spawn(self._receive_audio(sub, sub.audio), f"audio of feed {sub.feed.id}",
                                         self._tasks))
        self._call(self.callbacks.feed_joined, sub.feed)

    def _on_message(self, sub: _Subscription, message: bytes | str) -> None:
        self._mark_joined(sub)  # the first message may overtake our own channel's "open"
        if not sub.joined:
            return
        data = message.encode() if isinstance(message, str) else message
        sub.feed.messages += 1
        sub.feed.bytes += len(data)
        self.counters.messages_received += 1
        self.counters.bytes_received += len(data)
        self._call(self.callbacks.message, sub.feed, data)

    def _on_track(self, sub: _Subscription, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            sub.audio = track

    async def _receive_audio(self, sub: _Subscription, track: MediaStreamTrack) -> None:
        """Pull the feed's decoded voice (aiortc queues it unboundedly until someone does)."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            sub.feed.audio_frames += 1
            self._call(self.callbacks.audio_frame, sub.feed, frame)

    def _on_subscriber_event(self, sub: _Subscription, event: JsonObject) -> None:
        if event.get("janus") == "hangup":
            self._drop(sub, f"Janus hung up ({_reason(event)})")

    def _on_subscription_state(self, sub: _Subscription) -> None:
        if sub.pc is not None and sub.pc.connectionState == "failed":
            self._drop(sub, "the connection failed")

    def _drop(self, sub: _Subscription, reason: str, *, notify: bool = True) -> None:
        """Forget a feed now (callbacks stop at once), close its connection and handle in the background."""
        if self._subscriptions.get(sub.feed.id) is not sub:
            return
        del self._subscriptions[sub.feed.id]
        for task in sub.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._spawn(self._close(sub), f"close the subscription to feed {sub.feed.id}", self._closers)
        if sub.joined and notify:
            logger.info("feed %s (%r) left: %s", sub.feed.id, sub.feed.display, reason)
            self._call(self.callbacks.feed_left, sub.feed, reason)

    async def _close(self, sub: _Subscription) -> None:
        if sub.pc is not None:
            self._count_wire(sub.pc)
            await sub.pc.close()
        if sub.handle is not None and self._session is not None and self._session.lost_reason is None:
            try:
                await sub.handle.detach()
            except JanusError as error:  # the publisher's departure may have taken the handle down already
                logger.debug("detaching the subscription to feed %s: %s", sub.feed.id, error)

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _count_wire(self, pc: RTCPeerConnection) -> None:
        """Keep a connection's byte counts before closing it."""
        stats = dtls_transport_stats(pc)
        if stats is not None:
            self._wire_closed[0] += int(stats.bytesSent)
            self._wire_closed[1] += int(stats.bytesReceived)

    def wire_bytes(self) -> tuple[int, int]:
        """(sent, received) bytes of every connection of this participant, open or closed, as DTLS records: SCTP
        (messages and their acknowledgements), SRTP/SRTCP (voice) and the handshakes; that is the UDP payload
        but for ICE checks (add 28 bytes of IPv4/UDP header per packet). Connections whose counters aiortc
        does not expose count as zero."""
        sent, received = self._wire_closed
        for pc in [self._pc, *(sub.pc for sub in self._subscriptions.values())]:
            stats = dtls_transport_stats(pc) if pc is not None else None
            if stats is not None:
                sent, received = sent + int(stats.bytesSent), received + int(stats.bytesReceived)
        return sent, received

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str,
               into: set[asyncio.Task[None]]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        into.add(task)
        task.add_done_callback(into.discard)
        task.add_done_callback(self._log_failure)
        return task

    @staticmethod
    def _log_failure(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", task.get_name(), exc_info=task.exception())

    @staticmethod
    def _call(callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:  # the owner's bug must not take the room down
            logger.exception("room callback %s failed", getattr(callback, "__name__", callback))
