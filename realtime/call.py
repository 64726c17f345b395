"""A call from one side: connect through signaling, wire the channels to a Sender or Receiver, run.

``connect_as_sender`` / ``connect_as_receiver`` give an open connection whatever the signaling; the caller
(sender) may also hear the callee and watch its face, the callee (receiver) may answer with its own face and
voice on the same connection (``realtime.two_way``; a two-way call);
``run_sender`` / ``run_receiver`` are what ``adasr send`` and ``adasr receive`` run (over TCP
signaling; the HTTP ``/offer`` server of ``realtime.http_signaling`` runs ``serve_connection`` once per
accepted offer). The demo uses the same pieces with both peers in one process.

A call ends on the receiving side for the first of: the sender's GOODBYE, its control channel
closing, the peer connection failing or closing, the receiver's peer timeout (a vanished sender),
a closed preview window. ``ReceiverStats.end_reason`` says which.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection

from engines.talking_head import TalkingHead
from realtime.audio.playout import AudioSink, DiscardSink
from realtime.audio.reception import RemoteVoice
from realtime.audio.voice import VoiceOptions, open_voice
from realtime.errors import CallError
from realtime.http_signaling import OfferServer, OfferServerOptions
from realtime.ice import selected_candidate_pair
from realtime.messages import GoodbyeReason
from realtime.receiver import Receiver, ReceiverOptions, ReceiverStats
from realtime.sender import Sender, SenderOptions, SenderStats
from realtime.sctp_acks import delay_acks
from realtime.signaling import Signaling, answer, offer
from realtime.sinks import BorrowedSink, Sink
from realtime.stats import WireOverhead
from realtime.wire_meter import WireMeter, wire_figures
from realtime.connection import Connection, attach_receiver
from realtime.two_way import FaceReply, PeerFace
from realtime.transport import (CallChannels, TransportOptions, accept_channels, create_channels,
                                create_peer_connection, dtls_cipher, listen_channels, wait_open)

logger = logging.getLogger(__name__)


async def _open_or_close(pc: RTCPeerConnection, negotiate: Coroutine[Any, Any, CallChannels],
                         timeout_s: float) -> Connection:
    """Run the offer/answer exchange, then wait until both channels are open; close ``pc`` on any failure."""
    try:
        channels = await negotiate
        acks = delay_acks(pc.sctp)  # before any MOTION flows: a two-way call's SACKs would cost ~20 kbps each way
        for channel in (channels.control, channels.motion):
            await wait_open(channel, timeout_s)
    except BaseException:
        await pc.close()
        raise
    return Connection(pc, channels, acks=acks)


async def connect_as_sender(signaling: Signaling, transport: TransportOptions,
                            voice: VoiceOptions | None = None, *, audio_sink: Callable[[], AudioSink] | None = None,
                            watch_face: bool = False) -> Connection:
    """Offerer: add the voice track (``voice``: a file, the microphone; None or no microphone here: silent),
    create the channels, exchange offer and answer, wait until both channels are open.

    ``audio_sink``: the callee's voice, if it answers with one, plays into ``audio_sink()`` (None: not heard);
    ``watch_face``: ``peer_face`` gets the channels the callee opens for its own face."""
    pc = create_peer_connection(transport)
    track = open_voice(voice) if voice is not None else None
    voice_in = RemoteVoice(pc, audio_sink) if audio_sink is not None else None  # before the answer is applied
    # before the offer, which must carry the audio m-line: sendrecv when the callee's voice is wanted
    if track is not None:
        pc.addTransceiver(track, direction="sendrecv" if voice_in is not None else "sendonly")
    elif voice_in is not None:
        pc.addTransceiver("audio", direction="recvonly")
    # the callee may open its face's channels as soon as it is connected; a caller that does not watch refuses them
    peer_face = listen_channels(pc) if watch_face else None
    if peer_face is None:
        pc.on("datachannel", lambda channel: channel.close())

    async def negotiate() -> CallChannels:
        channels = create_channels(pc)
        await offer(pc, signaling, transport)
        return channels

    try:
        connection = await _open_or_close(pc, negotiate(), transport.connect_timeout_s)
    except BaseException:
        if track is not None:
            track.stop()
        if voice_in is not None:
            await voice_in.stop()
        raise
    connection.voice_out, connection.voice_in, connection.peer_face = track, voice_in, peer_face
    return connection


async def connect_as_receiver(signaling: Signaling, transport: TransportOptions,
                              audio_sink: Callable[[], AudioSink] = DiscardSink,
                              voice: VoiceOptions | None = None) -> Connection:
    """Answerer: answer the offer and wait for the sender's two channels; the sender's voice, if any, plays
    into ``audio_sink()`` (opened when it arrives; by default nowhere, but always consumed). ``voice``: this
    side's own voice back to the caller (a two-way call), when the caller's offer takes one."""
    pc = create_peer_connection(transport)
    heard = RemoteVoice(pc, audio_sink)  # before the offer is applied: that is when aiortc announces the track
    track = open_voice(voice) if voice is not None else None

    def add_voice() -> None:  # onto the offer's audio transceiver, before the answer is made
        if track is None:
            return
        # aiortc's private record of what the offer allows this side (its direction reversed); None: unknown, try
        if not any(t.kind == "audio" and getattr(t, "_offerDirection", "sendrecv") in ("sendrecv", "sendonly")
                   for t in pc.getTransceivers()):
            logger.warning("the caller does not take a voice back: this side's voice is not sent")
            track.stop()
            return
        pc.addTrack(track)

    async def negotiate() -> CallChannels:
        incoming = asyncio.ensure_future(accept_channels(pc, transport.connect_timeout_s))
        try:
            await answer(pc, signaling, transport, before_answer=add_voice)
            return await incoming
        finally:
            incoming.cancel()

    try:
        connection = await _open_or_close(pc, negotiate(), transport.connect_timeout_s)
    except BaseException:
        if track is not None:
            track.stop()
        await heard.stop()
        raise
    connection.voice_in = heard
    connection.voice_out = track if track is not None and track.readyState == "live" else None
    return connection


def attach_sender(head: TalkingHead, options: SenderOptions, connection: Connection, **kwargs: object) -> Sender:
    """A Sender on this connection's channels, listening to the receiver's control messages."""
    sender = Sender(head, options, connection.channels.motion, connection.channels.control, **kwargs)  # type: ignore[arg-type]
    connection.channels.control.on("message", sender.on_control)
    return sender


#: A console command: (what it does, for the help line; the action, called on the event loop).
Command = tuple[str, Callable[[], None]]


def watch_console(commands: Mapping[str, Command]) -> bool:
    """Run ``commands[line]`` for each line typed on stdin (a letter + Enter); unknown lines print the help.

    Only when stdin is a terminal; returns whether the commands are active. Stop with
    ``unwatch_console``.
    """
    if not sys.stdin or not sys.stdin.isatty():
        return False
    loop = asyncio.get_running_loop()
    usage = "commands: " + ", ".join(f"{key} ({what})" for key, (what, _) in commands.items())

    def on_line() -> None:
        line = sys.stdin.readline()
        if not line:
            loop.remove_reader(sys.stdin)
            return
        command = commands.get(line.strip().lower())
        if command is not None:
            command[1]()
        elif line.strip():
            print(usage, file=sys.stderr)

    try:
        loop.add_reader(sys.stdin, on_line)
    except (NotImplementedError, ValueError, OSError):  # e.g. the Windows proactor loop
        return False
    return True


def unwatch_console() -> None:
    """Stop reading console commands (after ``watch_console`` returned True)."""
    asyncio.get_running_loop().remove_reader(sys.stdin)


@dataclass(frozen=True)
class Watching:
    """What the caller does with the callee's face and voice on a two-way call."""

    sink: Sink
    """Where the callee's face is rendered (closed at the end of the call)."""
    options: ReceiverOptions = ReceiverOptions()
    """How it is rendered."""
    audio_sink: Callable[[], AudioSink] = DiscardSink
    """Where the callee's voice plays (opened when it arrives)."""


