"""The call's voice: our Opus at a chosen bitrate, file and microphone sources, playout, the sender-report clock."""

from __future__ import annotations

import asyncio
import builtins
import logging
import sys
import threading
import time
import types
import wave
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from realtime.audio.devices import AudioDeviceUnavailable, MicrophoneSource, SpeakerSink
from realtime.audio.opus import OPUS_LOOKAHEAD_SAMPLES, SAMPLE_RATE, OpusEncoder, OpusOptions
from realtime.audio.pcm import FileSource, Framer
from realtime.audio.playout import AudioPlayout, DiscardSink, WavSink, open_audio_sink
from realtime.audio.sync import NTP_UNIX_OFFSET_S, SenderClock, rtp_difference
from realtime.audio.voice import OpusTrack, VoiceOptions, open_voice
from realtime.signaling import InProcessSignaling, answer, offer
from realtime.transport import LOOPBACK, TransportOptions, create_channels, create_peer_connection
from tests import tones

TONE_HZ = 660.0
TONE_S = 3.0


def write_tone(path: Path, rate: int = 44_100, channels: int = 2, seconds: float = TONE_S) -> Path:
    """A sine tone as a 16-bit WAV at another rate and channel count than the call's (to be converted)."""
    return tones.write_tone(path, TONE_HZ, seconds, rate=rate, channels=channels, amplitude=0.4 * 32767)


