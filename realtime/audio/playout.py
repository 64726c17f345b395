"""The receiver's voice: play the remote audio track (speaker) or record it (WAV), and keep the playout clock.

``AudioPlayout`` takes decoded frames from aiortc's remote track (its jitter buffer and Opus decoder
run before us), mixes them to mono, fills gaps in their timestamps with silence (so a file keeps
its length and the clock its step), and writes them to an ``AudioSink``. Writes run on one thread of
their own: a speaker's write blocks until the device has room, which also paces the playout.

Lip sync reads the playout clock: for each frame written, which local instant (monotonic clock)
plays its first sample and which sender instant (``SenderClock.captured_at``) captured it. A face
captured at sender time ``C`` is then due at ``show_at(C)``, the instant its voice is heard.
"""

from __future__ import annotations

import asyncio
import logging
import time
import wave
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.audio.devices import AudioDeviceUnavailable, Device, SpeakerSink
from realtime.audio.opus import SAMPLE_RATE
from realtime.audio.sync import SenderClock

logger = logging.getLogger(__name__)


class AudioSink(Protocol):
    """Where the received voice goes: 48 kHz mono int16."""

    latency_s: float
    """From a ``write``'s return to the ear (0 for a file)."""

    def write(self, samples: np.ndarray) -> None: ...

    def close(self) -> None: ...


class WavSink:
    """The received voice as a 48 kHz mono 16-bit WAV file."""

    latency_s = 0.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = wave.open(str(path), "wb")
        self._file.setnchannels(1)
        self._file.setsampwidth(2)
        self._file.setframerate(SAMPLE_RATE)

    def write(self, samples: np.ndarray) -> None:
        self._file.writeframes(np.ascontiguousarray(samples, "<i2").tobytes())

    def close(self) -> None:
        self._file.close()


