"""A peer connection's incoming voice: its audio track played into a sink, and the clock lip sync reads.

``RemoteVoice(pc, open_sink)`` must be made before the remote description is applied: aiortc
announces remote tracks (``track`` events) while applying it. Every remote audio track is consumed
(aiortc queues decoded frames without bound otherwise): the first one plays into the sink, with a
``SenderClock`` on its RTP receiver; any further one is drained into nothing. Each gets a jitter
buffer that skips a lost packet instead of lagging for the rest of the call (``realtime.audio.jitter``).
Usable for any peer
connection: a 1:1 call's, or a group call's subscriber connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from realtime.audio.jitter import install_catch_up
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
        self._tasks: list[asyncio.Task[PlayoutStats]] = []
        pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            logger.warning("ignoring a remote %s track: a call carries voice only", track.kind)
            return
        receiver = next((t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track), None)
        if receiver is not None:
            install_catch_up(receiver)  # a lost packet must not delay the voice for the rest of the call
        if self.playout is None and receiver is not None:
            playout = AudioPlayout(track, self.open_sink(), SenderClock(receiver))
            self.playout = playout
            self.arrived.set()
        else:
            playout = AudioPlayout(track, DiscardSink())
        self._tasks.append(asyncio.ensure_future(playout.run()))

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
        if not self._tasks:
            return
        done, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.warning("the voice playout failed: %r", task.exception())