def peak_hz(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


async def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# ---- encoder and sources ----------------------------------------------------------------------

def test_framer_cuts_any_chunks_into_exact_frames_and_pads_the_last() -> None:
    framer = Framer(4)
    out = framer.push(np.arange(3, dtype=np.int16)) + framer.push(np.arange(3, 10, dtype=np.int16))
    assert [f.tolist() for f in out] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    last = framer.flush()
    assert last is not None and last.tolist() == [8, 9, 0, 0] and framer.flush() is None


def test_the_encoder_stamps_packets_on_the_48k_clock_minus_its_lookahead() -> None:
    options = OpusOptions(kbps=16, frame_ms=20)
    encoder = OpusEncoder(options)
    packets = [p for i in range(3) for p in encoder.encode(np.zeros(options.frame_samples, np.int16),
                                                           i * options.frame_samples)]
    assert [p.pts for p in packets] == [i * 960 - OPUS_LOOKAHEAD_SAMPLES for i in range(3)]
    assert all(p.time_base == Fraction(1, SAMPLE_RATE) for p in packets)
    with pytest.raises(ValueError):
        OpusOptions(kbps=2)
    with pytest.raises(ValueError):
        OpusOptions(frame_ms=25)


def test_a_file_is_converted_to_48k_mono(tmp_path: Path) -> None:
    tone = write_tone(tmp_path / "tone.wav", rate=44_100, channels=2, seconds=1.0)

    async def read_all() -> list[np.ndarray]:
        source = FileSource(tone, 960, realtime=False)
        frames = []
        while (frame := await source.read()) is not None:
            frames.append(frame)
        source.close()
        return frames

    frames = asyncio.run(read_all())
    assert all(f.dtype == np.int16 and f.shape == (960,) for f in frames)
    assert len(frames) == 50  # 48 000 samples, the last frame padded
    assert abs(peak_hz(np.concatenate(frames)) - TONE_HZ) < 3


def test_an_unreadable_file_is_the_users_mistake(tmp_path: Path) -> None:
    from realtime.errors import CallError

    (tmp_path / "noise.wav").write_bytes(b"not a sound file at all")
    with pytest.raises(CallError, match="cannot read the audio file"):
        open_voice(VoiceOptions(file=tmp_path / "noise.wav"))


# ---- devices, without hardware ------------------------------------------------------------------

class _PortAudioError(Exception):
    pass


def fake_sounddevice(input_devices: bool = True, blocks: int = 0) -> types.ModuleType:
    """A stand-in for ``sounddevice``: devices or none; an input stream that delivers ``blocks`` blocks of 480."""
    module = types.ModuleType("sounddevice")
    module.PortAudioError = _PortAudioError  # type: ignore[attr-defined]

    def query_devices(device: Any = None, kind: str | None = None) -> dict[str, Any]:
        if not input_devices:
            raise _PortAudioError("Error querying device -1")
        return {"name": "fake", "max_input_channels": 1}

    class InputStream:
        def __init__(self, callback: Callable[..., None], **kwargs: Any) -> None:
            self.callback = callback
            self.thread = threading.Thread(target=self._run)

        def _run(self) -> None:  # PortAudio calls back on its own thread, in blocks of its own size
            for i in range(blocks):
                self.callback(np.full((480, 1), i, np.int16), 480, None, None)

        def start(self) -> None:
            self.thread.start()

        def stop(self) -> None:
            self.thread.join(5)

        def close(self) -> None:
            pass

    module.query_devices = query_devices  # type: ignore[attr-defined]
    module.InputStream = InputStream  # type: ignore[attr-defined]
    return module


def test_no_sounddevice_package_means_a_silent_call_and_one_line(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # `import sounddevice` raises ImportError

    async def scenario() -> OpusTrack | None:
        return open_voice(VoiceOptions())

    with caplog.at_level(logging.WARNING, logger="realtime.audio"):
        assert asyncio.run(scenario()) is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert "pip install 'adasr[audio]'" in line and "without voice" in line and "\n" not in line
    with pytest.raises(AudioDeviceUnavailable, match="audio"):
        SpeakerSink()


def test_no_portaudio_library_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def import_without_portaudio(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")  # what sounddevice raises where libportaudio is missing
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", import_without_portaudio)
    with pytest.raises(AudioDeviceUnavailable, match="PortAudio library not found.*apt install libportaudio2"):
        SpeakerSink()


def test_no_speaker_means_a_drained_silent_track_and_one_line(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with caplog.at_level(logging.WARNING, logger="realtime.audio"):
        sink = open_audio_sink(speaker=True)
    (line,) = [r.getMessage() for r in caplog.records]
    assert isinstance(sink, DiscardSink) and "without sound" in line
    stats = asyncio.run(AudioPlayout(_FrameTrack([_stereo_frame(0, 1), _stereo_frame(960, 2)]), sink).run())  # type: ignore[arg-type]
    assert stats.frames == 2  # drained all the same


def test_no_microphone_means_a_silent_call_and_one_line(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(input_devices=False))

    async def scenario() -> OpusTrack | None:
        return open_voice(VoiceOptions(device="USB headset"))

    with caplog.at_level(logging.WARNING, logger="realtime.audio"):
        assert asyncio.run(scenario()) is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("no microphone 'USB headset' (Error querying device -1;") and "without voice" in line


def test_the_microphone_delivers_whole_frames_from_its_own_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(blocks=6))

    async def scenario() -> list[np.ndarray]:
        source = MicrophoneSource(960)
        frames = [await source.read() for _ in range(3)]
        source.stall_timeout_s = 0.05
        assert await source.read() is None  # nothing more: the voice ends instead of waiting forever
        source.close()
        return [f for f in frames if f is not None]

    frames = asyncio.run(scenario())
    assert [f.shape for f in frames] == [(960,)] * 3
    assert frames[1][:480].tolist() == [2] * 480 and frames[1][480:].tolist() == [3] * 480


# ---- the sender-report clock ---------------------------------------------------------------------

def _ntp(unix_s: float) -> int:
    return int((unix_s + NTP_UNIX_OFFSET_S) * (1 << 32))


def _fake_receiver(origin: int) -> Any:
    async def handle(packet: Any) -> None:
        pass

    mapper = types.SimpleNamespace(_origin=origin)
    return types.SimpleNamespace(_handle_rtcp_packet=handle, _RTCRtpReceiver__timestamp_mapper=mapper)


def test_sender_reports_map_timestamps_to_the_senders_clock_across_a_wrap() -> None:
    assert rtp_difference(5, (1 << 32) - 5) == 10 and rtp_difference((1 << 32) - 5, 5) == -10
    origin = (1 << 32) - 48_000  # the timestamps wrap one second into the call
    clock = SenderClock(_fake_receiver(origin))
    assert clock.sent_at(0) is None  # no report yet
    t0 = 1_700_000_000.0
    clock.note(_ntp(t0 + 0.5), (origin + 24_000) % (1 << 32))
    clock.note(_ntp(t0 + 2.0 + 0.030), (origin + 96_000) % (1 << 32))  # a report sent 30 ms late
    for pts, expected in ((0, t0), (48_000, t0 + 1.0), (144_000, t0 + 3.0)):
        assert clock.sent_at(pts) == pytest.approx(expected, abs=1e-4)  # the on-time report is the reference
    assert clock.captured_at(48_000, 960) == pytest.approx(t0 + 1.0 - (960 + OPUS_LOOKAHEAD_SAMPLES) / SAMPLE_RATE)


# ---- playout ------------------------------------------------------------------------------------

class _FrameTrack:
    """A remote track stand-in: hands out the given frames, then ends."""

    kind = "audio"

    def __init__(self, frames: list[av.AudioFrame]) -> None:
        self.frames = frames

    async def recv(self) -> av.AudioFrame:
        from aiortc.mediastreams import MediaStreamError

        if not self.frames:
            raise MediaStreamError
        return self.frames.pop(0)


def _stereo_frame(pts: int, value: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.full((1, 2 * 960), value, np.int16), format="s16", layout="stereo")
    frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, pts, Fraction(1, SAMPLE_RATE)
    return frame


def test_playout_fills_gaps_with_silence_and_drops_late_frames(tmp_path: Path) -> None:
    frames = [_stereo_frame(0, 100), _stereo_frame(960, 200), _stereo_frame(2880, 300),  # one frame lost
              _stereo_frame(960, 999),  # late: its time was played
              _stereo_frame(2880 + 960 + 10 * SAMPLE_RATE, 400)]  # a 10 s jump: resync, no 10 s of silence
    playout = AudioPlayout(_FrameTrack(frames), WavSink(tmp_path / "out.wav"))  # type: ignore[arg-type]
    stats = asyncio.run(playout.run())
    with wave.open(str(tmp_path / "out.wav")) as wav:
        written = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert (stats.frames, stats.gap_samples, stats.late_frames, stats.resyncs) == (4, 960, 1, 1)
    assert written.size == stats.samples == 5 * 960
    assert written[::960].tolist() == [100, 200, 0, 300, 400]


# ---- a loopback call with voice -------------------------------------------------------------------

def test_a_loopback_call_carries_the_tone_at_the_target_bitrate(tmp_path: Path) -> None:
    tone = write_tone(tmp_path / "tone.wav")
    received = tmp_path / "received.wav"
    kbps = 16.0

    async def scenario() -> dict[str, Any]:
        transport = TransportOptions(ice_hosts=LOOPBACK, connect_timeout_s=30)
        pc_s, pc_r = create_peer_connection(transport), create_peer_connection(transport)
        track = open_voice(VoiceOptions(file=tone, opus=OpusOptions(kbps=kbps, frame_ms=20)))
        assert track is not None
        captured: list[float] = []  # sender truth: wall clock of each frame's release
        read = track.source.read

        async def timed_read() -> np.ndarray | None:
            frame = await read()
            captured.append(time.time())
            return frame

        track.source.read = timed_read  # type: ignore[method-assign]
        ended = asyncio.Event()
        track.on("ended", ended.set)
        pc_s.addTrack(track)
        create_channels(pc_s)  # as in a call: audio and data bundled on one transport
        playouts: list[AudioPlayout] = []
        tasks: list[asyncio.Task[Any]] = []

        @pc_r.on("track")
        def on_track(remote: Any) -> None:
            receiver = next(t.receiver for t in pc_r.getTransceivers() if t.receiver.track is remote)
            playout = AudioPlayout(remote, WavSink(received), SenderClock(receiver))
            playouts.append(playout)
            tasks.append(asyncio.ensure_future(playout.run()))

        side_a, side_b = InProcessSignaling.pair()
        try:
            await asyncio.gather(offer(pc_s, side_a, transport), answer(pc_r, side_b, transport))
            await asyncio.wait_for(ended.wait(), 30)
            (playout,) = playouts
            sent_samples = track.frames_encoded * 960
            # aiortc's jitter buffer keeps the last few packets until later ones push them out
            await wait_for(lambda: playout.stats.samples >= sent_samples - 6 * 960, 20, "the voice to arrive")
            stats = await pc_s.getStats()
            (outbound,) = [s for s in stats.values() if s.type == "outbound-rtp" and s.kind == "audio"]
            clock = playout.clock
            assert clock is not None and clock.reports >= 1
            first_sender_pts = -OPUS_LOOKAHEAD_SAMPLES  # the receiver's pts count from the first packet's
            capture0 = captured[0] - 960 / SAMPLE_RATE  # frame 0 is released when its last sample is in
            errors_ms = [((clock.captured_at(p, 960) or 0.0) - (capture0 + (p + first_sender_pts) / SAMPLE_RATE)) * 1e3
                         for p in range(0, sent_samples - 6 * 960, 9600)]
        finally:
            await pc_s.close()
            await pc_r.close()
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
        return {"bytes": outbound.bytesSent, "packets": outbound.packetsSent, "payload": track.payload_bytes,
                "frames": track.frames_encoded, "stats": playout.stats, "errors_ms": errors_ms}

    result = asyncio.run(scenario())
    assert result["frames"] == 150 and result["packets"] == 150  # 3 s in 20 ms packets, each sent once
    assert result["bytes"] == result["payload"]  # aiortc only packetised our packets
    payload_kbps = result["bytes"] * 8 / (result["packets"] * 0.020) / 1000
    assert payload_kbps <= 1.3 * kbps
    with wave.open(str(received)) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (SAMPLE_RATE, 1)
        voice = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert abs(voice.size / SAMPLE_RATE - TONE_S) < 0.15
    assert abs(peak_hz(voice) - TONE_HZ) < 3
    assert result["stats"].late_frames == 0 and result["stats"].resyncs == 0
    # the sender reports place the received sound on the sender's clock (measured: a few ms; bound: gross errors)
    assert max(abs(e) for e in result["errors_ms"]) < 100, result["errors_ms"]
    print(f"audio payload {payload_kbps:.2f} kbps; capture-time error {np.median(result['errors_ms']):.1f} ms median; "
          f"delay p50 {np.median(list(result['stats'].delay_ms)):.1f} ms")
