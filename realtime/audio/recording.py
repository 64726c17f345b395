"""Sound for the demo: a synthetic voice to send, and the received voice muxed under the received video.

The project ships no speech recordings it does not own, so the demo speaks a synthetic voice:
vowel-like harmonics on a wandering pitch, cut into syllables and pauses, so that Opus codes it as
speech (its bitrate and packet rate are those of a voice, not of a tone) and a listener hears each
syllable's onset next to the face. ``mux_audio`` puts a WAV under an mp4 (ffmpeg from
``imageio-ffmpeg``), shifted so that both start where they started in the call.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np

from realtime.audio.opus import SAMPLE_RATE
from realtime.errors import CallError


def synthetic_voice(path: Path, seconds: float, seed: int = 0) -> Path:
    """Write ``seconds`` of a speech-like 48 kHz mono 16-bit WAV to ``path``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pitch = 140.0 + 25.0 * np.sin(2 * np.pi * 0.7 * t) + 10.0 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    formant = 1.0 + 0.5 * np.sin(2 * np.pi * 2.3 * t)  # a vowel that keeps changing
    voice = sum(np.sin(k * phase) * np.exp(-k / (3.0 * formant)) / k for k in range(1, 16))
    envelope = np.zeros(n)
    start = 0
    while start < n:  # syllables of 120–260 ms, a pause of 60–400 ms after each
        length = int(rng.uniform(0.12, 0.26) * SAMPLE_RATE)
        envelope[start:start + length] = np.hanning(length)[: max(0, min(length, n - start))]
        start += length + int(rng.uniform(0.06, 0.4) * SAMPLE_RATE)
    noise = rng.normal(0.0, 0.02, n)
    signal = (voice * envelope + noise * envelope) * 0.5
    samples = np.clip(signal / max(np.abs(signal).max(), 1e-9) * 0.6 * 32767, -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return path


def mux_audio(video: Path, audio: Path, audio_starts_s: float, output: Path) -> Path:
    """``video`` with ``audio`` under it (AAC), the audio starting ``audio_starts_s`` after the video's first frame
    (negative: before it, the part before the video cut off); the video stream is copied as it is."""
    import imageio_ffmpeg

    shift = ["-itsoffset", f"{audio_starts_s:.3f}"] if audio_starts_s >= 0 else ["-ss", f"{-audio_starts_s:.3f}"]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(video), *shift,
               "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "64k",
               str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise CallError(f"could not mux the received voice into {output}: {result.stderr.strip()[-300:]}")
    return output
