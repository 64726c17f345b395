"""An established call connection and the receiver attached to it: what the one-call code (``realtime.call``)
and the two-way parts (``realtime.two_way``) share, so that neither imports the other."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiortc import RTCPeerConnection

from engines.talking_head import TalkingHead
from realtime.audio.reception import RemoteVoice
from realtime.audio.voice import OpusTrack
from realtime.lip_sync import LipSync
from realtime.receiver import Receiver, ReceiverOptions
from realtime.sctp_acks import DelayedAcks
from realtime.sinks import Sink
from realtime.transport import CallChannels

logger = logging.getLogger(__name__)


@dataclass
class Connection:
    """An established peer connection, its two open channels and its voice."""

    pc: RTCPeerConnection
    """The aiortc peer connection (``close`` it when done)."""
    channels: CallChannels
    """Motion and control channels, open."""
    voice_out: OpusTrack | None = None
    """The voice this side sends (None: a silent call)."""
    voice_in: RemoteVoice | None = None
    """The voice this side plays (None on a side that does not listen)."""
    peer_face: asyncio.Future[CallChannels] | None = None
    """On the caller: the channels the callee opens to show its own face (None: the caller does not watch)."""
    acks: DelayedAcks | None = None
    """This side's SCTP acknowledgement policy (None: aiortc's own, a SACK per packet)."""

    async def close(self) -> None:
        """Stop the voice, close the connection, and wait until the voice's playout has ended."""
        if self.voice_out is not None:
            self.voice_out.stop()
        await self.pc.close()
        if self.voice_in is not None:
            await self.voice_in.stop()


def attach_receiver(head: TalkingHead, options: ReceiverOptions, sink: Sink, connection: Connection,
                    channels: CallChannels | None = None) -> Receiver:
    """A started Receiver fed by the peer's face channels (``channels``; default: the caller's,
    ``connection.channels``); it ends when they close or the connection fails."""
    voice = connection.voice_in
    channels = channels or connection.channels
    receiver = Receiver(head, options, sink, control=channels.control,
                        lip_sync=LipSync(voice.show_at) if voice is not None else None)
    if voice is not None:
        voice.hold_for_faces(receiver.stats.sync_slack_ms, receiver.finished)
    channels.motion.on("message", receiver.on_motion)
    channels.control.on("message", receiver.on_control)
    channels.control.on("close", lambda: receiver.finish("the sender's control channel closed"))
    pc = connection.pc

    @pc.on("connectionstatechange")
    def on_connection_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            if not receiver.finished.is_set():
                logger.warning("the connection to the sender is %s", pc.connectionState)
            receiver.finish(f"the connection to the sender is {pc.connectionState}")

    receiver.start()
    return receiver