async def run_sender(head: TalkingHead, options: SenderOptions, signaling: Signaling,
                     transport: TransportOptions, *, voice: VoiceOptions | None = None,
                     console: bool = True, watching: Watching | None = None) -> SenderStats:
    """The whole sending side of a call: connect (with ``voice``), upload the source, stream motion, hang up;
    the stats say which ICE path it took and what the stream cost on the wire. ``watching``: also hear the callee
    and render its face, if it shows one (``SenderStats.peer_face``)."""
    connection = await connect_as_sender(signaling, transport, voice, watch_face=watching is not None,
                                         audio_sink=watching.audio_sink if watching is not None else None)
    pair = selected_candidate_pair(connection.pc)
    meter = WireMeter(connection.pc)
    sender = attach_sender(head, options, connection)
    peer_face = PeerFace(head, watching.options, watching.sink, connection) if watching is not None else None
    commands = console and watch_console({"r": ("reset the reference pose", sender.request_reset),
                                          "q": ("hang up", sender.stop)})
    if commands:
        print("connected: type r + Enter to reset the reference pose, q + Enter to hang up", file=sys.stderr)
    try:
        await sender.send_source()
        before, start = meter.read(), time.perf_counter()
        stats = await sender.stream()
        after, stream_s = meter.read(), time.perf_counter() - start
        stats.ice_pair_type = pair.kind if pair is not None else None
        if before is not None and after is not None:
            message = WireOverhead(cipher=dtls_cipher(connection.pc) or "unknown").per_message(
                round(stats.motion_bytes / max(stats.frames_sent, 1)))
            stats.wire = wire_figures(after - before, stream_s, stats.frames_sent, message)
        await sender.goodbye()
        await sender.wait_answer()  # the receiver's final counters, or the sign that it vanished
        return stats
    except asyncio.CancelledError:
        await sender.goodbye(GoodbyeReason.NORMAL, "sender interrupted")
        raise
    finally:
        if commands:
            unwatch_console()
        await sender.close()
        if peer_face is not None:
            sender.stats.peer_face = await peer_face.stop()
        await connection.close()
        await signaling.close()


