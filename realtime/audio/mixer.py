"""Several voices, one speaker: each remote voice's playout writes into its own input, one thread mixes them.

A room plays every other participant's voice, each through its own adaptive jitter buffer
(``realtime.audio.reception.RemoteVoice``), whose ``AudioPlayout`` writes each frame when it is due.
A speaker (or the WAV file that stands for it) takes one stream, so ``VoiceMixer`` gives each voice
a ``MixerInput`` (an ``AudioSink``) and mixes them on a thread of its own, every ``tick_s``, into the
one output sink: silence where nobody speaks, the sum of the voices (clipped) where several do.

The mix runs on the local clock: the output sample at ``p`` is mixed ``tick_s + delay_s`` after its
instant (``start + p / rate``), so a write that comes up to ``delay_s`` late still plays whole. Each
input places its frames one after the other (a frame's place is the instant it was due, as the
playout writes it then); a frame that comes later than its place was mixed starts at the first place
not mixed yet (``late_writes``), and an input that runs more than ``max_ahead_s`` ahead of the clock
(a burst after a stall) restarts at the clock, what it had queued beyond dropped (``trims``): a
voice's delay in the mix stays what its jitter buffer made it, plus at most ``tick_s + delay_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from realtime.audio.opus import SAMPLE_RATE
from realtime.audio.playout import AudioSink

logger = logging.getLogger(__name__)

#: Name of the mixer's thread.
MIXER_THREAD = "adasr-voice-mix"


@dataclass(frozen=True)
class MixerOptions:
    """How the voices are mixed."""

    tick_s: float = 0.01
    """Sound mixed and written per step."""
    delay_s: float = 0.02
    """How late a voice's frame may be written and still play whole (a busy machine's thread scheduling)."""
    max_ahead_s: float = 0.1
    """How far past the clock an input may have sound queued; beyond it, it restarts at the clock."""

    def __post_init__(self) -> None:
        if not self.tick_s > 0 or self.delay_s < 0 or not self.max_ahead_s > 0:
            raise ValueError("tick_s and max_ahead_s must be > 0, delay_s ≥ 0")


@dataclass
class InputCounters:
    """What one voice's input did."""

    samples: int = 0
    """Samples written to it."""
    samples_mixed: int = 0
    """Of those, samples that went into the mix."""
    late_writes: int = 0
    """Writes that came after their place had been mixed: moved to the first place not mixed yet."""
    trims: int = 0
    """Times it ran too far ahead of the clock and restarted at it."""


class MixerInput:
    """One voice into the mix (an ``AudioSink``: its playout writes here). Thread-safe through the mixer's lock."""

    def __init__(self, mixer: VoiceMixer, name: str) -> None:
        self.mixer = mixer
        self.name = name
        self.counters = InputCounters()
        self.latency_s = 0.0
        """From the last ``write``'s return to its first sample leaving the output (the mix and the output sink's
        own latency): the playout's delay (mouth-to-ear) includes it."""
        self.muted = False
        """Left out of the mix (what it writes is dropped)."""
        self._chunks: list[tuple[int, np.ndarray]] = []  # (output position of the first sample, samples), in order
        self._next: int | None = None  # output position where the next write goes

    def write(self, samples: np.ndarray) -> None:
        mixer = self.mixer
        with mixer.lock:
            now = mixer.position(mixer.clock())
            place = self._next if self._next is not None else now
            if place < mixer.mixed:
                if self._next is not None:
                    self.counters.late_writes += 1
                place = mixer.mixed
            elif place > now + mixer.max_ahead:
                self.counters.trims += 1
                place = max(now, mixer.mixed)
                self._chunks = [(p, s[:max(place - p, 0)]) for p, s in self._chunks if p < place]
            self.counters.samples += samples.size
            if not self.muted and samples.size:
                self._chunks.append((place, np.asarray(samples, np.int16)))
            self._next = place + samples.size
            # a mix running behind its schedule writes this place as soon as it catches up
            self.latency_s = max(mixer.mixed_at(place) - mixer.clock(), 0.0) + mixer.output_latency_s

    def mute(self, muted: bool) -> None:
        """Leave the voice out of the mix (what it queued is dropped), or take it back."""
        with self.mixer.lock:
            self.muted = muted
            if muted:
                self._chunks = []

    def take(self, start: int, end: int, into: np.ndarray) -> None:
        """Add its sound at output positions [start, end) to ``into``; forget what lies before ``end``. Under the
        mixer's lock."""
        kept = []
        for place, samples in self._chunks:
            last = place + samples.size
            lo, hi = max(place, start), min(last, end)
            if hi > lo:
                into[lo - start:hi - start] += samples[lo - place:hi - place]
                self.counters.samples_mixed += hi - lo
            if last > end:
                kept.append((place, samples))
        self._chunks = kept

    def close(self) -> None:
        """The voice ended: out of the mix (what it queued is dropped)."""
        self.mixer.remove(self)


