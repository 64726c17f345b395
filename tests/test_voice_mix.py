"""The room's voice mix (``realtime.audio.mixer``) on a clock the test moves: every voice's frame lands where it
was due, late and bursting writes are placed as documented, and the mix is what a speaker would play."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from realtime.audio.mixer import MixerOptions, VoiceMixer
from realtime.audio.opus import SAMPLE_RATE

OPTIONS = MixerOptions(tick_s=0.01, delay_s=0.02, max_ahead_s=0.1)
TICK = 480
FRAME = 1920  # 40 ms, as the voice's packets


@dataclass
class Recording:
    """An ``AudioSink`` that keeps what it was given."""

    latency_s: float = 0.005
    written: list[np.ndarray] = field(default_factory=list)
    closed: bool = False

    def write(self, samples: np.ndarray) -> None:
        self.written.append(samples.copy())

    def close(self) -> None:
        self.closed = True

    @property
    def sound(self) -> np.ndarray:
        return np.concatenate(self.written) if self.written else np.zeros(0, np.int16)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _mixer() -> tuple[VoiceMixer, Recording, Clock]:
    sink, clock = Recording(), Clock()
    mixer = VoiceMixer(sink, OPTIONS, clock=clock)
    mixer.started_at = clock.now  # driven by mix_due, no thread
    return mixer, sink, clock


def _advance(mixer: VoiceMixer, clock: Clock, seconds: float) -> None:
    clock.now += seconds
    mixer.mix_due()


def test_each_voice_lands_where_it_was_due_and_the_voices_add_up() -> None:
    mixer, sink, clock = _mixer()
    a, b = mixer.input("a"), mixer.input("b")
    for _ in range(5):  # A writes a frame of 1000s at each 40 ms, B a frame of 200s from 20 ms on
        a.write(np.full(FRAME, 1000, np.int16))
        _advance(mixer, clock, 0.02)
        b.write(np.full(FRAME, 200, np.int16))
        _advance(mixer, clock, 0.02)
    _advance(mixer, clock, 0.1)
    sound = sink.sound
    assert sound.size == mixer.mixed >= 6 * FRAME
    half = FRAME // 2
    assert np.all(sound[:half] == 1000)  # A alone until B's first frame
    assert np.all(sound[half:5 * FRAME] == 1200)  # both
    assert np.all(sound[5 * FRAME:5 * FRAME + half] == 200)  # B's last half frame alone
    assert np.all(sound[5 * FRAME + half:] == 0)
    assert a.counters.samples_mixed == 5 * FRAME and a.counters.late_writes == 0 and a.counters.trims == 0


def test_latency_says_when_a_write_leaves_the_output() -> None:
    mixer, sink, clock = _mixer()
    voice = mixer.input("a")
    _advance(mixer, clock, 0.105)
    voice.write(np.full(FRAME, 7, np.int16))
    # its first sample is at 105 ms: in the step [100, 110) ms, written 10 + 20 ms after that step's start
    assert voice.latency_s == pytest.approx(0.11 + 0.02 - 0.105 + sink.latency_s)
    clock.now += voice.latency_s - sink.latency_s - 1e-6
    mixer.mix_due()
    assert not np.any(sink.sound[int(0.105 * SAMPLE_RATE):])
    _advance(mixer, clock, 2e-6)
    assert sink.sound[int(0.105 * SAMPLE_RATE)] == 7


def test_behind_its_schedule_the_mix_takes_a_write_at_once() -> None:
    mixer, sink, clock = _mixer()
    voice = mixer.input("a")
    voice.write(np.full(FRAME, 6, np.int16))
    clock.now += 0.5  # the mix thread was held up: nothing mixed for half a second
    voice.write(np.full(FRAME, 7, np.int16))
    assert voice.latency_s == sink.latency_s  # its place is mixed as soon as the thread runs again
    mixer.mix_due()
    assert np.all(sink.sound[:FRAME] == 6) and np.all(sink.sound[FRAME:2 * FRAME] == 7) and mixer.late_ticks > 0


def test_a_write_later_than_its_place_starts_at_the_first_place_not_mixed() -> None:
    mixer, sink, clock = _mixer()
    voice = mixer.input("a")
    voice.write(np.full(FRAME, 5, np.int16))
    _advance(mixer, clock, 0.2)  # the next frame was due at 40 ms; the mix went on 200 ms
    mixed = mixer.mixed
    voice.write(np.full(FRAME, 9, np.int16))
    _advance(mixer, clock, 0.1)
    sound = sink.sound
    assert voice.counters.late_writes == 1
    assert np.all(sound[:FRAME] == 5) and np.all(sound[FRAME:mixed] == 0)
    assert np.all(sound[mixed:mixed + FRAME] == 9)  # whole, right after what was already written


def test_a_burst_restarts_at_the_clock_and_drops_what_it_queued_beyond() -> None:
    mixer, sink, clock = _mixer()
    voice = mixer.input("a")
    for k in range(6):  # six frames at once: 240 ms queued at one instant
        voice.write(np.full(FRAME, k + 1, np.int16))
    assert voice.counters.trims >= 1
    _advance(mixer, clock, 0.5)
    sound = sink.sound
    assert np.count_nonzero(sound) <= OPTIONS.max_ahead_s * SAMPLE_RATE + FRAME  # bounded, not 240 ms
    assert sound[np.flatnonzero(sound)[-1]] == 6  # the newest frame plays


def test_a_muted_or_closed_voice_is_out_of_the_mix() -> None:
    mixer, sink, clock = _mixer()
    a, b = mixer.input("a"), mixer.input("b")
    a.write(np.full(FRAME, 3, np.int16))
    b.write(np.full(FRAME, 4, np.int16))
    a.mute(True)
    b.close()
    _advance(mixer, clock, 0.2)
    assert not np.any(sink.sound) and mixer.inputs == [a]
    assert a.counters.samples == FRAME and a.counters.samples_mixed == 0


def test_the_thread_writes_silence_in_real_time_and_closes_the_sink() -> None:
    sink = Recording()
    mixer = VoiceMixer(sink, OPTIONS)
    wrote = threading.Event()
    original = sink.write

    def write(samples: np.ndarray) -> None:
        original(samples)
        if len(sink.written) >= 3:
            wrote.set()

    sink.write = write  # type: ignore[method-assign]
    mixer.start()
    assert wrote.wait(30.0)
    mixer.close()
    assert sink.closed and sink.sound.size == mixer.mixed and not np.any(sink.sound)
