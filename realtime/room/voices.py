"""Every other participant's voice in a group call: each through its own adaptive jitter buffer, all in one mix.

Each feed's subscription connection gets the 1:1 call's ``RemoteVoice`` before Janus's offer is
applied (``RoomCallbacks.connecting``): the adaptive jitter buffer (FEC, PLC, a delay that follows
the jitter), the playout clock the feed's face is held against (lip sync), and the hold that delays
the voice for its face. Each voice's playout writes into its own input of the room's one
``VoiceMixer``, which plays their sum on the speaker or into the WAV file. A feed out of the grid
for its silence is muted in the mix until it speaks again; one that left is dropped from it at once
(its playout ends when the participant closes its connection).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiortc import RTCPeerConnection

from realtime.audio.mixer import MixerInput, VoiceMixer
from realtime.audio.opus import SAMPLE_RATE
from realtime.audio.playout import AudioSink
from realtime.audio.reception import RemoteVoice
from realtime.janus.participant import RemoteFeed
from realtime.stats import percentile

logger = logging.getLogger(__name__)


class FeedVoice:
    """One feed's voice: its ``RemoteVoice`` (jitter buffer, playout, lip-sync clock) and its input into the mix."""

    def __init__(self, pc: RTCPeerConnection, name: str, mixer: VoiceMixer) -> None:
        self.name = name
        self.mixer = mixer
        self.input: MixerInput | None = None
        """Its input into the mix, once its audio track arrived."""
        self.muted = False
        self.remote = RemoteVoice(pc, self._open_input)

    def _open_input(self) -> AudioSink:
        voice = self.input = self.mixer.input(self.name)
        voice.mute(self.muted)
        return voice

    def mute(self, muted: bool) -> None:
        """Out of the mix (what it plays meanwhile is dropped), or back in."""
        self.muted = muted
        if self.input is not None:
            self.input.mute(muted)

    def report(self) -> dict[str, Any]:
        """What was heard of it: frames and milliseconds played and mixed, mouth-to-ear delay (sender capture → out
        of the mix, both wall clocks: exact on one machine), and what its jitter buffer did."""
        playout, jitter, mixed = self.remote.stats, self.remote.jitter, self.input
        delays = list(playout.delay_ms) if playout is not None else []
        report: dict[str, Any] = {
            "frames": playout.frames if playout is not None else 0,
            "ms_played": playout.samples / SAMPLE_RATE * 1e3 if playout is not None else 0.0,
            "ms_mixed": mixed.counters.samples_mixed / SAMPLE_RATE * 1e3 if mixed is not None else 0.0,
            "delay_ms_p50": percentile(delays, 50), "delay_ms_p95": percentile(delays, 95),
            "muted": self.muted,
            "late_writes": mixed.counters.late_writes if mixed is not None else 0,
            "trims": mixed.counters.trims if mixed is not None else 0}
        if jitter is not None:
            s = jitter.stats
            report.update({"packets": s.packets, "lost": s.recovered + s.concealed, "recovered": s.recovered,
                           "concealed": s.concealed, "late": s.late, "jitter_target_ms": s.target_ms,
                           "lip_sync_delay_ms": jitter.lip_sync_delay_s * 1e3})
        return report


class RoomVoices:
    """The feeds' voices by feed id, and their mix (``connecting`` is the participant's callback)."""

    def __init__(self, mixer: VoiceMixer) -> None:
        self.mixer = mixer
        self.voices: dict[int, FeedVoice] = {}
        """Per feed whose subscription connection was made and that has not left."""
        self._stopping: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """The mix starts (a WAV file's first sample is now)."""
        self.mixer.start()

    def connecting(self, feed: RemoteFeed, pc: RTCPeerConnection) -> None:
        """A subscription connection to ``feed`` was made: its voice will play through it."""
        self.drop(feed.id)  # a feed subscribed again: the old connection's voice is gone
        self.voices[feed.id] = FeedVoice(pc, f"{feed.display}#{feed.id}", self.mixer)

    def mute(self, feed: int, muted: bool) -> None:
        voice = self.voices.get(feed)
        if voice is not None:
            voice.mute(muted)

    def drop(self, feed: int) -> None:
        """The feed left: out of the mix now; its playout ends with its connection."""
        voice = self.voices.pop(feed, None)
        if voice is None:
            return
        voice.mute(True)
        if voice.input is not None:
            voice.input.close()
        task = asyncio.ensure_future(voice.remote.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def keep_only(self, feeds: set[int]) -> None:
        """Forget the voices of subscriptions that never joined (the participant gave them up)."""
        for feed in [f for f, voice in self.voices.items()
                     if f not in feeds and voice.remote.pc.connectionState == "closed"]:
            self.drop(feed)

    def report(self) -> dict[str, Any]:
        """The mix as a whole; ``started_unix``: the wall clock at its first sample (sample ``p`` is that plus
        ``p / 48000`` s, and leaves the mix at most ``tick_s + delay_s`` later)."""
        mixer = self.mixer
        started = None if mixer.started_at is None else time.time() - (time.monotonic() - mixer.started_at)
        return {"inputs": len(mixer.inputs), "ms_written": mixer.mixed / SAMPLE_RATE * 1e3,
                "late_steps": mixer.late_ticks, "started_unix": started}

    async def stop(self) -> None:
        """After the connections closed: every playout ended, then the mix (which closes its sink)."""
        for feed in list(self.voices):
            self.drop(feed)
        await asyncio.gather(*self._stopping, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self.mixer.close)