class VoiceMixer:
    """Mixes its inputs into ``sink`` on its own thread, from ``start`` until ``close`` (which closes the sink)."""

    def __init__(self, sink: AudioSink, options: MixerOptions = MixerOptions(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink
        self.options = options
        self.clock = clock
        self.lock = threading.Lock()
        self.inputs: list[MixerInput] = []
        self.tick = max(int(round(options.tick_s * SAMPLE_RATE)), 1)
        self.max_ahead = int(options.max_ahead_s * SAMPLE_RATE)
        self.output_latency_s = float(sink.latency_s)
        self.started_at: float | None = None
        """Local clock at output position 0 (``start``)."""
        self.mixed = 0
        """Output positions mixed and written so far."""
        self.late_ticks = 0
        """Steps mixed more than a step after their time (the thread was held up)."""
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=MIXER_THREAD, daemon=True)

    def input(self, name: str) -> MixerInput:
        """A new voice into the mix."""
        voice = MixerInput(self, name)
        with self.lock:
            self.inputs.append(voice)
        return voice

    def remove(self, voice: MixerInput) -> None:
        with self.lock:
            if voice in self.inputs:
                self.inputs.remove(voice)

    def position(self, at: float) -> int:
        """Output position of local clock instant ``at`` (0 before ``start``)."""
        return 0 if self.started_at is None else round((at - self.started_at) * SAMPLE_RATE)

    def mixed_at(self, place: int) -> float:
        """Local clock instant when output position ``place`` is mixed and written to the sink."""
        started = self.started_at if self.started_at is not None else self.clock()
        return started + ((place // self.tick) + 1) * self.tick / SAMPLE_RATE + self.options.delay_s

    def start(self) -> None:
        """Output position 0 is now; the thread starts mixing."""
        if self.started_at is None:
            self.started_at = self.clock()
            self._thread.start()

    def mix_due(self) -> int:
        """Mix and write every step whose time has come; the number of steps written. The thread calls this; a
        test may call it instead of ``start``ing the thread (after setting ``started_at``)."""
        steps = 0
        while not self._closed.is_set() and self.clock() >= self.mixed_at(self.mixed):
            with self.lock:
                start, end = self.mixed, self.mixed + self.tick
                total = np.zeros(self.tick, np.int32)
                for voice in self.inputs:
                    voice.take(start, end, total)
                self.mixed = end
            if self.clock() - self.mixed_at(start) > self.options.tick_s:
                self.late_ticks += 1
            self.sink.write(np.clip(total, -32768, 32767).astype(np.int16))
            steps += 1
        return steps

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                self.mix_due()
                self._closed.wait(max(self.mixed_at(self.mixed) - self.clock(), 0.0))
        except Exception:
            logger.exception("the voice mix failed: the room goes on silent")
        finally:
            self.sink.close()

    def close(self) -> None:
        """Stop mixing, then close the sink (waits for the thread: a speaker's write returns within a step)."""
        self._closed.set()
        if self._thread.ident is not None:
            self._thread.join()
        else:
            self.sink.close()
