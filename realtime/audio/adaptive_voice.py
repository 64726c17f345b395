"""The received voice through an adaptive jitter buffer, with Opus loss concealment and FEC.

aiortc's audio path holds a fixed 4 packets (160 ms at 40 ms packets) and decodes through FFmpeg,
which can neither conceal a lost packet nor use the FEC copy of it inside the next one. Here a
``PacketTap`` takes the place of aiortc's jitter buffer in the RTP receiver and hands every packet to
``AdaptiveVoice``, an audio track of its own that plays each packet when its RTP time, plus a delay
that follows the measured jitter (``realtime.audio.jitter_target``), comes round on the local clock:

* a packet there in time is decoded (libopus, ``realtime.audio.opus_decoder``);
* a missing one is recovered from the next packet's FEC when that is already here, else concealed
  (Opus PLC); a packet that arrives after its turn is counted late and dropped;
* when the delay is shorter than the target (packets come late, or the faces need the voice later:
  ``lip_sync_delay_s``), a concealed packet is inserted where one is missing or after a quiet one (within
  unbroken speech only after ``shrink_after_s``): the delay grows by a packet, smoothly (PLC continues
  the sound);
* when the delay is over the target by more than half a packet, one quiet packet is left out (not
  heard); within unbroken speech only after ``shrink_after_s``, the next packet crossfaded in over 5 ms
  so that the cut leaves no click.

The frames it returns are numbered contiguously in samples played (``pts``), as a sink plays them;
``rtp_of`` maps that number back to the sender's RTP time for lip sync (``SenderClock``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.audio.jitter_target import DEFAULT_JITTER, JitterOptions, JitterTarget
from realtime.audio.opus import SAMPLE_RATE
from realtime.audio.opus_decoder import OpusDecoder
from realtime.audio.sync import rtp_difference

logger = logging.getLogger(__name__)

#: Opus's longest packet (120 ms at 48 kHz): the decoder's output bound.
_MAX_PACKET_SAMPLES = 5760
#: RMS under which a packet counts as quiet (about −40 dBFS): leaving it out is not heard.
_QUIET_RMS = 330.0
#: Crossfade where a packet is left out (5 ms).
_FADE_SAMPLES = 240
#: Packets held at most (a flood cannot grow memory).
_MAX_HELD = 64
#: A timestamp jump beyond this restarts the playout on the new timeline (a sender that paused or restarted).
_RESYNC_S = 1.0


@dataclass
class JitterStats:
    """What the adaptive jitter buffer did."""

    packets: int = 0
    """Packets received."""
    late: int = 0
    """Packets that arrived after their turn (dropped)."""
    duplicates: int = 0
    """Packets received twice (dropped)."""
    decoded: int = 0
    """Packets played as received."""
    recovered: int = 0
    """Lost packets recovered from the next one's FEC (it carried a copy: from 16 kbps)."""
    concealed: int = 0
    """Lost packets concealed (Opus PLC)."""
    stretched: int = 0
    """Concealed packets inserted to lengthen the delay."""
    shrunk: int = 0
    """Packets left out to shorten the delay."""
    resyncs: int = 0
    """Timeline restarts (a timestamp jump over a second)."""
    target_ms: float = 0.0
    """The latest target delay past the fastest transit."""


class PacketTap(JitterBuffer):
    """aiortc's audio jitter buffer replaced: every packet goes to ``voice``, no frame to aiortc's own decoder."""

    def __init__(self, voice: AdaptiveVoice) -> None:
        super().__init__(capacity=16)
        self.voice = voice

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        self.voice.arrived(packet.timestamp, bytes(getattr(packet, "_data", b"")), time.monotonic())
        return False, None