@dataclass(frozen=True)
class Answering:
    """What the callee shows and says back to each caller (a two-way call); nothing by default (one-way)."""

    face: SenderOptions | None = None
    """This side's portrait and camera (None: the caller sees no face)."""
    voice: VoiceOptions | None = None
    """This side's voice (None: the caller hears nothing)."""


#: Called with the live Receiver when a call starts (status displays, the soak benchmark, tests).
ReceiverHook = Callable[[Receiver], None]


async def serve_connection(head: TalkingHead, options: ReceiverOptions, sink: Sink, connection: Connection,
                           on_receiver: ReceiverHook | None = None, own_face: SenderOptions | None = None,
                           ) -> ReceiverStats:
    """Receive one call on an open connection until it ends (see the module docstring), then close it and the sink.
    ``own_face``: show this side's face to the caller too (a two-way call; ``ReceiverStats.own_face``)."""
    receiver = attach_receiver(head, options, sink, connection)
    if connection.voice_in is not None:  # the live playout counters (the voice arrived with the offer)
        receiver.stats.voice = connection.voice_in.stats
    reply = FaceReply(head, own_face, connection, 10.0) if own_face is not None else None
    pair = selected_candidate_pair(connection.pc)
    receiver.stats.ice_pair_type = pair.kind if pair is not None else None
    if on_receiver is not None:
        on_receiver(receiver)
    try:
        await receiver.finished.wait()
        logger.info("call ended: %s", receiver.stats.end_reason)
        await receiver.drain()
        receiver.send_stats()  # the final counters, for the sender's summary
        # GOODBYE after them always: the answer to the sender's (its summary takes the STATS before it as final),
        # or we hang up (window closed, channel gone)
        receiver.goodbye(text="" if receiver.stats.goodbye is not None else "the receiver hung up")
        await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        receiver.goodbye(text="receiver interrupted")
        raise
    finally:
        own = await reply.hang_up() if reply is not None else None
        stats = await receiver.stop()
        await connection.close()
        stats.voice = connection.voice_in.stats if connection.voice_in is not None else None
        stats.own_face = own
    return stats


async def serve_calls(head: TalkingHead, options: ReceiverOptions, sink: Sink, server: OfferServerOptions,
                      transport: TransportOptions, *, max_calls: int = 0,
                      on_ready: Callable[[OfferServer], None] | None = None,
                      on_receiver: ReceiverHook | None = None,
                      on_call_end: Callable[[ReceiverStats], None] | None = None,
                      audio_sink: Callable[[], AudioSink] = DiscardSink,
                      answering: Answering | None = None) -> list[ReceiverStats]:
    """``adasr receive``: answer offers on ``POST /offer`` (token, one call at a time), one call after another.

    Every call renders to the same ``sink`` (lent to it, closed here at the end), so a virtual camera
    stays open between calls (the caller's voice goes to a new ``audio_sink()`` per call); run it in a
    ``ThreadedSink`` so the calls' render threads never touch a window or a device directly. A call that ends for
    any reason, a vanished sender included, frees the endpoint for the next. Runs until ``max_calls`` calls have
    ended (0: until cancelled). ``answering``: each caller also sees this side's face and hears its voice.
    """
    results: list[ReceiverStats] = []
    enough = asyncio.Event()

    async def handle(signaling: Signaling) -> None:
        answer = answering or Answering()
        connection = await connect_as_receiver(signaling, transport, audio_sink, answer.voice)
        stats = await serve_connection(head, options, BorrowedSink(sink), connection, on_receiver, answer.face)
        results.append(stats)
        if on_call_end is not None:
            on_call_end(stats)
        if max_calls and len(results) >= max_calls:
            enough.set()

    offers = OfferServer(handle, server)
    await offers.start()
    try:
        if on_ready is not None:
            on_ready(offers)
        await enough.wait()
    finally:
        await offers.stop()
        await asyncio.get_running_loop().run_in_executor(None, sink.close)
    return results


async def run_receiver(head: TalkingHead, options: ReceiverOptions, sink: Sink, signaling: Signaling,
                       transport: TransportOptions, audio_sink: Callable[[], AudioSink] = DiscardSink,
                       answering: Answering | None = None) -> ReceiverStats:
    """The whole receiving side of a call: connect, render until the call ends (the voice into ``audio_sink()``),
    close the sink; ``answering``: the caller sees this side's face and hears its voice too."""
    answer = answering or Answering()
    try:
        connection = await connect_as_receiver(signaling, transport, audio_sink, answer.voice)
        stats = await serve_connection(head, options, sink, connection, own_face=answer.face)
    finally:
        await signaling.close()
    if stats.sources_accepted == 0 and stats.source_errors:
        raise CallError(f"no usable source state was received: {stats.last_source_error}")
    return stats
