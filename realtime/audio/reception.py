"""A peer connection's incoming voice: its audio track played into a sink, and the clock lip sync reads.

``RemoteVoice(pc, open_sink)`` must be made before the remote description is applied: aiortc
announces remote tracks (``track`` events) while applying it. Every remote audio track is consumed
(aiortc queues decoded frames without bound otherwise): the first one plays into the sink, with a
``SenderClock`` on its RTP receiver; any further one is drained into nothing. Each plays through the
adaptive jitter buffer (``realtime.audio.adaptive_voice``: a delay that follows the measured jitter,
lost packets recovered from FEC or concealed), not aiortc's fixed four packets.
Usable for any peer
connection: a 1:1 call's, or a group call's subscriber connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from realtime.audio.adaptive_voice import AdaptiveVoice
from realtime.audio.lip_sync_hold import hold_for_faces
from realtime.audio.playout import AudioPlayout, AudioSink, DiscardSink, PlayoutStats
from realtime.audio.sync import SenderClock

logger = logging.getLogger(__name__)


class RemoteVoice:
    """Plays ``pc``'s remote voice into ``open_sink()`` (opened when the track arrives) until the track ends."""

    def __init__(self, pc: RTCPeerConnection, open_sink: Callable[[], AudioSink]) -> None:
        self.pc = pc
        self.open_sink = open_sink
        self.playout: AudioPlayout | None = None
        """The voice's playout (None until the sender's audio track arrived)."""
        self.arrived = asyncio.Event()
        """Set when the first audio track arrived."""
        self.jitter: AdaptiveVoice | None = None
        self._hold: asyncio.Task[None] | None = None
        """The played voice's adaptive jitter buffer (its ``stats``: losses recovered, concealed, late)."""
        self._tasks: list[asyncio.Task[PlayoutStats]] = []
        pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            logger.warning("ignoring a remote %s track: a call carries voice only", track.kind)
            return
        receiver = next((t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track), None)
        voice = AdaptiveVoice.attach(receiver, track) if receiver is not None else None
        played: MediaStreamTrack = voice or track
        if self.playout is None and receiver is not None:
            clock = SenderClock(receiver, rtp_of=voice.rtp_of if voice is not None else None)
            playout = AudioPlayout(played, self.open_sink(), clock)
            self.playout, self.jitter = playout, voice
            self.arrived.set()
        else:
            playout = AudioPlayout(played, DiscardSink())
        self._tasks.append(asyncio.ensure_future(playout.run()))

    def hold_for_faces(self, slack_ms: list[float], until: asyncio.Event) -> None:
        """Let the faces' slack (``ReceiverStats.sync_slack_ms``) delay the voice until ``until`` is set, so that
        each face can show with its voice (``realtime.audio.lip_sync_hold``); nothing without the adaptive buffer."""
        if self.jitter is not None:
            self._hold = asyncio.ensure_future(hold_for_faces(self.jitter, slack_ms, until))

    def show_at(self, captured_at: float) -> float | None:
        """Local monotonic seconds when the voice captured at sender wall time ``captured_at`` is heard (None:
        no voice, or no sender report yet)."""
        return None if self.playout is None else self.playout.show_at(captured_at)

    @property
    def stats(self) -> PlayoutStats | None:
        """What the playout did (None: no voice arrived)."""
        return None if self.playout is None else self.playout.stats

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Wait for the playouts to end (the tracks end when ``pc`` closes) and their sinks to close; cancel them
        after ``timeout_s``."""
        if self._hold is not None:
            self._hold.cancel()
        if not self._tasks:
            return
        done, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.warning("the voice playout failed: %r", task.exception())