class AdaptiveVoice(MediaStreamTrack):
    """A remote voice played through the adaptive jitter buffer (see the module docstring)."""

    kind = "audio"

    def __init__(self, remote: MediaStreamTrack, options: JitterOptions = DEFAULT_JITTER) -> None:
        super().__init__()
        self.remote = remote
        """aiortc's remote track: it ends when the connection closes, and so does this one."""
        self.options = options
        self.stats = JitterStats()
        self.target = JitterTarget(options)
        self._decoder = OpusDecoder()
        self._held: dict[int, bytes] = {}
        self._origin: int | None = None  # first RTP timestamp: extended times count from it
        self._last: tuple[int, int] | None = None  # (RTP timestamp, extended) of the newest packet
        self._next: int | None = None  # extended time of the next packet to play
        self._offset = 0.0  # local monotonic time of extended time 0 at playout
        self._frame = 960
        self._played = 0  # samples returned: the pts of the next frame
        self._rtp_of: deque[tuple[int, int]] = deque(maxlen=256)  # (pts, RTP timestamp) of recent frames
        self._over_since: float | None = None
        self._under_since: float | None = None
        self._last_quiet = True
        self._fade_from: np.ndarray | None = None
        self.lip_sync_delay_s = 0.0
        """Extra delay the faces need to show with the voice (``realtime.audio.lip_sync_hold`` sets it)."""
        self._arrival = asyncio.Event()
        self._ended = asyncio.Event()
        self._watch = asyncio.ensure_future(self._watch_remote())

    @classmethod
    def attach(cls, receiver: RTCRtpReceiver, remote: MediaStreamTrack,
               options: JitterOptions = DEFAULT_JITTER) -> AdaptiveVoice | None:
        """An AdaptiveVoice fed by ``receiver`` (before its first packet); None where aiortc's private jitter
        buffer is not where it used to be (the remote track then plays as aiortc decodes it)."""
        name = "_RTCRtpReceiver__jitter_buffer"
        if not isinstance(getattr(receiver, name, None), JitterBuffer):
            logger.warning("aiortc's jitter buffer is not where it used to be: the voice keeps aiortc's fixed delay")
            return None
        voice = cls(remote, options)
        setattr(receiver, name, PacketTap(voice))
        return voice

    async def _watch_remote(self) -> None:
        """aiortc ends the remote track (a None in its queue) when the connection closes; nothing else comes."""
        try:
            while True:
                await self.remote.recv()
        except MediaStreamError:
            pass
        finally:
            self._ended.set()

    # ---- arrivals (on the loop, from the RTP receiver) ---------------------------------------

    def arrived(self, rtp_timestamp: int, payload: bytes, arrival_s: float) -> None:
        """One RTP packet of the voice."""
        self.stats.packets += 1
        if self._last is None:
            self._origin, extended = rtp_timestamp, 0
        else:
            extended = self._last[1] + rtp_difference(rtp_timestamp, self._last[0])
        if self._last is None or extended > self._last[1]:
            self._last = (rtp_timestamp, extended)
        self.target.arrived(extended, arrival_s)
        if self._next is None or extended - self._next > _RESYNC_S * SAMPLE_RATE:
            self._restart(extended, arrival_s)
        if extended < self._next:  # type: ignore[operator]
            self.stats.late += 1
            return
        if extended in self._held:
            self.stats.duplicates += 1
            return
        self._held[extended] = payload
        if len(self._held) > _MAX_HELD:
            del self._held[min(self._held)]
        self._arrival.set()

    def _restart(self, extended: int, arrival_s: float) -> None:
        """Start (or restart) the playout at this packet, one target delay from now."""
        if self._next is not None:
            self.stats.resyncs += 1
            self._held.clear()
        self._next = extended
        self._offset = arrival_s - extended / SAMPLE_RATE + self.target.target_s(self._frame / SAMPLE_RATE)

    # ---- playout (the consumer's recv) -------------------------------------------------------

    async def recv(self) -> av.AudioFrame:
        """The next frame, when it is due: decoded, recovered or concealed."""
        while True:
            if self._ended.is_set() or self.readyState != "live":
                raise MediaStreamError
            if self._next is None:
                self._arrival.clear()
                await _first(self._arrival.wait(), self._ended.wait())
                continue
            wait_s = self._offset + self._next / SAMPLE_RATE - time.monotonic()
            if wait_s > 0:
                await _first(asyncio.sleep(wait_s), self._ended.wait())
                continue
            frame = self._play_next()
            if frame is not None:
                return frame

    def _play_next(self) -> av.AudioFrame | None:
        """The packet whose turn it is, as a frame; None when it was left out to shorten the delay, or the voice
        paused (nothing arrived for two packets past it: the next packet restarts the playout)."""
        assert self._next is not None
        now, ts, packet_s = time.monotonic(), self._next, self._frame / SAMPLE_RATE
        fastest = self.target.fastest_transit_s
        target = self.target.target_s(packet_s) + self.lip_sync_delay_s
        self.stats.target_ms = target * 1e3
        excess = self._offset - (fastest + target) if fastest is not None else 0.0
        assert self._last is not None
        if ts not in self._held and self._last[1] + 2 * self._frame < ts:  # the voice paused (or ended): wait for it
            self._next = None
            return None
        if excess < -packet_s / 2 and self._may_stretch(ts in self._held, now):  # too short a delay: lengthen it
            self._offset += packet_s
            self.stats.stretched += 1
            return self._emit(self._decoder.conceal(self._frame), ts)
        if excess >= -packet_s / 2:
            self._under_since = None
        samples = self._take(ts)
        self._next = ts + samples.size
        if excess > packet_s / 2 and self._may_shrink(samples, now):
            self._offset -= samples.size / SAMPLE_RATE
            self.stats.shrunk += 1
            self._fade_from = samples  # the next packet fades in from where this one began: no click at the cut
            return None
        if excess <= packet_s / 2:
            self._over_since = None
        if self._fade_from is not None:
            samples = _crossfade(self._fade_from, samples)
            self._fade_from = None
        return self._emit(samples, ts)

    def _take(self, ts: int) -> np.ndarray:
        """The samples of the packet at ``ts``: decoded, recovered from the next packet's FEC, or concealed."""
        for stale in [t for t in self._held if t < ts]:
            del self._held[stale]
        payload = self._held.pop(ts, None)
        if payload is not None:
            samples = self._decoder.decode(payload, _MAX_PACKET_SAMPLES)
            if samples.size:
                self._frame = samples.size
                self.stats.decoded += 1
                return samples
        following = self._held.get(ts + self._frame)
        if following is not None and self._decoder.has_fec(following):
            self.stats.recovered += 1
            return self._decoder.recover(following, self._frame)
        self.stats.concealed += 1
        return self._decoder.conceal(self._frame)

    def _may_stretch(self, packet_here: bool, now: float) -> bool:
        """Insert a concealed packet before this one? When it is missing anyway, when the sound before was quiet
        (nothing is cut), or when the delay has been too short for ``shrink_after_s``."""
        if self._under_since is None:
            self._under_since = now
        if not packet_here or self._last_quiet or now - self._under_since > self.options.shrink_after_s:
            self._under_since = None
            return True
        return False

    def _may_shrink(self, samples: np.ndarray, now: float) -> bool:
        """Leave this packet out? When it is quiet, or the delay has been too long for ``shrink_after_s``."""
        if self._over_since is None:
            self._over_since = now
        if _is_quiet(samples) or now - self._over_since > self.options.shrink_after_s:
            self._over_since = None
            return True
        return False

    def _emit(self, samples: np.ndarray, ts: int) -> av.AudioFrame:
        self._last_quiet = _is_quiet(samples)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.int16)[None, :], format="s16",
                                           layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = Fraction(1, SAMPLE_RATE)
        frame.pts = self._played
        assert self._origin is not None
        self._rtp_of.append((self._played, (self._origin + ts) % (1 << 32)))
        self._played += samples.size
        return frame

    def rtp_of(self, pts: int) -> int | None:
        """The sender's RTP timestamp of the frame returned with ``pts`` (None: not one of the recent frames)."""
        for played, rtp in reversed(self._rtp_of):
            if played == pts:
                return rtp
        return None

    def stop(self) -> None:
        super().stop()
        self._ended.set()
        self._watch.cancel()
        self._decoder.close()


def _crossfade(before: np.ndarray, after: np.ndarray, length: int = _FADE_SAMPLES) -> np.ndarray:
    """``after`` with its first ``length`` samples faded in from ``before``'s first ones (which continue the sound
    played so far): a packet left out leaves no step in the waveform."""
    n = min(length, before.size, after.size)
    if n == 0:
        return after
    weight = np.linspace(0.0, 1.0, n)
    out = after.astype(np.float64)
    out[:n] = before[:n] * (1.0 - weight) + out[:n] * weight
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def _is_quiet(samples: np.ndarray) -> bool:
    """Below about −40 dBFS: a packet left out or added there is not heard."""
    return not samples.size or float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) < _QUIET_RMS


async def _first(*waits: Any) -> None:
    """Wait until the first of these awaitables is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
