"""Issue #25: the adaptive jitter buffer (delay follows the measured jitter), Opus FEC and concealment."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.audio.adaptive_voice import AdaptiveVoice
from realtime.audio.jitter_target import JitterOptions, JitterTarget
from realtime.audio.opus import OpusEncoder, OpusOptions
from realtime.audio.opus_decoder import OpusDecoder

FRAME = 1920  # 40 ms at 48 kHz
PACKET_S = FRAME / 48_000


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated signal: what Opus's speech mode (and its FEC) works on."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 48_000)) / 48_000
    pitch = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / 48_000) / k for k in range(1, 6))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    return np.clip(voiced * envelope * 6000 + rng.normal(0, 200, t.size), -32768, 32767).astype(np.int16)


def _packets(signal: np.ndarray, kbps: float = 16.0) -> list[tuple[int, bytes]]:
    encoder = OpusEncoder(OpusOptions(kbps=kbps, frame_ms=40))  # 16 kbps: libopus has room for the FEC copy
    out = []
    for start in range(0, signal.size - FRAME + 1, FRAME):
        for packet in encoder.encode(signal[start:start + FRAME], start):
            out.append((start, bytes(packet)))
    return out


def test_the_target_is_a_jitter_percentile_plus_a_packet_and_falls_when_the_network_calms() -> None:
    target = JitterTarget(JitterOptions(percentile=95, window=100))
    for k in range(100):
        target.arrived(k * FRAME, 10.0 + k * PACKET_S)  # a perfect network
    assert target.target_s(PACKET_S) == pytest.approx(PACKET_S, abs=1e-6)
    rng = random.Random(1)
    for k in range(100, 200):
        target.arrived(k * FRAME, 10.0 + k * PACKET_S + rng.uniform(0.0, 0.030))  # 0-30 ms of jitter
    assert 0.025 <= target.target_s(PACKET_S) - PACKET_S <= 0.030
    for k in range(200, 300):
        target.arrived(k * FRAME, 10.0 + k * PACKET_S + 0.015)  # calm again (a slower path, no jitter)
    assert target.target_s(PACKET_S) == pytest.approx(PACKET_S, abs=1e-6)


def test_a_lost_packet_is_recovered_from_the_next_ones_fec_better_than_concealed() -> None:
    signal = _speech_like(3.0)
    packets = _packets(signal)
    lost = 40
    recovered_decoder, concealed_decoder = OpusDecoder(), OpusDecoder()
    for _, payload in packets[:lost]:
        for decoder in (recovered_decoder, concealed_decoder):
            decoder.decode(payload, 5760)
    recovered = recovered_decoder.recover(packets[lost + 1][1], FRAME)
    concealed = concealed_decoder.conceal(FRAME)
    assert recovered.size == concealed.size == FRAME
    assert recovered_decoder.has_fec(packets[lost + 1][1])
    assert not OpusDecoder().has_fec(_packets(signal[:48_000], kbps=12.0)[10][1])  # no room for a copy at 12 kbps
    assert not np.array_equal(recovered, concealed)  # the next packet's FEC copy was used, not a guess
    start = packets[lost][0] - 312  # the encoder's lookahead: where the lost packet's sound sits in the signal
    truth_rms = float(np.sqrt(np.mean(signal[start:start + FRAME].astype(np.float64) ** 2)))
    recovered_rms = float(np.sqrt(np.mean(recovered.astype(np.float64) ** 2)))
    assert 0.5 * truth_rms < recovered_rms < 2.0 * truth_rms  # the lost syllable's sound, not silence nor a burst


class _Silent(MediaStreamTrack):
    """aiortc's remote track as the adaptive buffer sees it: never a frame; ends when the test stops it."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.closed = asyncio.Event()

    async def recv(self) -> object:
        await self.closed.wait()
        raise MediaStreamError


def test_the_playout_conceals_losses_keeps_its_timeline_and_a_small_delay_under_jitter() -> None:
    """Packets sent in real time with 0-30 ms of jitter and 5 % loss: every turn is played (decoded, recovered or
    concealed), the frames are contiguous, and a packet plays about the jitter percentile plus a packet after
    it was sent."""
    packets = _packets(_speech_like(4.0, seed=2))
    rng = random.Random(3)
    lost = {index for index in range(5, len(packets)) if rng.random() < 0.05}

    async def scenario() -> tuple[AdaptiveVoice, list[int], list[float]]:
        remote = _Silent()
        voice = AdaptiveVoice(remote)
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent_at = {}
        for index, (ts, payload) in enumerate(packets):
            sent_at[ts] = start + index * PACKET_S
            if index not in lost:  # stamped with the planned arrival: a busy loop's lateness is not the network's
                at = start + index * PACKET_S + rng.uniform(0.0, 0.030)
                loop.call_at(at, lambda ts=ts, payload=payload, at=at: voice.arrived(ts, payload, at))
        sizes: list[int] = []
        delays: list[float] = []
        while len(sizes) < len(packets) - 10:
            frame = await asyncio.wait_for(voice.recv(), 5.0)
            assert frame.pts == sum(sizes)  # contiguous: a sink plays them back to back
            sizes.append(frame.samples)
            rtp = voice.rtp_of(frame.pts)
            assert rtp is not None
            if rtp in sent_at:
                delays.append(loop.time() - sent_at[rtp])
        remote.closed.set()
        voice.stop()
        return voice, sizes, delays

    voice, sizes, delays = asyncio.run(scenario())
    stats = voice.stats
    missing = stats.recovered + stats.concealed
    assert missing >= len([i for i in lost if i < len(sizes)]) - 1 and stats.recovered > 0
    assert stats.late <= 0.1 * stats.packets  # the delay grew to cover the jitter
    # about a packet plus the jitter's 95th percentile (≤ 30 ms), plus what a busy machine adds
    assert float(np.median(delays)) < PACKET_S + 0.030 + 0.060