class DiscardSink:
    """No sound out (no speaker here, none asked for): the track is still drained, or aiortc's queue of
    decoded frames would grow for the whole call."""

    latency_s = 0.0

    def write(self, samples: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


def open_audio_sink(wav: Path | None = None, speaker: bool = True, device: Device = None) -> AudioSink:
    """Where the received voice goes: ``wav`` when given, else the speaker, else nowhere.

    A missing speaker is this machine's lot: one warning line saying why, and the call goes on silent.
    """
    if wav is not None:
        return WavSink(wav)
    if speaker:
        try:
            return SpeakerSink(device)
        except AudioDeviceUnavailable as exc:
            logger.warning("%s: the call goes on without sound", exc)
    return DiscardSink()


@dataclass
class PlayoutStats:
    """What the playout did."""

    frames: int = 0
    """Frames written."""
    samples: int = 0
    """Samples written, silence for gaps included."""
    gap_samples: int = 0
    """Silence written where frames were missing (lost packets)."""
    late_frames: int = 0
    """Frames dropped: their time had already been played."""
    resyncs: int = 0
    """Timestamp jumps over ``max_gap_s``, or past what the local clock allows: played on without (full) filling."""
    started_at: float | None = None
    """Local monotonic seconds when the first sample was handed to the sink (where a recording starts)."""
    delay_ms: deque[float] = field(default_factory=lambda: deque(maxlen=6000))
    """Per frame: sender capture → heard, when a sender report maps it. Sender and receiver wall clocks are
    subtracted: exact on one machine, off by their offset between two."""


@dataclass(frozen=True)
class PlayoutPoint:
    """One frame's place on both clocks."""

    heard_at: float
    """Local monotonic seconds when its first sample plays."""
    captured_at: float
    """Sender's wall clock when that sample was captured."""


class AudioPlayout:
    """Consumes a remote audio track into a sink until the track ends; the playout clock for lip sync."""

    def __init__(self, track: MediaStreamTrack, sink: AudioSink, clock: SenderClock | None = None,
                 max_gap_s: float = 1.0, max_lead_s: float = 0.5) -> None:
        self.track = track
        self.sink = sink
        self.clock = clock
        self.max_gap = int(max_gap_s * SAMPLE_RATE)
        self.max_lead_s = max_lead_s
        """How far what was written may run ahead of the local clock through filled gaps: a sender whose timestamps
        run faster than time (a jump per packet) gets no more silence than that."""
        self.stats = PlayoutStats()
        self.point: PlayoutPoint | None = None
        """The last frame written, on both clocks; None until a sender report has mapped one."""
        self._lags: deque[float] = deque(maxlen=25)
        self._next_pts: int | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audio-playout")

    async def run(self) -> PlayoutStats:
        """Play until the track ends (the peer connection closes); close the sink."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    frame = await self.track.recv()
                except MediaStreamError:
                    break
                if not isinstance(frame, av.AudioFrame):
                    continue  # a remote track carries decoded audio frames; anything else is not sound
                samples = self._placed(frame)
                if samples is None:
                    continue
                if self.stats.started_at is None:
                    self.stats.started_at = time.monotonic()
                await loop.run_in_executor(self._writer, self.sink.write, samples)
                self._note_played(frame, samples.size)
        finally:
            await loop.run_in_executor(self._writer, self.sink.close)
            self._writer.shutdown(wait=False)
        return self.stats

    def _placed(self, frame: av.AudioFrame) -> np.ndarray | None:
        """The frame as mono int16, preceded by silence for a gap; None when it comes too late to play."""
        samples = _mono_int16(frame)
        pts = int(frame.pts) if frame.pts is not None else self._next_pts or 0
        gap = 0 if self._next_pts is None else pts - self._next_pts
        if gap < 0:
            self.stats.late_frames += 1
            return None
        if gap > self.max_gap:
            self.stats.resyncs += 1
            gap = 0
        elif gap > (allowed := self._silence_allowed(samples.size)):
            self.stats.resyncs += 1
            gap = allowed
        self._next_pts = pts + samples.size
        self.stats.gap_samples += gap
        return np.concatenate([np.zeros(gap, np.int16), samples]) if gap else samples

    def _silence_allowed(self, frame_samples: int) -> int:
        """Silence that may precede a frame: what the local clock has run since the first sample was written, plus
        ``max_lead_s``, less what was written and the frame itself."""
        started = self.stats.started_at
        elapsed = 0.0 if started is None else time.monotonic() - started
        return max(int((elapsed + self.max_lead_s) * SAMPLE_RATE) - self.stats.samples - frame_samples, 0)

    def _note_played(self, frame: av.AudioFrame, written: int) -> None:
        self.stats.frames += 1
        self.stats.samples += written
        if self.clock is None or frame.pts is None:
            return
        captured = self.clock.captured_at(int(frame.pts), frame.samples)
        if captured is None:
            return
        # the write just returned: the frame's first sample plays after the sink's latency
        self.point = PlayoutPoint(heard_at=time.monotonic() + self.sink.latency_s, captured_at=captured)
        self._lags.append(self.point.heard_at - captured)
        self.stats.delay_ms.append((time.time() + self.sink.latency_s - captured) * 1000.0)

    def show_at(self, captured_at: float) -> float | None:
        """Local monotonic time at which sound captured at sender time ``captured_at`` is heard (the median lag of
        the last 25 frames played); None before the first mapped frame (show faces on arrival until then)."""
        if not self._lags:
            return None
        # the median over the last half second or so: a frame written late by a busy loop moves no face
        return captured_at + float(np.median(self._lags))


def _mono_int16(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame (aiortc's are packed s16 stereo) mixed down to mono int16."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    mono = data.mean(axis=0) if frame.format.is_planar else data.reshape(-1, channels).mean(axis=1)
    if np.issubdtype(data.dtype, np.floating):
        mono = mono * 32767.0
    return np.clip(np.rint(mono), -32768, 32767).astype(np.int16)
