"""The second direction of a two-way call: the callee's face, sent by the callee and watched by the caller.

A 1:1 call is one peer connection. The caller opens its pair of channels (motion, control) before the
offer and sends its face on them; a callee that shows its face opens a pair of its own once connected
and sends on those (realtime/PROTOCOL.md, "Two-way calls"). Each direction is an ordinary Sender and
Receiver with their own control link, so everything a one-way call does (source upload, CLOCK and lip
sync, STATS, GOODBYE, the peer watches) holds both ways. Voices travel on the one audio transceiver,
sendrecv.

``FaceReply`` runs on the callee; ``PeerFace`` on the caller. The call ends as a one-way call does: when
the caller hangs up or the callee's receiver ends; the callee's face then says GOODBYE on its own channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from engines.talking_head import TalkingHead
from realtime.connection import Connection, attach_receiver
from realtime.receiver import Receiver, ReceiverOptions, ReceiverStats
from realtime.sender import Sender, SenderOptions, SenderStats
from realtime.sinks import Sink
from realtime.transport import create_channels, wait_open


logger = logging.getLogger(__name__)


class FaceReply:
    """The callee's own face back to the caller: a Sender on the pair of channels the callee opens."""

    def __init__(self, head: TalkingHead, options: SenderOptions, connection: Connection, timeout_s: float) -> None:
        self.head = head
        self.options = options
        self.connection = connection
        self.timeout_s = timeout_s
        self.sender: Sender | None = None
        """The callee's Sender, once its channels are open."""
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> SenderStats:
        channels = create_channels(self.connection.pc)
        for channel in (channels.control, channels.motion):
            await wait_open(channel, self.timeout_s)
        sender = self.sender = Sender(self.head, self.options, channels.motion, channels.control)
        channels.control.on("message", sender.on_control)
        await sender.send_source()
        return await sender.stream()

    async def hang_up(self) -> SenderStats | None:
        """Stop streaming, say GOODBYE on this face's channel and release the Sender; its stats (None: the face
        never started, e.g. its channels did not open)."""
        sender = self.sender
        if sender is not None:
            sender.stop()
        else:
            self._task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.timeout_s)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 (the call is ending: a failed reply face is reported, not raised)
            logger.warning("this side's face could not be sent: %s", exc)
        if sender is None:
            return None
        await sender.goodbye()
        await sender.close()
        return sender.stats


class PeerFace:
    """On the caller: the callee's face, rendered into ``sink`` once the callee opens its channels."""

    def __init__(self, head: TalkingHead, options: ReceiverOptions, sink: Sink, connection: Connection) -> None:
        self.head = head
        self.options = options
        self.sink = sink
        self.connection = connection
        self.receiver: Receiver | None = None
        """The Receiver of the callee's face (None until its channels arrived)."""
        self.arrived = asyncio.Event()
        """Set when the callee's channels arrived (a one-way callee never opens them)."""
        self._task = asyncio.ensure_future(self._attach())

    async def _attach(self) -> None:
        assert self.connection.peer_face is not None, "connect with watch_face=True"
        channels = await self.connection.peer_face
        self.receiver = attach_receiver(self.head, self.options, self.sink, self.connection, channels)
        self.arrived.set()

    async def source_ready(self) -> None:
        """Wait until the callee's face has arrived and its source state is installed."""
        await self.arrived.wait()
        assert self.receiver is not None
        await self.receiver.source_ready.wait()

    async def stop(self, timeout_s: float = 5.0) -> ReceiverStats | None:
        """After the caller hung up: wait (up to ``timeout_s``) for the callee's face to say GOODBYE, answer it,
        stop rendering and close the sink; its stats (None: the callee never showed a face)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        receiver = self.receiver
        if receiver is None:
            await asyncio.get_running_loop().run_in_executor(None, self.sink.close)
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(receiver.finished.wait(), timeout_s)
        await receiver.drain()
        receiver.send_stats()
        receiver.goodbye(text="" if receiver.stats.goodbye is not None else "the caller hung up")
        stats = await receiver.stop()
        voice = self.connection.voice_in
        stats.voice = voice.stats if voice is not None else None
        return stats
